//! Who a container's process runs as: `USER`, `-u`, a pod's `runAsUser`, resolved
//! against the image's /etc/passwd and /etc/group, the way Docker resolves them.
//!
//! Accepted forms: empty (root), `name`, `uid`, `name:group`, `uid:gid`, `name:gid`,
//! `uid:group`. A numeric uid or gid need not exist in the image; a name must. When the
//! user has an /etc/passwd entry, its primary group (unless one is given) and home come
//! from there, and every /etc/group entry that lists the user by name adds a
//! supplementary group. Extra groups (`--group-add`, a pod's supplementalGroups) are
//! names or gids and are appended. The files are read through [`secure_join`], so a
//! symlinked /etc stays inside the image.

use std::path::Path;

use crate::path::{secure_join, PathError};

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, without the primary one, in file order, no duplicates.
    pub additional_gids: Vec<u32>,
    /// The home directory (for `HOME`); `/` when the user has no entry.
    pub home: String,
    /// The name from /etc/passwd, if the user has an entry.
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {user}: no matching entries in the image's /etc/passwd")]
    UnknownUser { user: String },
    #[error("unable to find group {group}: no matching entries in the image's /etc/group")]
    UnknownGroup { group: String },
    #[error("the image's {file}, line {line}: {field} {value:?} is not a number")]
    BadEntry {
        file: &'static str,
        line: usize,
        field: &'static str,
        value: String,
    },
    #[error("reading the image's {file}")]
    Read {
        file: &'static str,
        #[source]
        source: PathError,
    },
    #[error("reading the image's {file}")]
    Io {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Resolves `spec` against the files of the image at `rootfs`. A missing file counts as
/// empty (a scratch image knows only numeric ids).
pub fn resolve(rootfs: &Path, spec: &str, extra_groups: &[String]) -> Result<User, UserError> {
    let read = |file: &'static str| -> Result<String, UserError> {
        let p =
            secure_join(rootfs, file, false).map_err(|source| UserError::Read { file, source })?;
        match std::fs::read(&p) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(String::new())
            }
            Err(source) => Err(UserError::Io { file, source }),
        }
    };
    resolve_in(
        &read("/etc/passwd")?,
        &read("/etc/group")?,
        spec,
        extra_groups,
    )
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Entries of the 7-field /etc/passwd format; comments and short lines are skipped, as
/// libc does.
fn passwd_entries(text: &str) -> Result<Vec<Passwd<'_>>, UserError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split(':').collect();
        if l.starts_with('#') || f.len() < 7 {
            continue;
        }
        let num = |field, v: &str| {
            v.parse::<u32>().map_err(|_| UserError::BadEntry {
                file: "/etc/passwd",
                line: i + 1,
                field,
                value: v.to_string(),
            })
        };
        out.push(Passwd {
            name: f[0],
            uid: num("uid", f[2])?,
            gid: num("gid", f[3])?,
            home: f[5],
        });
    }
    Ok(out)
}

fn group_entries(text: &str) -> Result<Vec<Group<'_>>, UserError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let f: Vec<&str> = l.split(':').collect();
        if l.starts_with('#') || f.len() < 4 {
            continue;
        }
        out.push(Group {
            name: f[0],
            gid: f[2].parse().map_err(|_| UserError::BadEntry {
                file: "/etc/group",
                line: i + 1,
                field: "gid",
                value: f[2].to_string(),
            })?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        });
    }
    Ok(out)
}

