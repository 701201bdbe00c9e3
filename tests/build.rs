//! End-to-end tests of `skiff image build` (run as root): FROM scratch images made of a
//! static busybox from the context, RUN in skiff runtime containers, the build cache,
//! multi-stage builds, build args, `.dockerignore`, ADD of archives and bad input.
//!
//! Every test has its own temp data dir and runtime root; every command runs under
//! `timeout`; a guard unmounts anything left under the test's dir (a build killed by the
//! timeout mid-RUN could leave its overlay mounted).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mounts.rs"]
mod mounts;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const BUSYBOX: &str = "/bin/busybox";

/// A test's temp dirs: context, data dir, runtime root. Unmounts leftovers on drop.
struct Env {
    dir: TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        mounts::unmount_all_under(self.dir.path());
    }
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
    /// The image ID `Successfully built` printed.
    fn built(&self) -> String {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("Successfully built "))
            .unwrap_or_else(|| panic!("no image built:\n{}", self.stdout))
            .to_string()
    }
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["ctx", "data", "rt"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        fs::copy(BUSYBOX, dir.path().join("ctx/busybox")).unwrap();
        Env { dir }
    }
    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.ctx().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fn cmd(&self, args: &[&str]) -> Out {
        let out = Command::new("timeout")
            .arg("120")
            .arg(SKIFF)
            .args(args)
            .env("SKIFF_DATA_DIR", self.dir.path().join("data"))
            .env("SKIFF_RUNTIME_ROOT", self.dir.path().join("rt"))
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    fn build(&self, extra: &[&str]) -> Out {
        let ctx = self.ctx();
        let mut args = vec!["image", "build"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.cmd(&args)
    }
    fn run(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "--rm", image];
        args.extend_from_slice(cmd);
        self.cmd(&args).ok().stdout
    }
    fn inspect(&self, image: &str) -> Value {
        let out = self.cmd(&["image", "inspect", image]).ok();
        serde_json::from_str::<Value>(&out.stdout).unwrap()[0].clone()
    }
    fn tags(&self) -> String {
        self.cmd(&["image", "ls"]).ok().stdout
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

#[test]
fn scratch_busybox_run_env_workdir_cmd_then_skiff_run() {
    let e = Env::new();
    e.write("msg.txt", "hello from the context\n");
    e.write(
        "Dockerfile",
        &format!(
            "{BASE}ENV GREETING=hi NAME=skiff\nWORKDIR /app\nCOPY msg.txt .\n\
             RUN echo \"built $GREETING\" > out.txt && cat msg.txt && pwd\n\
             RUN cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > /ifaces\n\
             RUN rm /bin/ls && mkdir -p /gone && touch /gone/x\nRUN rm -rf /gone\n\
             EXPOSE 8080\nLABEL org.example.demo=yes\nUSER 1000:1000\nSTOPSIGNAL SIGTERM\n\
             VOLUME /data\nHEALTHCHECK --interval=30s CMD true\n\
             CMD [\"/bin/sh\", \"-c\", \"cat out.txt msg.txt /ifaces; echo $GREETING $NAME; pwd; id -u; ls /bin/ls || echo no-ls; ls /gone || echo no-gone\"]\n"
        ),
    );
    let out = e.build(&["-t", "demo:1"]).ok();
    assert!(out.stdout.contains("Step 4/"), "{}", out.stdout);
    assert!(
        out.stdout.contains("hello from the context"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Successfully tagged demo:1"));
    let got = e.run("demo:1", &[]);
    assert_eq!(
        got, "built hi\nhello from the context\nlo\nhi skiff\n/app\n1000\nno-ls\nno-gone\n",
        "RUN had a network namespace with only lo, whiteouts survived"
    );
    let cfg = &e.inspect("demo:1")["Config"];
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["User"], "1000:1000");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(cfg["Labels"]["org.example.demo"], "yes");
    assert!(cfg["Volumes"]["/data"].is_object());
    assert_eq!(cfg["StopSignal"], "SIGTERM");
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000u64);
    assert_eq!(e.inspect("demo:1")["Created"], "1970-01-01T00:00:00Z");
}

#[test]
fn multi_stage_copies_from_a_stage_and_target_stops_early() {
    let e = Env::new();
    e.write(
        "Dockerfile",
        &format!(
            "{BASE}RUN mkdir -p /out && echo made-in-builder > /out/artifact\n\
             FROM scratch AS final\nCOPY --from=0 /bin/busybox /bin/busybox\n\
             COPY --from=0 /out /result/\nCMD [\"/bin/busybox\", \"cat\", \"/result/artifact\"]\n"
        )
        .replacen("FROM scratch\n", "FROM scratch AS builder\n", 1)
        .replace("--from=0", "--from=builder"),
    );
    e.build(&["-t", "multi:1"]).ok();
    assert_eq!(e.run("multi:1", &[]), "made-in-builder\n");
    // The final stage has only its own two layers.
    assert_eq!(
        e.inspect("multi:1")["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    e.build(&["-t", "builder:1", "--target", "builder"]).ok();
    assert_eq!(
        e.run("builder:1", &["cat", "/out/artifact"]),
        "made-in-builder\n"
    );
    // FROM a local image by name.
    e.write(
        "Dockerfile",
        "FROM builder:1\nRUN echo on-top >> /out/artifact\nCMD [\"cat\", \"/out/artifact\"]\n",
    );
    e.build(&["-t", "child:1"]).ok();
    assert_eq!(e.run("child:1", &[]), "made-in-builder\non-top\n");
    // FROM an image by its ID.
    let id = e.inspect("builder:1")["Id"].as_str().unwrap().to_string();
    e.write(
        "Dockerfile",
        &format!("FROM {id}\nCMD [\"cat\", \"/out/artifact\"]\n"),
    );
    e.build(&["-t", "by-id:1"]).ok();
    assert_eq!(e.run("by-id:1", &[]), "made-in-builder\n");
}

#[test]
fn rebuild_uses_the_cache_and_a_changed_file_rebuilds_from_its_copy() {
    let e = Env::new();
    e.write("a.txt", "A1\n");
    e.write("b.txt", "B1\n");
    e.write(
        "Dockerfile",
        &format!("{BASE}COPY a.txt /a.txt\nRUN cat /a.txt > /a.copy\nCOPY b.txt /b.txt\nRUN cat /a.copy /b.txt > /all\nCMD [\"cat\", \"/all\"]\n"),
    );
    let first = e.build(&["-t", "c:1"]).ok();
    assert!(!first.stdout.contains("Using cache"), "{}", first.stdout);
    let second = e.build(&["-t", "c:1"]).ok();
    assert_eq!(
        second.stdout.matches("Using cache").count(),
        6,
        "{}",
        second.stdout
    );
    assert_eq!(first.built(), second.built(), "same context, same image");
    let m1 = e.inspect("c:1")["Manifest"]["Digest"].clone();

    e.write("b.txt", "B2\n");
    let third = e.build(&["-t", "c:1"]).ok();
    // COPY busybox, RUN --install, COPY a.txt, RUN cat are cached; COPY b.txt and
    // what follows are rebuilt.
    assert_eq!(
        third.stdout.matches("Using cache").count(),
        4,
        "{}",
        third.stdout
    );
    let after_b = third.stdout.split("COPY b.txt").nth(1).unwrap();
    assert!(!after_b.contains("Using cache"), "{}", third.stdout);
    assert_ne!(first.built(), third.built());
    assert_eq!(e.run("c:1", &[]), "A1\nB2\n");

    let fresh = e.build(&["-t", "c:2", "--no-cache"]).ok();
    assert!(!fresh.stdout.contains("Using cache"), "{}", fresh.stdout);
    assert_eq!(
        fresh.built(),
        third.built(),
        "no-cache rebuild is reproducible"
    );
    assert_ne!(e.inspect("c:2")["Manifest"]["Digest"], m1);
}

#[test]
fn build_args_and_defaults() {
    let e = Env::new();
    e.write(
        "Dockerfile",
        "ARG BASE=scratch\nFROM ${BASE}\nCOPY busybox /bin/busybox\n\
         ARG WHO=world\nARG COLOR\nENV GREETING=\"hello ${WHO}\"\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo $GREETING/$WHO/$COLOR > /greeting\"]\n\
         CMD [\"/bin/busybox\", \"cat\", \"/greeting\"]\n",
    );
    e.build(&["-t", "a:default"]).ok();
    assert_eq!(e.run("a:default", &[]), "hello world/world/\n");
    e.build(&[
        "-t",
        "a:set",
        "--build-arg",
        "WHO=skiff",
        "--build-arg",
        "COLOR=blue",
    ])
    .ok();
    assert_eq!(e.run("a:set", &[]), "hello skiff/skiff/blue\n");
    // Args reach RUN but never the image config.
    let env = e.inspect("a:set")["Config"]["Env"].to_string();
    assert!(!env.contains("COLOR"), "{env}");
}

#[test]
fn dockerignore_excludes_and_reincludes() {
    let e = Env::new();
    e.write("app/keep.txt", "keep\n");
    e.write("app/debug.log", "secret log\n");
    e.write("app/important.log", "important\n");
    e.write("app/tmp/x", "tmp\n");
    e.write(
        ".dockerignore",
        "# comment\n**/*.log\n!app/important.log\napp/tmp\n",
    );
    e.write(
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY app /app/\n\
         CMD [\"/bin/busybox\", \"find\", \"/app\"]\n",
    );
    e.build(&["-t", "ign:1"]).ok();
    let mut found: Vec<String> = e.run("ign:1", &[]).lines().map(String::from).collect();
    found.sort();
    assert_eq!(found, ["/app", "/app/important.log", "/app/keep.txt"]);
    // An excluded file is missing for COPY too.
    e.write("Dockerfile", "FROM scratch\nCOPY app/debug.log /\n");
    let out = e.build(&["-t", "ign:2"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
}

#[test]
fn add_extracts_local_tar_archives_and_copy_globs_and_chown() {
    let e = Env::new();
    // A gzip tarball with a nested file.
    let tgz = e.ctx().join("bundle.tar.gz");
    let f = fs::File::create(&tgz).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(8);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    b.append_data(&mut h, "inner/file.txt", &b"from tar"[..])
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
    e.write("one.conf", "1\n");
    e.write("two.conf", "2\n");
    e.write("three.txt", "3\n");
    e.write(
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nADD bundle.tar.gz /opt/\n\
         COPY --chown=123:456 *.conf /etc/app/\nCOPY bundle.tar.gz /copied/\n\
         CMD [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox cat /opt/inner/file.txt; echo; /bin/busybox ls /etc/app; /bin/busybox stat -c %u:%g /etc/app/one.conf; /bin/busybox ls /copied\"]\n",
    );
    e.build(&["-t", "add:1"]).ok();
    assert_eq!(
        e.run("add:1", &[]),
        "from tar\none.conf\ntwo.conf\n123:456\nbundle.tar.gz\n"
    );
}

#[test]
fn failing_run_reports_line_and_output_and_tags_nothing() {
    let e = Env::new();
    e.write(
        "Dockerfile",
        &format!(
            "{BASE}RUN echo this-is-the-output && echo to-stderr >&2 && exit 3\nCMD [\"true\"]\n"
        ),
    );
    let before = e.tags();
    let out = e.build(&["-t", "bad:1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("Dockerfile line 4"), "{}", out.stderr);
    assert!(out.stderr.contains("status 3"), "{}", out.stderr);
    assert!(out.stderr.contains("this-is-the-output"), "{}", out.stderr);
    assert!(out.stderr.contains("to-stderr"), "{}", out.stderr);
    assert_eq!(e.tags(), before);
    // Nothing is left mounted or half-made.
    let data = e.dir.path().join("data");
    assert_eq!(fs::read_dir(data.join("builds")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(data.join("images/snapshots/active"))
            .unwrap()
            .count(),
        0
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(path(e.dir.path())));
}

#[test]
fn unknown_instruction_and_missing_copy_source_give_the_line() {
    let e = Env::new();
    e.write("Dockerfile", "FROM scratch\n\n# comment\nFROBNICATE now\n");
    let out = e.build(&["-t", "x:1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("line 4"), "{}", out.stderr);
    assert!(out.stderr.contains("FROBNICATE"), "{}", out.stderr);

    e.write(
        "Dockerfile",
        "FROM scratch\nCOPY busybox /bin/\nCOPY nope.txt /\n",
    );
    let out = e.build(&["-t", "x:1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("line 3"), "{}", out.stderr);
    assert!(out.stderr.contains("nope.txt"), "{}", out.stderr);

    e.write(
        "Dockerfile",
        "FROM scratch\nADD https://example.invalid/x.tar.gz /\n",
    );
    let out = e.build(&["-t", "x:1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("line 2"), "{}", out.stderr);
    assert!(out.stderr.contains("remote URL"), "{}", out.stderr);

    e.write("Dockerfile", "FROM no-such-image:1\n");
    let out = e.build(&["-t", "x:1"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("line 1"), "{}", out.stderr);
    assert!(!e.tags().contains("x "), "nothing tagged");
}

/// Copies `examples/<name>` and the host's busybox into a fresh context.
fn example_context(e: &Env, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let dst = e.dir.path().join(name);
    let out = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -r {}: {out:?}", src.display());
    fs::copy(BUSYBOX, dst.join("busybox")).unwrap();
    dst
}

/// One HTTP request answered by busybox httpd in inetd mode (`-i`): `skiff run` has no
/// network yet, so the request goes through the server's stdin instead of a socket.
fn http_get(e: &Env, image: &str, path_: &str) -> String {
    let script = format!("printf 'GET {path_} HTTP/1.0\\r\\n\\r\\n' | httpd -i -h /www");
    e.cmd(&[
        "run",
        "--rm",
        "--hostname",
        "kubia-test",
        image,
        "sh",
        "-c",
        &script,
    ])
    .ok()
    .stdout
}

#[test]
fn kubia_examples_build_and_serve() {
    let e = Env::new();
    for (name, ready) in [
        ("kubia", "HTTP/1.1 200 OK"),
        ("kubia-unready", "HTTP/1.1 500"),
    ] {
        let ctx = example_context(&e, name);
        let tag = format!("{name}:test");
        e.cmd(&["image", "build", "-t", &tag, path(&ctx)]).ok();
        let page = http_get(&e, &tag, "/");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.ends_with("You've hit kubia-test\n"), "{page}");
        let r = http_get(&e, &tag, "/cgi-bin/ready");
        assert!(r.starts_with(ready), "{name}: {r}");
        let cfg = &e.inspect(&tag)["Config"];
        assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());
        assert_eq!(cfg["Cmd"][0], "httpd");
    }
}

#[test]
fn copy_follows_image_symlinks_and_keeps_existing_dirs() {
    let e = Env::new();
    e.write("a.txt", "a\n");
    e.write(
        "Dockerfile",
        &format!(
            "{BASE}RUN mkdir -p /usr/lib2 && ln -s usr/lib2 /lib2 && mkdir -m 1777 /scratch\n\
             COPY a.txt /lib2/\nCOPY a.txt /scratch/a.txt\n\
             CMD [\"sh\", \"-c\", \"readlink /lib2; cat /usr/lib2/a.txt; stat -c %a /scratch\"]\n"
        ),
    );
    e.build(&["-t", "links:1"]).ok();
    assert_eq!(e.run("links:1", &[]), "usr/lib2\na\n1777\n");
}
