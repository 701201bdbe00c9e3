//! The server's life as an operator sees it: SIGTERM with a watch open drains and exits 0,
//! `/readyz` and `/livez` list their named checks, `/metrics` counts requests under
//! kube-apiserver's names.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// Waits for `child` to exit, for at most `limit`.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_watch_open_drains_and_exits_0_within_10s() {
    // Its own server: this test kills it.
    let mut srv = Server::start();
    srv.kubectl("1.33", &["create", "configmap", "before"]).ok();
    let mut watch = srv
        .kubectl_command("1.33", &["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl get -w");
    // And a raw HTTP/1.1 watch, whose clean end (the last chunk) curl tells from a cut.
    let mut raw = std::process::Command::new("curl")
        .args(["-sSN", "--http1.1", "--cacert"])
        .arg(srv.pki("ca.crt"))
        .arg("--cert")
        .arg(srv.pki("admin.crt"))
        .arg("--key")
        .arg(srv.pki("admin.key"))
        .arg(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=1",
            srv.url
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn curl");
    let lines = |out: std::process::ChildStdout| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let rx = lines(watch.stdout.take().expect("stdout"));
    let raw_rx = lines(raw.stdout.take().expect("stdout"));
    // Both watches are live once a configmap created after they started shows up in them.
    let (mut seen, mut raw_seen) = (Vec::new(), Vec::new());
    let mut n = 0;
    eventually("both watches to be open", || {
        srv.kubectl("1.33", &["create", "configmap", &format!("during-{n}")])
            .ok();
        n += 1;
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
        raw_seen.extend(raw_rx.try_iter());
        (seen.iter().any(|l| l.starts_with("during-"))
            && raw_seen.iter().any(|l| l.contains("\"name\":\"during-")))
        .then_some(())
    });

    let status = std::process::Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = wait_exit(&mut srv.child, Duration::from_secs(10))
        .expect("skiff server still running 10 s after SIGTERM");
    assert_eq!(exit.code(), Some(0), "skiff server exited with {exit}");
    // The watch was ended by the server, not cut: kubectl sees a clean end and exits 0.
    let kubectl = wait_exit(&mut watch, Duration::from_secs(30));
    let _ = watch.kill();
    let mut err = String::new();
    if let Some(mut e) = watch.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let kubectl = kubectl.expect("kubectl get -w still running after the server exited");
    assert_eq!(kubectl.code(), Some(0), "kubectl get -w: {kubectl}: {err}");
    let curl = wait_exit(&mut raw, Duration::from_secs(30));
    let _ = raw.kill();
    let mut err = String::new();
    if let Some(mut e) = raw.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let curl = curl.expect("curl's watch still running after the server exited");
    // curl fails (18: transfer closed with outstanding data) if the stream was cut.
    assert_eq!(curl.code(), Some(0), "curl watch: {curl}: {err}");
}

/// curl without credentials (health checks are open to anonymous clients).
fn anonymous(srv: &Server, path: &str) -> (u16, String) {
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(srv.pki("ca.crt"))
        .arg(format!("{}{path}", srv.url));
    let out = run(c, None);
    let (body, code) = out.stdout.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("code"), body.to_string())
}

#[test]
fn readyz_and_livez_list_named_checks() {
    let srv = Server::start();
    let (code, body) = anonymous(&srv, "/readyz?verbose");
    assert_eq!(code, 200, "{body}");
    for check in ["ping", "log", "etcd", "informer-sync", "shutdown"] {
        assert!(
            body.contains(&format!("[+]{check} ok\n")),
            "{check}: {body}"
        );
    }
    assert!(body.ends_with("readyz check passed\n"), "{body}");
    let (code, body) = anonymous(&srv, "/livez?verbose");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]etcd ok\n"), "{body}");
    assert!(body.ends_with("livez check passed\n"), "{body}");
    assert_eq!(anonymous(&srv, "/readyz"), (200, "ok".to_string()));
    assert_eq!(anonymous(&srv, "/livez/etcd"), (200, "ok".to_string()));
    assert_eq!(anonymous(&srv, "/healthz"), (200, "ok".to_string()));
    assert_eq!(anonymous(&srv, "/readyz/no-such-check").0, 404);
    let (code, body) = anonymous(&srv, "/readyz?verbose&exclude=etcd");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]etcd excluded: ok\n"), "{body}");
    // kubectl reaches them the same way.
    let out = srv
        .kubectl("1.33", &["get", "--raw", "/readyz?verbose"])
        .ok();
    assert!(out.stdout.contains("[+]shutdown ok"), "{}", out.stdout);
}

