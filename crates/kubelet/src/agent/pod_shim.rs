//! The shim side of a pod container (`skiff container-shim pod`): the owner that records
//! its exit (code, time, OOM kill) for the agent in the container's directory.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::containers::{now_rfc3339, write_atomic, ContainerRecord, ExitRecord};
use super::hostfs::oom_killed;

/// The shim's owner for a pod container: records the exit for the agent.
pub struct PodOwner {
    pub dir: PathBuf,
    pub record: ContainerRecord,
    pub oom: bool,
}

impl skiff_container::shim::Owner for PodOwner {
    fn before_create(&mut self) -> Result<(), skiff_container::shim::BoxError> {
        Ok(())
    }
    fn created(&mut self, _pid: i32) -> Result<(), skiff_container::shim::BoxError> {
        Ok(())
    }
    fn started(&mut self) -> Result<(), skiff_container::shim::BoxError> {
        Ok(())
    }
    fn stopped(&mut self) {
        self.oom = oom_killed(&self.record.cgroup);
    }
    fn exited(&mut self, exit_code: i32) {
        let rootfs = self.dir.join("bundle").join("rootfs");
        if skiff_image::mount::unmount(&rootfs).is_err() {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        let rec = ExitRecord {
            exit_code,
            finished: now_rfc3339(),
            oom_killed: self.oom,
        };
        if let Ok(bytes) = serde_json::to_vec(&rec) {
            let _ = write_atomic(&self.dir.join("exit.json"), &bytes);
        }
    }
}

/// `skiff container-shim pod --dir DIR --runtime-root R`: the shim of one pod container
/// (its log rotated as `log_rotation` says).
pub fn serve_shim(
    dir: &Path,
    runtime_root: &Path,
    runtime_command: Vec<OsString>,
    log_rotation: Option<skiff_container::log::Rotation>,
) -> i32 {
    use std::os::fd::AsFd;
    let listener = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::os::unix::net::UnixListener::from(fd),
        Err(e) => {
            eprintln!("skiff pod shim: taking the task socket from stdin: {e}");
            return 1;
        }
    };
    if let Ok(null) = fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let _ = nix::unistd::setsid();
    let record: ContainerRecord = match fs::read(dir.join("record.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skiff pod shim: reading {}/record.json: {e}", dir.display());
            return 1;
        }
    };
    let opts = skiff_container::shim::ShimOptions {
        id: record.id.clone(),
        bundle: dir.join("bundle"),
        runtime_root: runtime_root.to_path_buf(),
        log_path: record.log_path.clone(),
        runtime_command,
        exit_when_stopped: true,
        stdin: record.stdin,
        stdin_once: record.stdin_once,
        log_rotation,
    };
    let owner = PodOwner {
        dir: dir.to_path_buf(),
        record,
        oom: false,
    };
    skiff_container::shim::serve(listener, opts, Box::new(owner))
}
