//! OCI lifecycle hooks: run each hook program with the container state on stdin.
//!
//! A hook runs with exactly the env of its entry, `args[0]` as its argv[0], and is killed
//! when its timeout passes. Failure of prestart/createRuntime/createContainer/
//! startContainer hooks fails the operation; poststart and poststop failures are only
//! warnings, as the runtime spec requires.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook #{index} ({path}): cannot start")]
    Spawn {
        kind: &'static str,
        index: usize,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} hook #{index} ({path}) failed: {status}{stderr}")]
    Failed {
        kind: &'static str,
        index: usize,
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("{kind} hook #{index} ({path}) timed out after {secs}s and was killed")]
    Timeout {
        kind: &'static str,
        index: usize,
        path: PathBuf,
        secs: i64,
    },
}

/// Run `hooks` in order; stop at the first failure.
pub fn run(
    kind: &'static str,
    hooks: Option<&Vec<Hook>>,
    state_json: &[u8],
) -> Result<(), HookError> {
    for (index, h) in hooks.into_iter().flatten().enumerate() {
        run_one(kind, index, h, state_json)?;
    }
    Ok(())
}

/// Run `hooks`, logging failures instead of returning them.
pub fn run_warn(kind: &'static str, hooks: Option<&Vec<Hook>>, state_json: &[u8]) {
    for (index, h) in hooks.into_iter().flatten().enumerate() {
        if let Err(e) = run_one(kind, index, h, state_json) {
            tracing::warn!("{e}");
            eprintln!("warning: {e}");
        }
    }
}

fn state_file(state_json: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let fd = nix::sys::memfd::memfd_create(c"oci-state", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(state_json)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

fn run_one(kind: &'static str, index: usize, h: &Hook, state_json: &[u8]) -> Result<(), HookError> {
    let path = h.path().clone();
    let mut cmd = Command::new(&path);
    let args = h.args().clone().unwrap_or_default();
    if let Some((first, rest)) = args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for e in h.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    // The state goes in through an in-memory file rather than a pipe: a hook that
    // exits without reading it can neither block us nor kill us with SIGPIPE.
    let stdin = state_file(state_json).map_err(|source| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        source,
    })?;
    cmd.stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind,
        index,
        path: path.clone(),
        source,
    })?;
    let deadline = h
        .timeout()
        .map(|t| (t, Instant::now() + Duration::from_secs(t.max(0) as u64)));
    let mut sleep = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    kind,
                    index,
                    path,
                    source,
                })
            }
        }
        if let Some((secs, d)) = deadline {
            if Instant::now() >= d {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout {
                    kind,
                    index,
                    path,
                    secs,
                });
            }
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    };
    let stderr = stderr.trim();
    Err(HookError::Failed {
        kind,
        index,
        path,
        status,
        stderr: if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: &str) -> Hook {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn state_on_stdin_args_and_env() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let h = hook(&format!(
            r#"{{"path":"/bin/sh","args":["sh","-c","cat > {}; echo \"$0 $FOO\" >> {}"],"env":["FOO=bar"]}}"#,
            out.display(),
            out.display()
        ));
        run("prestart", Some(&vec![h]), b"{\"id\":\"x\"}").unwrap();
        let got = std::fs::read_to_string(out).unwrap();
        assert_eq!(got, "{\"id\":\"x\"}sh bar\n");
    }

    #[test]
    fn failure_and_timeout() {
        let h = hook(r#"{"path":"/bin/sh","args":["sh","-c","echo oops >&2; exit 3"]}"#);
        let e = run("createRuntime", Some(&vec![h]), b"{}").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("exit status 3") && msg.contains("oops"),
            "{msg}"
        );
        let h = hook(r#"{"path":"/bin/sleep","args":["sleep","10"],"timeout":1}"#);
        assert!(matches!(
            run("prestart", Some(&vec![h]), b"{}"),
            Err(HookError::Timeout { .. })
        ));
        let h = hook(r#"{"path":"/nonexistent/hook"}"#);
        assert!(matches!(
            run("prestart", Some(&vec![h]), b"{}"),
            Err(HookError::Spawn { .. })
        ));
    }
}
