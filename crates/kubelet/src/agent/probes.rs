//! Probes (startup, liveness, readiness: exec, httpGet, tcpSocket) with their delays,
//! periods, timeouts and thresholds, and the preStop hook.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::containers::ContainerRecord;
use super::Shared;

#[derive(Debug, Default)]
struct One {
    next: Option<Instant>,
    successes: i32,
    failures: i32,
    /// The probe's current verdict.
    ok: bool,
}

/// Probe state per container ID.
#[derive(Debug, Default)]
pub struct State {
    by_id: HashMap<(String, &'static str), One>,
}

pub struct Verdict {
    pub ready: bool,
    pub restart: bool,
    pub next: Duration,
}

fn port_of(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .as_ref()?
            .iter()
            .find(|x| x.name.as_deref() == Some(name))
            .and_then(|x| u16::try_from(x.container_port).ok()),
    }
}

/// Runs one probe attempt; `Ok(true)` when it passed.
async fn attempt(sh: &Shared, c: &Container, r: &ContainerRecord, p: &Probe) -> bool {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &p.exec {
        let argv = e.command.clone().unwrap_or_default();
        let rt = sh.rt.clone();
        let rec = r.clone();
        return matches!(
            tokio::task::spawn_blocking(move || rt.exec_sync(&rec, argv, timeout)).await,
            Ok(Ok((0, _)))
        );
    }
    let ns = sh.rt.network_namespace(&r.pod_uid).unwrap_or_default();
    if let Some(t) = &p.tcp_socket {
        let Some(port) = port_of(&t.port, c) else {
            return false;
        };
        return tokio::task::spawn_blocking(move || {
            skiff_container::netns::in_network(&ns, move || {
                std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)
                    .is_ok()
            })
            .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
    }
    if let Some(h) = &p.http_get {
        let Some(port) = port_of(&h.port, c) else {
            return false;
        };
        let h = h.clone();
        return tokio::task::spawn_blocking(move || http_get(&ns, port, &h, timeout))
            .await
            .map(|code| (200..400).contains(&code))
            .unwrap_or(false);
    }
    if let Some(g) = &p.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return false;
        };
        let service = g.service.clone().unwrap_or_default();
        let connected = tokio::task::spawn_blocking(move || {
            skiff_container::netns::in_network(&ns, move || {
                let s =
                    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })
        })
        .await;
        let Ok(Ok(Ok(s))) = connected else {
            return false;
        };
        let Ok(s) = tokio::net::TcpStream::from_std(s) else {
            return false;
        };
        return match super::grpc_probe::check(s, port, &service, timeout).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(container = %r.name, "grpc probe: {e}");
                false
            }
        };
    }
    // A probe with no handler (the API server refuses those): nothing to fail.
    true
}

/// An HTTP/1.1 GET in the pod's network namespace; the status code (0 on failure).
fn http_get(ns: &std::path::Path, port: u16, h: &HTTPGetAction, timeout: Duration) -> u16 {
    let path = h.path.clone().unwrap_or_else(|| "/".into());
    let headers: String = h
        .http_headers
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|x| format!("{}: {}\r\n", x.name, x.value))
        .collect();
    skiff_container::netns::in_network(ns, move || -> u16 {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return 0;
        }
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        let line = String::from_utf8_lossy(&buf[..n]);
        line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    })
    .unwrap_or(0)
}

/// Runs the container's due probes; what they say now.
pub async fn run(
    sh: &Shared,
    st: &mut State,
    pod: &Pod,
    c: &Container,
    r: &ContainerRecord,
) -> Verdict {
    let mut v = Verdict {
        ready: true,
        restart: false,
        next: Duration::from_secs(3600),
    };
    let started_ago = r
        .started
        .as_deref()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .and_then(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t)).ok())
        .unwrap_or(Duration::ZERO);
    let startup_ok = match &c.startup_probe {
        None => true,
        Some(p) => step(sh, st, pod, c, r, "startup", p, started_ago, false, &mut v).await,
    };
    if !startup_ok {
        v.ready = false;
        return v;
    }
    if let Some(p) = &c.liveness_probe {
        if !step(sh, st, pod, c, r, "liveness", p, started_ago, true, &mut v).await {
            v.restart = true;
        }
    }
    if let Some(p) = &c.readiness_probe {
        v.ready = step(
            sh,
            st,
            pod,
            c,
            r,
            "readiness",
            p,
            started_ago,
            false,
            &mut v,
        )
        .await;
    }
    v
}

