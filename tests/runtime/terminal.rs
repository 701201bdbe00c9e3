//! `process.terminal`: the pty master goes to `--console-socket` (runc's protocol: one
//! SCM_RIGHTS message on a unix stream socket), or is proxied by a foreground `run`.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::json;

use crate::common::{unique_name, Bundle, Rt, CMD_TIMEOUT};

/// A console socket: a listener that accepts one connection and takes the fd it carries.
struct ConsoleSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    handle: Option<JoinHandle<Result<File, String>>>,
}

impl ConsoleSocket {
    fn listen() -> ConsoleSocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).expect("bind console socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let handle = std::thread::spawn(move || -> Result<File, String> {
            let deadline = Instant::now() + CMD_TIMEOUT;
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(format!("accept on console socket: {e}")),
                }
            };
            stream.set_nonblocking(false).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(CMD_TIMEOUT))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4096];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([RawFd; 1]);
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(|e| format!("recvmsg: {e}"))?;
            for c in msg.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    if let [fd] = fds[..] {
                        // SAFETY: the kernel just installed this descriptor in our table for
                        // this message; nothing else owns it.
                        return Ok(unsafe { File::from_raw_fd(fd) });
                    }
                }
            }
            Err("console socket message carried no descriptor".into())
        });
        ConsoleSocket {
            _dir: dir,
            path,
            handle: Some(handle),
        }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// The pty master the runtime sent.
    fn master(&mut self) -> File {
        let h = self.handle.take().expect("master taken once");
        h.join()
            .expect("console socket thread")
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Reads a pty master on a thread; `until` waits (bounded) for text to appear.
struct PtyReader {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl PtyReader {
    fn new(master: &File) -> PtyReader {
        let mut m = master.try_clone().expect("dup master");
        let (tx, rx) = mpsc::channel();
        // Ends when the slave side closes (EIO) or the receiver is gone.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        PtyReader {
            rx,
            seen: String::new(),
        }
    }

    #[track_caller]
    fn until(&mut self, needle: &str) -> &str {
        let deadline = Instant::now() + CMD_TIMEOUT;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!(
                    "{needle:?} never appeared on the terminal; got {:?}",
                    self.seen
                ),
            }
        }
        &self.seen
    }
}

#[test]
fn console_socket_receives_the_pty_master() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["sh", "-c", "tty; echo hello; read x; echo got-$x; exit 3"]);
    b.set("/process/terminal", json!(true));
    let id = unique_name();
    let mut sock = ConsoleSocket::listen();
    rt.lifecycle(&["create", "--console-socket", sock.path()], &b, &id)
        .ok();
    let mut master = sock.master();
    let mut reader = PtyReader::new(&master);
    rt.cmd(&["start", &id]).ok();
    let seen = reader.until("hello\r\n");
    assert!(seen.starts_with("/dev/pts/0\r\nhello\r\n"), "{seen:?}");
    // Input typed on the master reaches the program.
    master.write_all(b"bye\n").expect("write to pty master");
    reader.until("got-bye\r\n");
    let st = rt.wait_stopped(&id);
    assert_eq!(st["exitStatus"], 3, "{st}");
    rt.cmd(&["delete", &id]).ok();
}

#[test]
fn exec_with_terminal_and_console_socket() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["sleep", "60"]);
    let id = unique_name();
    rt.start_detached(&b, &id);
    let mut sock = ConsoleSocket::listen();
    rt.cmd(&[
        "exec",
        "-d",
        "-t",
        "--console-socket",
        sock.path(),
        &id,
        "sh",
        "-c",
        "tty; read x; echo got-$x",
    ])
    .ok();
    let mut master = sock.master();
    let mut reader = PtyReader::new(&master);
    assert!(
        reader.until("\r\n").starts_with("/dev/pts/"),
        "{:?}",
        reader.seen
    );
    master.write_all(b"ok\n").expect("write to pty master");
    reader.until("got-ok\r\n");
    rt.cmd(&["delete", "--force", &id]).ok();
}

#[test]
fn foreground_run_proxies_the_terminal() {
    let rt = Rt::skiff();
    let mut b = Bundle::new(&["sh", "-c", "tty; echo on-the-pty"]);
    b.set("/process/terminal", json!(true));
    let out = rt.run(&b, &unique_name()).ok();
    assert!(out.stdout.contains("/dev/pts/0"), "{out:#?}");
    assert!(out.stdout.contains("on-the-pty"), "{out:#?}");
}

#[test]
fn console_socket_without_terminal_is_refused() {
    let rt = Rt::skiff();
    let b = Bundle::new(&["true"]);
    let id = unique_name();
    let sock = ConsoleSocket::listen();
    rt.lifecycle(&["create", "--console-socket", sock.path()], &b, &id)
        .fails_with(1, &["terminal"]);
    assert!(!rt.state_dir(&id).exists());
}