/// The value of `series` (`name{labels}` exactly as written) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_count_requests_by_verb_resource_and_code() {
    let srv = Server::start();
    srv.kubectl("1.33", &["create", "configmap", "m1", "--from-literal=a=b"])
        .ok();
    srv.kubectl("1.33", &["get", "configmap", "m1"]).ok();
    srv.kubectl("1.33", &["get", "configmaps"]).ok();
    srv.kubectl("1.33", &["get", "configmap", "absent"]).fails();
    // A watch that is open while the metrics are read.
    let mut watch = srv
        .kubectl_command("1.33", &["get", "configmaps", "-w"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kubectl get -w");
    let labels = |verb: &str, scope: &str| {
        format!(
            r#"verb="{verb}",group="",version="v1",resource="configmaps",subresource="",scope="{scope}",component="apiserver",dry_run="""#
        )
    };
    let text = eventually("the watch to count as long-running", || {
        let text = srv
            .kubectl("1.33", &["get", "--raw", "/metrics"])
            .ok()
            .stdout;
        let open = sample(
            &text,
            &format!(
                "apiserver_longrunning_requests{{{}}}",
                labels("WATCH", "namespace")
            ),
        );
        (open == Some(1.0)).then_some(text)
    });
    let _ = watch.kill();
    let _ = watch.wait();
    let count = |verb: &str, scope: &str, code: u16| {
        sample(
            &text,
            &format!(
                "apiserver_request_total{{{},code=\"{code}\"}}",
                labels(verb, scope)
            ),
        )
    };
    assert_eq!(count("POST", "namespace", 201), Some(1.0), "{text}");
    assert_eq!(count("GET", "resource", 200), Some(1.0), "{text}");
    assert_eq!(count("GET", "resource", 404), Some(1.0), "{text}");
    assert!(
        count("LIST", "namespace", 200).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    // Durations of ordinary requests; watches are not in the latency histogram.
    assert_eq!(
        sample(
            &text,
            &format!(
                "apiserver_request_duration_seconds_count{{{}}}",
                labels("POST", "namespace")
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            "apiserver_request_duration_seconds_count{{{}}}",
            labels("WATCH", "namespace")
        )),
        "{text}"
    );
    // The store, timed by operation and resource.
    assert!(
        sample(
            &text,
            r#"etcd_request_duration_seconds_count{operation="create",type="configmaps"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("etcd_request_duration_seconds_bucket{le=\"0.005\",operation=\"get\",type=\"configmaps\"}"),
        "{text}"
    );
    // The watch cache.
    assert!(
        sample(&text, "watch_cache_capacity").unwrap_or(0.0) > 0.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"apiserver_watch_cache_events_received_total{resource="configmaps"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    // /metrics needs credentials, as in Kubernetes.
    assert_eq!(anonymous(&srv, "/metrics").0, 401);
}

#[test]
fn sigterm_ends_a_log_follow_proxied_to_the_kubelet() {
    // Its own server (and kubelet): this test kills the server.
    let (mut srv, _kubelet) = crate::stream::cluster();
    let mut logs = srv
        .kubectl_command("1.33", &["logs", "-f", "web"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl logs -f");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = logs.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The follow is streaming once the file's last line arrived.
    eventually("kubectl logs -f to stream", || {
        rx.try_iter().any(|l| l == "line3").then_some(())
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = wait_exit(&mut srv.child, Duration::from_secs(10))
        .expect("skiff server still running 10 s after SIGTERM with a log follow open");
    assert_eq!(exit.code(), Some(0), "skiff server exited with {exit}");
    // The follow was ended by the server, not cut.
    let done = wait_exit(&mut logs, Duration::from_secs(30));
    let _ = logs.kill();
    let mut err = String::new();
    if let Some(mut e) = logs.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let done = done.expect("kubectl logs -f still running after the server exited");
    assert_eq!(done.code(), Some(0), "kubectl logs -f: {done}: {err}");
}
