//! End-to-end tests of `skiff run -d/-p/--name`, `skiff ps/logs/stop/rm/exec` (run as
//! root): detached lifecycles, ports published to 127.0.0.1 (the kubia example), exec
//! into running containers, the container's loopback, bad input, CRI-format logs
//! (`logs --timestamps`, stdout and stderr apart) and the shim's task protocol driven
//! over its socket with skiff-container's client.
//!
//! Every test has its own temp data dir and runtime root; every command runs under
//! `timeout`. The guard removes (rm -f) the test's containers and unmounts leftovers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mounts.rs"]
mod mounts;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

struct Env {
    dir: TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    fn fails_with(self, code: i32, says: &str) -> Self {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(says),
            "expected {says:?} in: {}",
            self.stderr
        );
        self
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Containers first (their shims hold the mounts), then any leftover mount.
        let ids = self.cmd(&["ps", "-a", "-q", "--no-trunc"]).stdout;
        for id in ids.lines() {
            let _ = self.cmd(&["rm", "-f", id]);
        }
        mounts::unmount_all_under(self.dir.path());
    }
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["data", "rt"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        Env { dir }
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn cmd(&self, args: &[&str]) -> Out {
        let out = Command::new("timeout")
            .arg("120")
            .arg(SKIFF)
            .args(args)
            .env("SKIFF_DATA_DIR", self.data())
            .env("SKIFF_RUNTIME_ROOT", self.dir.path().join("rt"))
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    /// The kubia example built as `kubia:1`.
    fn kubia(&self) {
        let ctx = self.dir.path().join("ctx");
        fs::create_dir(&ctx).unwrap();
        let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kubia");
        let st = Command::new("cp")
            .arg("-r")
            .arg(ex.join("Dockerfile"))
            .arg(ex.join("www"))
            .arg(ex.join("wget-fix"))
            .arg("/bin/busybox")
            .arg(&ctx)
            .status()
            .unwrap();
        assert!(st.success());
        self.cmd(&["image", "build", "-t", "kubia:1", ctx.to_str().unwrap()])
            .ok();
    }
    /// Polls `skiff ps -a` until the container's STATUS starts with `prefix`.
    #[track_caller]
    fn wait_status(&self, name: &str, prefix: &str) -> String {
        for _ in 0..600 {
            let ps = self.cmd(&["ps", "-a"]).ok().stdout;
            if let Some(l) = ps.lines().find(|l| l.ends_with(&format!(" {name}"))) {
                if l.contains(prefix) {
                    return l.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{name} never reached {prefix}:\n{}",
            self.cmd(&["ps", "-a"]).stdout
        );
    }
    fn id_of(&self, name: &str) -> String {
        fs::read_link(self.data().join("container-names").join(name))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

/// Nothing of container `id` is left: no mount, no cgroup, no runtime state, no record.
#[track_caller]
fn assert_gone(e: &Env, id: &str) {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(id), "a mount of {id} is left");
    assert!(!e.data().join("containers").join(id).exists());
    assert!(!e.dir.path().join("rt").join(id).exists());
    let found = Command::new("find")
        .args(["/sys/fs/cgroup", "-maxdepth", "6", "-name", id])
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "cgroups left: {}",
        String::from_utf8_lossy(&found.stdout)
    );
    let active = e.data().join("images/snapshots/active");
    assert!(!active.join(id).exists(), "snapshot of {id} left");
}

/// An image with only a static busybox (sh and applets by name).
fn busybox_image(e: &Env) {
    let ctx = e.dir.path().join("bbctx");
    fs::create_dir(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    e.cmd(&["image", "build", "-t", "bb:1", ctx.to_str().unwrap()])
        .ok();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / through the published port, retrying while the server inside starts.
fn http_get(port: u16) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.starts_with("HTTP/1") {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no HTTP answer on 127.0.0.1:{port}: {last:?}");
}

#[test]
fn detached_lifecycle_logs_ps_stop_rm() {
    let e = Env::new();
    busybox_image(&e);
    let script = "echo hello; echo oops >&2; trap 'echo bye; exit 3' TERM; \
        while true; do sleep 0.05; done";
    let id = e
        .cmd(&["run", "-d", "--name", "life", "bb:1", "sh", "-c", script])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(e.id_of("life"), id);
    let row = e.wait_status("life", "Up ");
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains("bb:1"), "{row}");
    let ps = e.cmd(&["ps"]).ok().stdout;
    assert!(ps.starts_with("CONTAINER ID   IMAGE   COMMAND"), "{ps}");
    for h in ["CREATED", "STATUS", "PORTS", "NAMES"] {
        assert!(ps.lines().next().unwrap().contains(h), "{ps}");
    }
    // Output of a detached container goes to its log (by name and by ID prefix), its
    // stdout to `logs`'s stdout and its stderr to `logs`'s stderr.
    let (mut out, mut err) = (String::new(), String::new());
    for _ in 0..200 {
        let o = e.cmd(&["logs", "life"]).ok();
        (out, err) = (o.stdout, o.stderr);
        if err.contains("oops") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(out, "hello\n");
    assert_eq!(err, "oops\n");
    assert_eq!(e.cmd(&["logs", &id[..6]]).ok().stdout, out);
    // exec into it (no published ports: nothing else holds its namespaces open).
    let out = e
        .cmd(&[
            "exec",
            "life",
            "sh",
            "-c",
            "hostname; cat /proc/1/cmdline | tr '\\0' ' '",
        ])
        .ok();
    assert_eq!(out.stdout, format!("{}\nsh -c {script} ", &id[..12]));
    // A running container is not removed without -f; the name is taken.
    e.cmd(&["rm", "life"]).fails_with(1, "is running");
    e.cmd(&["run", "-d", "--name", "life", "bb:1", "true"])
        .fails_with(125, "already in use");
    // stop: STOPSIGNAL (TERM) reaches the trap; its exit code is recorded.
    assert_eq!(e.cmd(&["stop", "life"]).ok().stdout, "life\n");
    let row = e.wait_status("life", "Exited (3)");
    assert!(!row.contains("Up"), "{row}");
    assert!(!e.cmd(&["ps"]).ok().stdout.contains("life"));
    assert!(e.cmd(&["logs", "life"]).ok().stdout.ends_with("bye\n"));
    // Stopped: the rootfs is unmounted, the runtime state and cgroup are gone already.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id));
    e.cmd(&["rm", "life"]).ok();
    assert_gone(&e, &id);
    assert!(!e.data().join("container-names/life").exists());
    assert!(e.cmd(&["ps", "-a", "-q"]).ok().stdout.is_empty());

    // A process that ignores the stop signal is killed after -t.
    let id = e
        .cmd(&[
            "run",
            "-d",
            "--name",
            "stubborn",
            "bb:1",
            "sh",
            "-c",
            "trap '' TERM; while true; do sleep 0.05; done",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    e.wait_status("stubborn", "Up ");
    e.cmd(&["stop", "-t", "1", "stubborn"]).ok();
    e.wait_status("stubborn", "Exited (137)");
    e.cmd(&["rm", "stubborn"]).ok();
    assert_gone(&e, &id);

    // --rm with -d: the shim removes the container when it exits.
    let id = e
        .cmd(&["run", "-d", "--rm", "bb:1", "true"])
        .ok()
        .stdout
        .trim()
        .to_string();
    for _ in 0..600 {
        if !e.data().join("containers").join(&id).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_gone(&e, &id);

    // A foreground container without --rm stays, exited, until rm.
    e.cmd(&["run", "--name", "fg", "bb:1", "sh", "-c", "exit 4"])
        .fails_with(4, "");
    e.wait_status("fg", "Exited (4)");
    let id = e.id_of("fg");
    e.cmd(&["rm", &id[..8]]).ok();
    assert_gone(&e, &id);
}

#[test]
fn published_port_serves_kubia_exec_and_rm_force() {
    let e = Env::new();
    e.kubia();
    let port = free_port();
    let spec = format!("127.0.0.1:{port}:8080");
    let id = e
        .cmd(&["run", "-d", "-p", &spec, "--name", "web", "kubia:1"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let page = http_get(port);
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(
        page.ends_with(&format!("You've hit {}\n", &id[..12])),
        "{page}"
    );
    // Several connections, each answered.
    for _ in 0..3 {
        assert!(http_get(port).contains("You've hit"));
    }
    let row = e.wait_status("web", "Up ");
    assert!(
        row.contains(&format!("127.0.0.1:{port}->8080/tcp")),
        "{row}"
    );

    // exec runs in the container: its hostname, its filesystem, its network namespace
    // with lo up (the server answers on 127.0.0.1 inside).
    let out = e.cmd(&["exec", "web", "hostname"]).ok();
    assert_eq!(out.stdout.trim(), &id[..12]);
    let out = e
        .cmd(&["exec", "web", "cat", "/sys/class/net/lo/flags"])
        .ok();
    assert_eq!(
        u32::from_str_radix(out.stdout.trim().trim_start_matches("0x"), 16).unwrap() & 1,
        1,
        "lo is down: {}",
        out.stdout
    );
    let out = e
        .cmd(&["exec", &id[..5], "wget", "-qO-", "http://127.0.0.1:8080/"])
        .ok();
    assert_eq!(out.stdout, format!("You've hit {}\n", &id[..12]));
    e.cmd(&["exec", "web", "sh", "-c", "exit 5"])
        .fails_with(5, "");

    // A taken host port is refused, and that attempt leaves nothing behind.
    let before = fs::read_dir(e.data().join("containers")).unwrap().count();
    e.cmd(&["run", "-d", "-p", &spec, "--name", "web2", "kubia:1"])
        .fails_with(125, "already in use");
    assert_eq!(
        fs::read_dir(e.data().join("containers")).unwrap().count(),
        before
    );
    assert!(!e.data().join("container-names/web2").exists());
    assert_eq!(e.cmd(&["ps", "-a", "-q"]).ok().stdout.lines().count(), 1);

    // rm -f of the running container: stopped and removed, the port is free again.
    e.cmd(&["rm", "-f", "web"]).ok();
    assert_gone(&e, &id);
    TcpListener::bind(("127.0.0.1", port)).expect("the published port is still bound");
}

#[test]
fn loopback_is_up_in_foreground_containers() {
    let e = Env::new();
    busybox_image(&e);
    // A server and a client over 127.0.0.1 inside one container.
    let out = e
        .cmd(&[
            "run",
            "--rm",
            "bb:1",
            "sh",
            "-c",
            "cat /sys/class/net/lo/operstate; mkdir /www; echo hi > /www/index.html; \
             httpd -p 127.0.0.1:81 -h /www; wget -qO- http://127.0.0.1:81/",
        ])
        .ok();
    assert_eq!(out.stdout, "unknown\nhi\n", "{}", out.stderr);
}

#[test]
fn bad_input_gets_clear_errors() {
    let e = Env::new();
    busybox_image(&e);
    for (spec, says) in [
        ("80:99999", "\"99999\" is not a port number"),
        ("abc", "is not a port number"),
        ("1.2.3.4.5:80:80", "not an IP address"),
        ("80:80/udp", "only tcp"),
        ("8000-8010:80", "port ranges are not supported"),
    ] {
        e.cmd(&["run", "-d", "-p", spec, "bb:1", "true"])
            .fails_with(125, says);
    }
    e.cmd(&["run", "-it", "-p", "8080:80", "bb:1", "true"])
        .fails_with(125, "-p with -t");
    e.cmd(&["run", "-d", "-t", "bb:1", "true"])
        .fails_with(125, "drop -t");
    e.cmd(&["run", "--name", "../x", "bb:1", "true"])
        .fails_with(125, "invalid container name");
    // Nothing was created by any of them.
    assert_eq!(
        fs::read_dir(e.data().join("containers"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    for cmd in [
        vec!["logs", "nope"],
        vec!["stop", "nope"],
        vec!["rm", "nope"],
        vec!["exec", "nope", "true"],
    ] {
        e.cmd(&cmd).fails_with(1, "no such container: nope");
    }
    e.cmd(&["run", "--name", "done", "bb:1", "true"]).ok();
    e.cmd(&["exec", "done", "true"])
        .fails_with(1, "is not running");
    e.cmd(&["rm", "done"]).ok();
}

/// `run -it` and `exec -it` give the process a terminal (driven through `script`, which
/// supplies the pty our side needs).
#[test]
fn run_and_exec_with_a_terminal() {
    let e = Env::new();
    busybox_image(&e);
    let through_pty = |args: &str| -> String {
        let out = Command::new("timeout")
            .arg("60")
            .args(["script", "-qec"])
            .arg(format!("{SKIFF} {args}"))
            .arg("/dev/null")
            .env("SKIFF_DATA_DIR", e.data())
            .env("SKIFF_RUNTIME_ROOT", e.dir.path().join("rt"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = through_pty("run --rm -it bb:1 sh -c 'tty; test -t 0 && echo stdin-is-a-tty'");
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("stdin-is-a-tty"), "{out:?}");
    // Without -t there is no terminal.
    let plain = e
        .cmd(&["run", "--rm", "bb:1", "sh", "-c", "tty || true"])
        .ok()
        .stdout;
    assert!(plain.contains("not a tty"), "{plain:?}");

    e.cmd(&["run", "-d", "--name", "t", "bb:1", "sleep", "1000"])
        .ok();
    e.wait_status("t", "Up ");
    let out = through_pty("exec -it t sh -c 'tty; echo in-$(hostname)'");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    let id = e.id_of("t");
    assert!(out.contains(&format!("in-{}", &id[..12])), "{out:?}");
    e.cmd(&["rm", "-f", "t"]).ok();
    assert_gone(&e, &id);
}

/// `run -p` in the foreground: the output is relayed, SIGINT reaches the container, the
/// exit code is the container's, `stop` from elsewhere ends it, `--rm` cleans up.
#[test]
fn foreground_run_with_published_ports() {
    use std::io::BufRead;
    let e = Env::new();
    e.kubia();
    let port = free_port();
    let spawn = |args: &[&str]| {
        Command::new("timeout")
            .arg("120")
            .arg(SKIFF)
            .args(args)
            .env("SKIFF_DATA_DIR", e.data())
            .env("SKIFF_RUNTIME_ROOT", e.dir.path().join("rt"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let spec = format!("127.0.0.1:{port}:8080");
    let mut fg = spawn(&["run", "--rm", "-p", &spec, "--name", "fgweb", "kubia:1"]);
    assert!(http_get(port).contains("You've hit"));
    let id = e.id_of("fgweb");
    // httpd as PID 1 ignores TERM: stop kills it after -t, and `run` exits with 137.
    e.cmd(&["stop", "-t", "1", "fgweb"]).ok();
    assert_eq!(fg.wait().unwrap().code(), Some(137));
    assert_gone(&e, &id);

    // The trap is set before "started" is printed: sh as PID 1 does not die of a SIGINT that
    // arrives while it has no handler, and the test would wait forever.
    let script = "trap 'echo got-int; exit 7' INT; echo started; while true; do sleep 0.05; done";
    let mut fg = spawn(&[
        "run", "-p", "9", "--name", "trap", "kubia:1", "sh", "-c", script,
    ]);
    let mut lines = std::io::BufReader::new(fg.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    // `timeout` passes SIGINT on to skiff, which forwards it to the container.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fg.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got-int");
    assert_eq!(fg.wait().unwrap().code(), Some(7));
    e.wait_status("trap", "Exited (7)");
    let id = e.id_of("trap");
    e.cmd(&["rm", "trap"]).ok();
    assert_gone(&e, &id);
}

/// The log is in the CRI format (one timestamped record per line, streams apart, a
/// partial last line marked `P`), and `logs -t` prefixes each line with its time.
#[test]
fn logs_are_cri_records_and_timestamps_show() {
    use skiff_container::log::{parse_record, parse_time, Stream};
    let e = Env::new();
    busybox_image(&e);
    let id = e
        .cmd(&[
            "run",
            "-d",
            "--name",
            "talk",
            "bb:1",
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; printf partial",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    e.wait_status("talk", "Exited (0)");
    let raw = fs::read_to_string(e.data().join("containers").join(&id).join("0.log")).unwrap();
    let records: Vec<_> = raw
        .lines()
        .map(|l| parse_record(l.as_bytes()).unwrap_or_else(|r| panic!("{r}: {l:?}")))
        .collect();
    let mut stdout: Vec<(bool, &[u8])> = Vec::new();
    for r in &records {
        if r.stream == Stream::Stdout {
            stdout.push((r.partial, &r.content));
        }
    }
    assert_eq!(
        stdout,
        [
            (false, &b"out1"[..]),
            (false, &b"out2"[..]),
            (true, &b"partial"[..])
        ]
    );
    let stderr: Vec<_> = records
        .iter()
        .filter(|r| r.stream == Stream::Stderr)
        .collect();
    assert_eq!(stderr.len(), 1);
    assert_eq!(
        (stderr[0].partial, &stderr[0].content[..]),
        (false, &b"err1"[..])
    );
    // Plain logs reproduce the output exactly, each stream on its own.
    let plain = e.cmd(&["logs", "talk"]).ok();
    assert_eq!(plain.stdout, "out1\nout2\npartial");
    assert_eq!(plain.stderr, "err1\n");
    // With -t (and --timestamps) every line starts with its RFC 3339 time.
    for flag in ["-t", "--timestamps"] {
        let stamped = e.cmd(&["logs", flag, "talk"]).ok();
        let lines: Vec<&str> = stamped.stdout.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 3, "{:?}", stamped.stdout);
        let mut last = std::time::UNIX_EPOCH;
        for (line, want) in lines.iter().zip(["out1\n", "out2\n", "partial"]) {
            let (ts, text) = line.split_once(' ').unwrap();
            let t = parse_time(ts).unwrap_or_else(|| panic!("bad timestamp in {line:?}"));
            assert!(t >= last, "times go backwards: {:?}", stamped.stdout);
            last = t;
            assert_eq!(text, want);
        }
        let (ts, text) = stamped.stderr.split_once(' ').unwrap();
        assert!(parse_time(ts).is_some(), "{:?}", stamped.stderr);
        assert_eq!(text, "err1\n");
    }
    e.cmd(&["rm", "talk"]).ok();
    assert_gone(&e, &id);
}

/// The shim's task API over its socket: state, stats, exec with our pipes, attach,
/// resize (refused: no terminal), kill and wait, then the shim is gone.
#[test]
fn shim_task_protocol_round_trip() {
    use nix::sys::signal::Signal;
    use skiff_container::shim::{Category, Client};
    use skiff_container::ContainerState;
    use std::os::fd::AsFd;
    let e = Env::new();
    busybox_image(&e);
    let id = e
        .cmd(&[
            "run",
            "-d",
            "--name",
            "task",
            "bb:1",
            "sh",
            "-c",
            "trap 'exit 3' TERM; while true; do sleep 0.05; done",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let sock = e.data().join("containers").join(&id).join("shim.sock");
    let client = Client::new(&sock);
    let (state, pid, code) = client.state().unwrap();
    assert_eq!((state, code), (ContainerState::Running, None));
    assert!(pid > 0);
    let stats = client.stats().unwrap();
    assert!(stats.pids.current >= 1, "{stats:?}");
    assert!(stats.memory.usage.usage > 0, "{stats:?}");

    // exec with our own pipes as its stdio; its exit code comes back.
    let spec =
        skiff_container::spec::load(&e.data().join("containers").join(&id).join("bundle")).unwrap();
    let process = skiff_container::spec::exec_process(
        &spec,
        vec![
            "sh".into(),
            "-c".into(),
            "read x; echo got-$x; echo err-$(hostname) >&2; exit 4".into(),
        ],
        false,
        None,
        &[],
    )
    .unwrap();
    let (in_r, mut in_w) = std::io::pipe().unwrap();
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let (mut err_r, err_w) = std::io::pipe().unwrap();
    in_w.write_all(b"line\n").unwrap();
    drop(in_w);
    let code = client
        .exec(&process, in_r.as_fd(), out_w.as_fd(), err_w.as_fd())
        .unwrap();
    assert_eq!(code, 4);
    drop((in_r, out_w, err_w));
    let mut text = String::new();
    out_r.read_to_string(&mut text).unwrap();
    assert_eq!(text, "got-line\n");
    text.clear();
    err_r.read_to_string(&mut text).unwrap();
    assert_eq!(text, format!("err-{}\n", &id[..12]));

    // attach: what the container writes from now on reaches our pipes too.
    let (mut a_out_r, a_out_w) = std::io::pipe().unwrap();
    let (mut a_err_r, a_err_w) = std::io::pipe().unwrap();
    client.attach(a_out_w.as_fd(), a_err_w.as_fd()).unwrap();
    drop((a_out_w, a_err_w));
    let (null_in, _keep) = std::io::pipe().unwrap();
    let say = skiff_container::spec::exec_process(
        &spec,
        vec![
            "sh".into(),
            "-c".into(),
            "echo attached-out > /proc/1/fd/1; echo attached-err > /proc/1/fd/2".into(),
        ],
        false,
        None,
        &[],
    )
    .unwrap();
    let devnull = fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    assert_eq!(
        client
            .exec(&say, null_in.as_fd(), devnull.as_fd(), devnull.as_fd())
            .unwrap(),
        0
    );

    let err = client.resize(80, 24).unwrap_err();
    assert_eq!(err.category(), Category::Invalid);
    assert!(err.to_string().contains("no terminal"), "{err}");
    let err = client.delete().unwrap_err();
    assert_eq!(err.category(), Category::Conflict);

    // kill + wait: the TERM trap's exit code, recorded by the time wait answers.
    client.kill(Signal::SIGTERM, false).unwrap();
    assert_eq!(client.wait().unwrap(), 3);
    let row = e
        .cmd(&["ps", "-a"])
        .ok()
        .stdout
        .lines()
        .find(|l| l.ends_with(" task"))
        .unwrap()
        .to_string();
    assert!(row.contains("Exited (3)"), "{row}");
    // The attached pipes got the output and were closed at the exit.
    let mut got = String::new();
    a_out_r.read_to_string(&mut got).unwrap();
    assert_eq!(got, "attached-out\n");
    got.clear();
    a_err_r.read_to_string(&mut got).unwrap();
    assert_eq!(got, "attached-err\n");
    // The shim ends after the exit (skiff run's shims do) and takes its socket along.
    for _ in 0..400 {
        if !sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(!sock.exists(), "the shim's socket is left");
    assert!(client.state().is_err());
    e.cmd(&["rm", "task"]).ok();
    assert_gone(&e, &id);
}
