//! The conformance suite every [`StreamingRuntime`] implementation runs: what the streaming
//! server relies on, checked through the trait alone. The fixture says what the
//! implementation can run and reach (a shell in the target container, a port that echoes,
//! the container's log so far).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::{ContainerRef, ExecStdio, LogOptions, RuntimeError, StreamingRuntime};

/// How long any one check may take before it counts as a hang.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Fixture {
    /// A running container whose image has `sh`.
    pub target: ContainerRef,
    /// A port in the target's pod that echoes what it receives, if the implementation
    /// can forward ports.
    pub echo_port: Option<u16>,
    /// The target's log so far (ending in a newline), if the implementation keeps logs.
    pub log: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("conformance check {check:?} failed: {what}")]
pub struct Failure {
    pub check: &'static str,
    pub what: String,
}

fn fail(check: &'static str, what: impl Into<String>) -> Failure {
    Failure {
        check,
        what: what.into(),
    }
}

async fn bounded<T>(
    check: &'static str,
    f: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    tokio::time::timeout(CHECK_TIMEOUT, f)
        .await
        .map_err(|_| fail(check, format!("no result within {CHECK_TIMEOUT:?}")))
}

/// Runs `command` with captured output; the output readers must reach EOF once exec
/// returned (the runtime dropped its writers).
async fn exec_capture(
    rt: &dyn StreamingRuntime,
    target: &ContainerRef,
    command: &[&str],
    stdin: Option<&[u8]>,
) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError> {
    let (out_w, mut out_r) = tokio::io::duplex(64 * 1024);
    let (err_w, mut err_r) = tokio::io::duplex(64 * 1024);
    let out = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = out_r.read_to_end(&mut b).await;
        b
    });
    let err = tokio::spawn(async move {
        let mut b = Vec::new();
        let _ = err_r.read_to_end(&mut b).await;
        b
    });
    let stdin_r = match stdin {
        Some(data) => {
            let (mut w, r) = tokio::io::duplex(64 * 1024);
            let data = data.to_vec();
            tokio::spawn(async move {
                let _ = w.write_all(&data).await;
            });
            Some(Box::pin(r) as crate::runtime::Reader)
        }
        None => None,
    };
    let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    let code = rt
        .exec(
            target,
            &command,
            false,
            ExecStdio {
                stdin: stdin_r,
                stdout: Some(Box::pin(out_w)),
                stderr: Some(Box::pin(err_w)),
                resize: None,
            },
        )
        .await?;
    Ok((
        code,
        out.await.unwrap_or_default(),
        err.await.unwrap_or_default(),
    ))
}

pub async fn run(rt: &dyn StreamingRuntime, f: &Fixture) -> Result<(), Failure> {
    let check = "exec: exit code, stdout and stderr apart";
    let (code, out, err) = bounded(
        check,
        exec_capture(
            rt,
            &f.target,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            None,
        ),
    )
    .await?
    .map_err(|e| fail(check, e.full_message()))?;
    if (code, out.as_slice(), err.as_slice()) != (3, b"out\n".as_slice(), b"err\n".as_slice()) {
        return Err(fail(
            check,
            format!(
                "got exit {code}, stdout {:?}, stderr {:?}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            ),
        ));
    }

    let check = "exec: stdin reaches the process and its EOF ends it";
    let (code, out, _) = bounded(
        check,
        exec_capture(rt, &f.target, &["cat"], Some(b"hello\n")),
    )
    .await?
    .map_err(|e| fail(check, e.full_message()))?;
    if (code, out.as_slice()) != (0, b"hello\n".as_slice()) {
        return Err(fail(
            check,
            format!(
                "got exit {code}, stdout {:?}",
                String::from_utf8_lossy(&out)
            ),
        ));
    }

    let check = "exec: an unknown container is NotFound";
    let missing = ContainerRef {
        container: "skiff-conformance-missing".to_string(),
        ..f.target.clone()
    };
    match bounded(check, exec_capture(rt, &missing, &["true"], None)).await? {
        Err(RuntimeError::NotFound { .. }) => {}
        other => return Err(fail(check, format!("got {other:?}"))),
    }

    if let Some(log) = &f.log {
        let check = "logs: the whole log, then its last line with tail_lines";
        let read = |opts: LogOptions| async move {
            let mut r = rt.logs(&f.target, &opts).await?;
            let mut b = Vec::new();
            r.read_to_end(&mut b)
                .await
                .map_err(|e| RuntimeError::Internal {
                    message: "reading the log".into(),
                    source: Some(Box::new(e)),
                })?;
            Ok::<_, RuntimeError>(String::from_utf8_lossy(&b).into_owned())
        };
        let all = bounded(check, read(LogOptions::default()))
            .await?
            .map_err(|e| fail(check, e.full_message()))?;
        if &all != log {
            return Err(fail(check, format!("log is {all:?}, want {log:?}")));
        }
        let last = log
            .lines()
            .last()
            .map(|l| format!("{l}\n"))
            .unwrap_or_default();
        let tail = bounded(
            check,
            read(LogOptions {
                tail_lines: Some(1),
                ..LogOptions::default()
            }),
        )
        .await?
        .map_err(|e| fail(check, e.full_message()))?;
        if tail != last {
            return Err(fail(check, format!("tail is {tail:?}, want {last:?}")));
        }
    }

    if let Some(port) = f.echo_port {
        let check = "port_forward: a round trip through the pod's port";
        let echoed = bounded(check, async {
            let mut c = rt
                .port_forward(&f.target.namespace, &f.target.pod, port)
                .await?;
            let io = |e: std::io::Error| RuntimeError::Internal {
                message: "using the forwarded connection".into(),
                source: Some(Box::new(e)),
            };
            c.write_all(b"ping").await.map_err(io)?;
            c.shutdown().await.map_err(io)?;
            let mut b = Vec::new();
            c.read_to_end(&mut b).await.map_err(io)?;
            Ok::<_, RuntimeError>(b)
        })
        .await?
        .map_err(|e| fail(check, e.full_message()))?;
        if echoed != b"ping" {
            return Err(fail(check, format!("echoed {echoed:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Duplex, LogStream};

    /// Claims success without running anything.
    struct Liar;

    #[async_trait::async_trait]
    impl StreamingRuntime for Liar {
        async fn exec(
            &self,
            _: &ContainerRef,
            _: &[String],
            _: bool,
            _: ExecStdio,
        ) -> Result<i32, RuntimeError> {
            Ok(0)
        }
        async fn attach(
            &self,
            _: &ContainerRef,
            _: bool,
            _: ExecStdio,
        ) -> Result<i32, RuntimeError> {
            Ok(0)
        }
        async fn port_forward(
            &self,
            _: &str,
            _: &str,
            _: u16,
        ) -> Result<Box<dyn Duplex>, RuntimeError> {
            Err(RuntimeError::Unavailable {
                message: "no".into(),
            })
        }
        async fn logs(&self, _: &ContainerRef, _: &LogOptions) -> Result<LogStream, RuntimeError> {
            Err(RuntimeError::NotFound { what: "log".into() })
        }
    }

    #[tokio::test]
    async fn a_runtime_that_runs_nothing_fails() {
        let f = Fixture {
            target: ContainerRef {
                namespace: "default".into(),
                pod: "p".into(),
                container: "c".into(),
            },
            echo_port: None,
            log: None,
        };
        let e = run(&Liar, &f).await.unwrap_err();
        assert_eq!(e.check, "exec: exit code, stdout and stderr apart");
    }
}
