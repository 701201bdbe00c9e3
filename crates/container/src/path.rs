//! Paths inside a container's root filesystem, resolved as the container would see them.
//!
//! [`secure_join`] follows the image's symlinks (absolute ones relative to the rootfs),
//! never lets `..` climb above the rootfs, and so never reaches the host's files through
//! a hostile image. Used for WORKDIR, `-w`, and the /etc/passwd and /etc/group lookups.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("resolving {path} inside the container: more than {MAX_SYMLINKS} symlinks (a loop?)")]
    SymlinkLoop { path: String },
    #[error("resolving {path} inside the container: {host} is not a directory")]
    NotADirectory { path: String, host: PathBuf },
    #[error("{op} {host} (resolving {path} inside the container)")]
    Io {
        op: &'static str,
        path: String,
        host: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves `path` inside `root` as the container would: symlinks (absolute ones
/// relative to `root`) are followed, `..` never climbs above `root`. With `create`,
/// missing directories are made (mode 0755 less the umask). Returns the host path; the
/// last component need not exist.
pub fn secure_join(root: &Path, path: &str, create: bool) -> Result<PathBuf, PathError> {
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .rev()
        .map(str::to_string)
        .collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    let io = |op, host: &Path| {
        let host = host.to_path_buf();
        move |source| PathError::Io {
            op,
            path: path.to_string(),
            host,
            source,
        }
    };
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let host = cur
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&c);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(PathError::SymlinkLoop {
                        path: path.to_string(),
                    });
                }
                let target = fs::read_link(&host).map_err(io("reading the symlink", &host))?;
                if target.is_absolute() {
                    cur.clear();
                }
                for comp in target.components().rev() {
                    match comp {
                        Component::Normal(s) => todo.push(s.to_string_lossy().into_owned()),
                        Component::ParentDir => todo.push("..".to_string()),
                        _ => {}
                    }
                }
            }
            Ok(m) => {
                if !m.is_dir() && !todo.is_empty() {
                    return Err(PathError::NotADirectory {
                        path: path.to_string(),
                        host,
                    });
                }
                cur.push(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                fs::create_dir(&host).map_err(io("creating", &host))?;
                cur.push(c);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => cur.push(c),
            Err(e) => return Err(io("stat", &host)(e)),
        }
    }
    Ok(cur.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn secure_join_stays_inside() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", r.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../..", r.join("up")).unwrap();
        std::os::unix::fs::symlink("/private/etc", r.join("etc")).unwrap();
        std::os::unix::fs::symlink("/loop", r.join("loop")).unwrap();
        fs::write(r.join("file"), "x").unwrap();
        assert_eq!(
            secure_join(r, "/lib/x", false).unwrap(),
            r.join("usr/lib/x")
        );
        assert_eq!(secure_join(r, "/up/tmp", false).unwrap(), r.join("tmp"));
        assert_eq!(secure_join(r, "/../../x", false).unwrap(), r.join("x"));
        // An absolute symlink is resolved inside the image, never on the host.
        assert_eq!(
            secure_join(r, "/etc/passwd", false).unwrap(),
            r.join("private/etc/passwd")
        );
        assert!(matches!(
            secure_join(r, "/loop/x", false),
            Err(PathError::SymlinkLoop { .. })
        ));
        assert!(matches!(
            secure_join(r, "/file/x", true),
            Err(PathError::NotADirectory { .. })
        ));
        let made = secure_join(r, "/up/work/dir", true).unwrap();
        assert_eq!(made, r.join("work/dir"));
        assert!(made.is_dir());
    }
}
