//! Cleanup shared by the end-to-end tests that mount overlays under a temp dir.

use std::path::Path;

/// Detaches every mount at or below `root`, deepest first, so a failed test leaves none.
pub fn unmount_all_under(root: &Path) {
    let root = root.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|t| t.starts_with(&root))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for t in targets {
        let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
    }
}
