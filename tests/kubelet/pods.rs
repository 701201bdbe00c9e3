//! Pods as a user drives them: run, exec, logs, port-forward, cp, attach, delete.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::Duration;

use crate::common::{run, VERSIONS};
use crate::node::{assert_clean, wait, wait_or, Node};

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn run_exec_logs_port_forward_cp_attach_and_delete() {
    let (dir, cgroups);
    {
        let n = Node::start();
        dir = n.data().to_path_buf();
        cgroups = n.cgroup_dirs(n.server.agent_cgroup().unwrap());
        n.k(&["run", "kubia", "--image", &n.image, "--port=8080"])
            .ok();
        n.k(&[
            "wait",
            "--for=condition=Ready",
            "pod/kubia",
            "--timeout=60s",
        ])
        .ok();
        let row = n.k(&["get", "pod", "kubia", "--no-headers"]).ok().stdout;
        assert!(row.contains("1/1") && row.contains("Running"), "{row}");
        assert!(n
            .jp("kubia", "{.status.containerStatuses[0].containerID}")
            .starts_with("skiff://"));
        assert_eq!(n.jp("kubia", "{.status.qosClass}"), "BestEffort");
        assert!(n
            .jp("kubia", "{.status.containerStatuses[0].imageID}")
            .contains("/kubia@sha256:"));

        for v in VERSIONS {
            // exec: the pod's UTS namespace carries its name.
            assert_eq!(
                n.kv(v, &["exec", "kubia", "--", "hostname"]).ok().stdout,
                "kubia\n"
            );
            // stdin reaches the command; the exit code comes back.
            let mut c = n
                .server
                .kubectl_command(v, &["exec", "-i", "kubia", "--", "cat"]);
            c.env("KUBECONFIG", n.server.kubeconfig());
            assert_eq!(
                run(c, Some("through stdin\n")).ok().stdout,
                "through stdin\n"
            );
            let o = n.kv(
                v,
                &["exec", "kubia", "--", "sh", "-c", "echo err >&2; exit 7"],
            );
            assert_eq!(o.code, 7, "{o:?}");
            assert!(o.stderr.contains("err"), "{o:?}");
        }
        // exec -t: the command gets a terminal of kubectl's size (kubectl in a pty made by
        // script(1), 123 columns by 45 rows), resized when kubectl's is (100 by 30).
        let k = n.server.kubectl_command(
            VERSIONS[1],
            &[
                "exec",
                "-it",
                "kubia",
                "--",
                "sh",
                "-c",
                "tty; stty size; sleep 4; stty size",
            ],
        );
        let quoted: Vec<String> = std::iter::once(k.get_program())
            .chain(k.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect();
        let mut c = std::process::Command::new("script");
        c.args(["-qec"])
            .arg(format!(
                "stty cols 123 rows 45; (sleep 2; stty cols 100 rows 30 </dev/tty) & {}",
                quoted.join(" ")
            ))
            .arg("/dev/null")
            .env("KUBECONFIG", n.server.kubeconfig());
        let out = run(c, None).ok().stdout;
        assert!(
            out.contains("/dev/pts/") && out.contains("45 123") && out.contains("30 100"),
            "exec -t: {out:?}"
        );
        // /etc/hosts and resolv.conf are the pod's.
        let resolv = n
            .k(&["exec", "kubia", "--", "cat", "/etc/resolv.conf"])
            .ok()
            .stdout;
        assert!(
            resolv.contains("search default.svc.cluster.local"),
            "{resolv}"
        );
        // dnsPolicy None: only the pod's dnsConfig.
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: dnsnone}}
spec:
  dnsPolicy: "None"
  dnsConfig:
    nameservers: ["192.0.2.1"]
    searches: ["a.example"]
    options: [{{name: ndots, value: "2"}}]
  containers:
  - name: c
    image: {}
    command: ["sleep", "3600"]
"#,
            n.image
        ));
        n.k(&[
            "wait",
            "--for=condition=Ready",
            "pod/dnsnone",
            "--timeout=60s",
        ])
        .ok();
        assert_eq!(
            n.k(&["exec", "dnsnone", "--", "cat", "/etc/resolv.conf"])
                .ok()
                .stdout,
            "search a.example\nnameserver 192.0.2.1\noptions ndots:2\n"
        );
        n.k(&["delete", "pod", "dnsnone", "--grace-period=0"]).ok();

        // port-forward to the pod's 8080 (inside its network namespace).
        for v in VERSIONS {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut pf = n
                .server
                .kubectl_command(v, &["port-forward", "pod/kubia", &format!("{port}:8080")]);
            let log = n.data().join(format!("port-forward-{v}.log"));
            pf.env("KUBECONFIG", n.server.kubeconfig())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
            let mut child = pf.spawn().unwrap();
            let last = std::cell::RefCell::new(None);
            let body = wait_or(
                "port-forward to answer",
                60,
                || {
                    let got = http_get(port);
                    *last.borrow_mut() = got.clone();
                    got.filter(|b| b.contains("You've hit kubia"))
                },
                || {
                    format!(
                        "last answer {:?}; kubectl: {} {}",
                        last.borrow(),
                        std::fs::read_to_string(&log).unwrap_or_default(),
                        std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
                    )
                },
            );
            assert!(body.contains("200"), "{body}");
            let _ = child.kill();
            let _ = child.wait();
        }

        // kubectl cp (tar in the container).
        let local = n.data().join("copied.cgi");
        n.k(&[
            "cp",
            "kubia:/www/cgi-bin/index.cgi",
            local.to_str().unwrap(),
        ])
        .ok();
        assert!(std::fs::read_to_string(&local)
            .unwrap()
            .contains("You've hit"));

        // logs, then logs -f, of a container that writes.
        n.k(&[
            "run",
            "logger",
            "--image",
            &n.image,
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            "echo hello-from-logs; while true; do echo tick; sleep 0.2; done",
        ])
        .ok();
        wait("the logger's output", 60, || {
            let o = n.k(&["logs", "logger"]);
            o.stdout.contains("hello-from-logs").then_some(())
        });
        let tail = n.k(&["logs", "logger", "--tail=1"]).ok().stdout;
        assert_eq!(tail, "tick\n");
        let mut f = n
            .server
            .kubectl_command(VERSIONS[0], &["logs", "-f", "logger", "--timestamps"]);
        f.env("KUBECONFIG", n.server.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = f.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        for l in lines.by_ref().take(8) {
            let l = l.unwrap();
            // RFC 3339 timestamp first.
            assert!(l.starts_with("20") && l.contains('T'), "{l}");
            seen += 1;
        }
        assert_eq!(seen, 8, "logs -f kept streaming new lines");
        let _ = child.kill();
        let _ = child.wait();
        // attach: the running container's output.
        let mut a = n.server.kubectl_command(VERSIONS[1], &["attach", "logger"]);
        a.env("KUBECONFIG", n.server.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = a.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("tick"), "{line:?}");
        let _ = child.kill();
        let _ = child.wait();

        // kubectl run -i --rm: the pod's stdin (stdinOnce) gets kubectl's input through
        // attach; cat echoes it and ends when the input does; kubectl deletes the pod.
        let mut c = n.server.kubectl_command(
            VERSIONS[1],
            &[
                "run",
                "-i",
                "--rm",
                "--restart=Never",
                "catty",
                "--image",
                &n.image,
                "--",
                "cat",
            ],
        );
        c.env("KUBECONFIG", n.server.kubeconfig());
        let o = run(c, Some("through attach\n")).ok();
        assert!(o.stdout.contains("through attach"), "{o:?}");
        wait("the run -i pod deleted", 30, || {
            (n.k(&["get", "pod", "catty"]).code != 0).then_some(())
        });
        // A container with a terminal (tty, stdin): it sees a terminal, and what attach
        // sends reaches its shell through it.
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: ttyp}}
spec:
  restartPolicy: Never
  containers:
  - name: sh
    image: {}
    command: ["sh", "-c", "tty; exec sh"]
    stdin: true
    tty: true