#[allow(clippy::too_many_arguments)]
async fn step(
    sh: &Shared,
    st: &mut State,
    pod: &Pod,
    c: &Container,
    r: &ContainerRecord,
    kind: &'static str,
    p: &Probe,
    started_ago: Duration,
    initially_ok: bool,
    v: &mut Verdict,
) -> bool {
    let key = (r.id.clone(), kind);
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let one = st.by_id.entry(key.clone()).or_insert_with(|| One {
        ok: initially_ok,
        ..Default::default()
    });
    if started_ago < delay {
        v.next = v.next.min(delay - started_ago);
        return one.ok;
    }
    let now = Instant::now();
    if one.next.is_some_and(|n| now < n) {
        v.next = v.next.min(one.next.map(|n| n - now).unwrap_or(period));
        return one.ok;
    }
    let passed = attempt(sh, c, r, p).await;
    let one = st.by_id.entry(key).or_default();
    one.next = Some(Instant::now() + period);
    if passed {
        one.successes += 1;
        one.failures = 0;
        if one.successes >= p.success_threshold.unwrap_or(1).max(1) {
            one.ok = true;
        }
    } else {
        one.failures += 1;
        one.successes = 0;
        if one.failures >= p.failure_threshold.unwrap_or(3).max(1) {
            if one.ok || kind != "readiness" {
                sh.events.container(
                    pod,
                    &c.name,
                    r.init,
                    true,
                    "Unhealthy",
                    format!("{} probe failed", capital(kind)),
                );
            }
            one.ok = false;
            if kind == "liveness" {
                // A restarted container starts counting afresh.
                one.failures = 0;
            }
        }
    }
    v.next = v.next.min(period);
    one.ok
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Runs the container's preStop hook (exec, httpGet or sleep) until `deadline`.
pub async fn pre_stop(
    sh: &Shared,
    _pod: &Pod,
    c: &Container,
    r: &ContainerRecord,
    deadline: Instant,
) {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()) else {
        return;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(left)).await;
    } else if let Some(e) = &h.exec {
        let argv = e.command.clone().unwrap_or_default();
        let rt = sh.rt.clone();
        let rec = r.clone();
        let _ = tokio::time::timeout(
            left,
            tokio::task::spawn_blocking(move || rt.exec_sync(&rec, argv, left)),
        )
        .await;
    } else if let Some(g) = &h.http_get {
        if let Some(port) = port_of(&g.port, c) {
            let ns = sh.rt.network_namespace(&r.pod_uid).unwrap_or_default();
            let g = g.clone();
            let _ = tokio::time::timeout(
                left,
                tokio::task::spawn_blocking(move || http_get(&ns, port, &g, left)),
            )
            .await;
        }
    }
}

/// Runs a postStart hook; the error says why it failed.
pub async fn post_start(
    sh: &Shared,
    c: &Container,
    r: &ContainerRecord,
    h: &k8s_openapi::api::core::v1::LifecycleHandler,
) -> Result<(), String> {
    let timeout = Duration::from_secs(30);
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
        return Ok(());
    }
    if let Some(e) = &h.exec {
        let argv = e.command.clone().unwrap_or_default();
        let rt = sh.rt.clone();
        let rec = r.clone();
        return match tokio::task::spawn_blocking(move || rt.exec_sync(&rec, argv, timeout)).await {
            Ok(Ok((0, _))) => Ok(()),
            Ok(Ok((code, out))) => Err(format!(
                "command {:?} exited with {code}: {}",
                e.command.clone().unwrap_or_default().join(" "),
                String::from_utf8_lossy(&out).trim()
            )),
            Ok(Err(m)) => Err(m),
            Err(e) => Err(e.to_string()),
        };
    }
    if let Some(g) = &h.http_get {
        let Some(port) = port_of(&g.port, c) else {
            return Err(format!("unknown port {:?}", g.port));
        };
        let ns = sh.rt.network_namespace(&r.pod_uid).unwrap_or_default();
        let g = g.clone();
        let code = tokio::task::spawn_blocking(move || http_get(&ns, port, &g, timeout))
            .await
            .unwrap_or(0);
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP GET on port {port} answered {code}"))
        };
    }
    Ok(())
}
