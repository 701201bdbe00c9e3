//! A full disk: writes fail with a clear error, nothing acknowledged is lost, and a write
//! that failed is not visible, then or after the operator frees space and reopens.
//! Runs on a small tmpfs that the test mounts (as root) and unmounts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use skiff_store::*;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let opts = CString::new(format!("size={size}")).unwrap();
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        (r == 0).then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: unmounting the tmpfs this guard mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_cleanly_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_mnt) = Tmpfs::mount(tmp.path(), "24m") else {
        panic!(
            "mounting a tmpfs needs root: {}",
            std::io::Error::last_os_error()
        );
    };
    // Room the operator can free later: enough to fold the log into the store.
    let ballast = tmp.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 16 << 20]).unwrap();
    let data = tmp.path().join("data");
    let mut acked = BTreeMap::new();
    let failed_key;
    {
        let s = EmbeddedStore::open(&data, &OpenOptions::default()).unwrap();
        let mut i = 0;
        loop {
            let key = format!("/fill/{i:06}");
            match s.create(&key, vec![b'v'; 16 << 10], 0).await {
                Ok(rev) => {
                    acked.insert(key, rev);
                }
                Err(e) => {
                    assert_eq!(e.category(), Category::Unavailable, "{e}");
                    let msg = format!("{e}: {:?}", std::error::Error::source(&e));
                    assert!(
                        msg.contains("No space left") || msg.contains("28"),
                        "the error should say the disk is full: {msg}"
                    );
                    failed_key = key;
                    break;
                }
            }
            i += 1;
            assert!(i < 100_000, "the tmpfs never filled up");
        }
        assert!(!acked.is_empty());
        assert!(s
            .get(&failed_key, None)
            .await
            .map(|g| g.kv)
            .unwrap_or(None)
            .is_none());
        // Reads of acknowledged data still work on the full disk.
        let (k, rev) = acked.iter().next_back().unwrap();
        if let Ok(g) = s.get(k, None).await {
            assert_eq!(g.kv.unwrap().mod_revision, *rev);
        }
    }
    // The operator frees space; everything acknowledged is there, the failed write is not.
    std::fs::remove_file(&ballast).unwrap();
    let s = EmbeddedStore::open(&data, &OpenOptions::default()).unwrap();
    for (k, rev) in &acked {
        let kv = s
            .get(k, None)
            .await
            .unwrap()
            .kv
            .unwrap_or_else(|| panic!("acknowledged {k} lost"));
        assert_eq!(kv.mod_revision, *rev);
    }
    assert!(s.get(&failed_key, None).await.unwrap().kv.is_none());
    let last = *acked.values().max().unwrap();
    assert!(s.current_revision().await.unwrap() >= last);
    assert_eq!(
        s.put("/after", vec![], 0).await.unwrap(),
        s.current_revision().await.unwrap()
    );
}