"#,
            n.image
        ));
        n.k(&["wait", "--for=condition=Ready", "pod/ttyp", "--timeout=60s"])
            .ok();
        wait("the terminal's name in the log", 30, || {
            n.k(&["logs", "ttyp"])
                .stdout
                .contains("/dev/pts/")
                .then_some(())
        });
        let mut c = n
            .server
            .kubectl_command(VERSIONS[1], &["attach", "-i", "ttyp"]);
        c.env("KUBECONFIG", n.server.kubeconfig());
        let o = run(c, Some("echo from-$((6*7)); exit 3\n"));
        assert!(o.stdout.contains("from-42"), "{o:?}");
        wait("the terminal pod Failed with exit code 3", 30, || {
            (n.jp(
                "ttyp",
                "{.status.containerStatuses[0].state.terminated.exitCode}",
            ) == "3")
                .then_some(())
        });
        n.k(&["delete", "pod", "ttyp", "--grace-period=0"]).ok();

        // Graceful delete: sh as PID 1 ignores SIGTERM, so the grace period runs out and
        // SIGKILL ends it; the kubelet then deletes the pod and kubectl returns.
        let t0 = std::time::Instant::now();
        n.k(&["delete", "pod", "logger", "--grace-period=3"]).ok();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(20),
            "{took:?}"
        );
        assert!(n
            .k(&["get", "pod", "logger"])
            .fails()
            .stderr
            .contains("NotFound"));
        // Its containers are gone from the node.
        let left = std::fs::read_dir(n.data().join("agent/containers"))
            .unwrap()
            .count();
        assert_eq!(left, 1, "only kubia's container is left");
        n.k(&["delete", "pod", "kubia", "--grace-period=1"]).ok();
        wait("pod dirs removed", 20, || {
            (std::fs::read_dir(n.data().join("agent/pods"))
                .unwrap()
                .count()
                == 0)
                .then_some(())
        });
        assert_eq!(n.node_refusals(), Vec::<String>::new());
    }
    assert_clean(&dir, &cgroups);
}