/// [`resolve`] on the files' contents.
pub fn resolve_in(
    passwd: &str,
    group: &str,
    spec: &str,
    extra_groups: &[String],
) -> Result<User, UserError> {
    let users = passwd_entries(passwd)?;
    let groups = group_entries(group)?;
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let numeric = u.parse::<u32>().ok();
    // A name first (names may look like numbers), then a numeric uid.
    let entry = users
        .iter()
        .find(|e| e.name == u)
        .or_else(|| numeric.and_then(|n| users.iter().find(|e| e.uid == n)));
    let (uid, mut gid, name, home) = match (entry, numeric) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), e.home),
        (None, Some(n)) => (n, 0, None, "/"),
        (None, None) => {
            return Err(UserError::UnknownUser {
                user: u.to_string(),
            })
        }
    };
    let group_id = |g: &str| -> Result<u32, UserError> {
        groups
            .iter()
            .find(|e| e.name == g)
            .map(|e| e.gid)
            .or_else(|| g.parse().ok())
            .ok_or_else(|| UserError::UnknownGroup {
                group: g.to_string(),
            })
    };
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = group_id(g)?;
    }
    let mut additional_gids = Vec::new();
    if let Some(n) = name {
        for e in &groups {
            if e.members.contains(&n) && e.gid != gid && !additional_gids.contains(&e.gid) {
                additional_gids.push(e.gid);
            }
        }
    }
    for g in extra_groups {
        let id = group_id(g)?;
        if id != gid && !additional_gids.contains(&id) {
            additional_gids.push(id);
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() { "/" } else { home }.to_string(),
        name: name.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        app:x:1000:1001::/home/app:/bin/sh\n\
        nohome:x:1002:1002:::/bin/sh\n\
        short:x:7\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\nstaff:x:50:app\n\
        nohome:x:1002:\nother:x:1001:app\n";

    fn r(spec: &str) -> Result<User, UserError> {
        resolve_in(PASSWD, GROUP, spec, &[])
    }

    #[test]
    fn names_uids_and_groups_resolve_like_docker() {
        let u = r("app").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids, u.home.as_str()),
            (1000, 1001, vec![10, 50], "/home/app")
        );
        assert_eq!(u.name.as_deref(), Some("app"));
        // A numeric uid with an entry takes its primary group and home.
        let u = r("1000").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1001, "/home/app"));
        // name:group and uid:gid.
        let u = r("app:wheel").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids),
            (1000, 10, vec![50, 1001])
        );
        let u = r("1000:4000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 4000));
        let u = r("app:50").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        // Unknown numeric ids are fine; unknown names are not.
        let u = r("4242:4343").unwrap();
        assert_eq!(
            (u.uid, u.gid, u.home.as_str(), u.name),
            (4242, 4343, "/", None)
        );
        let u = r("4242").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        let u = r("").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        assert_eq!(r("nohome").unwrap().home, "/");
        let e = r("nobody").unwrap_err();
        assert!(matches!(e, UserError::UnknownUser { .. }));
        assert!(e.to_string().contains("unable to find user nobody"), "{e}");
        let e = r("app:nogroup").unwrap_err();
        assert!(
            e.to_string().contains("unable to find group nogroup"),
            "{e}"
        );
    }

    #[test]
    fn extra_groups_are_names_or_gids() {
        let u = resolve_in(
            PASSWD,
            GROUP,
            "app",
            &["root".into(), "77".into(), "wheel".into()],
        )
        .unwrap();
        assert_eq!(u.additional_gids, vec![10, 50, 0, 77]);
        assert!(matches!(
            resolve_in(PASSWD, GROUP, "app", &["ghosts".into()]),
            Err(UserError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn bad_entries_name_the_line() {
        let e = resolve_in("x:x:abc:0::/:/bin/sh\n", "", "x", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the image's /etc/passwd, line 1: uid \"abc\" is not a number"
        );
    }

    #[test]
    fn files_are_read_inside_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("private/etc")).unwrap();
        // /etc is an absolute symlink: followed inside the image, not on the host.
        std::os::unix::fs::symlink("/private/etc", root.join("etc")).unwrap();
        std::fs::write(root.join("private/etc/passwd"), PASSWD).unwrap();
        std::fs::write(root.join("private/etc/group"), GROUP).unwrap();
        let u = resolve(root, "app", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        // A scratch image: numeric ids only.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(empty.path(), "5:6", &[]).unwrap().gid, 6);
        assert!(resolve(empty.path(), "root", &[]).is_err());
    }
}
