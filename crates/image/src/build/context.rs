//! What COPY and ADD read: the build context (filtered by `.dockerignore`) or another
//! stage's root filesystem, with Docker's glob and destination rules.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::layer::{Data, Entries, Entry, Node};
use super::StepError;
use crate::manifest;
use crate::unpack::safe_relative;

/// `.dockerignore` patterns: the last pattern that matches a path decides, `!` re-includes.
#[derive(Debug, Default, Clone)]
pub struct Ignore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (neg, p) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let parts = p
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                (neg, parts)
            })
            .collect();
        Self { patterns }
    }

    /// Whether `rel` (a path relative to the context root) is excluded. A pattern that
    /// matches a parent directory excludes everything under it, as in Docker.
    pub fn excluded(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let mut out = false;
        for (neg, pat) in &self.patterns {
            let hit = (1..=parts.len()).any(|n| match_parts(pat, &parts[..n]));
            if hit {
                out = !neg;
            }
        }
        out
    }
}

/// Path components against pattern components, `**` matching any number of components.
fn match_parts(pat: &[String], parts: &[&str]) -> bool {
    match pat.first() {
        None => parts.is_empty(),
        Some(p) if p == "**" => (0..=parts.len()).any(|i| match_parts(&pat[1..], &parts[i..])),
        Some(p) => {
            !parts.is_empty() && glob_match(p, parts[0]) && match_parts(&pat[1..], &parts[1..])
        }
    }
}

/// Go's `filepath.Match` for one component: `*`, `?`, `[set]`, `[^set]`, `\` escapes.
pub fn glob_match(pat: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let Some(end) = p.iter().skip(1).position(|&x| x == ']') else {
                    return false;
                };
                let set = &p[1..end + 1];
                let (neg, set) = match set.first() {
                    Some('^') | Some('!') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= *c && *c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && m(&p[end + 2..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && m(&p[2..], &n[1..]),
            Some(x) => n.first() == Some(x) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StepError + 'a {
    move |source| StepError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where COPY reads from.
pub struct Source<'a> {
    pub root: &'a Path,
    /// Only for the build context.
    pub ignore: Option<&'a Ignore>,
}

/// Options of one COPY/ADD.
pub struct CopySpec<'a> {
    pub add: bool,
    pub sources: &'a [String],
    /// Absolute destination inside the image (a trailing `/` means a directory).
    pub dest: &'a str,
    pub owner: Option<(u64, u64)>,
    pub chmod: Option<u32>,
}

/// Expands one source pattern to the matching paths relative to `root` (sorted).
fn matches(src: &Source<'_>, pattern: &str) -> Result<Vec<String>, StepError> {
    let parts: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(StepError::OutsideContext {
            source_path: pattern.to_string(),
        });
    }
    let mut cur: Vec<String> = vec![String::new()];
    for part in parts {
        let wild = part.contains(['*', '?', '[']);
        let mut next = Vec::new();
        for c in &cur {
            let dir = src.root.join(c);
            let join = |n: &str| {
                if c.is_empty() {
                    n.to_string()
                } else {
                    format!("{c}/{n}")
                }
            };
            if !wild {
                let unescaped = part.replace('\\', "");
                if fs::symlink_metadata(dir.join(&unescaped)).is_ok() {
                    next.push(join(&unescaped));
                }
                continue;
            }
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| glob_match(part, n))
                .collect();
            names.sort();
            next.extend(names.iter().map(|n| join(n)));
        }
        cur = next;
    }
    Ok(cur
        .into_iter()
        .filter(|r| !src.ignore.is_some_and(|i| !r.is_empty() && i.excluded(r)))
        .collect())
}

/// Adds to `out` what `spec` copies from `src`, as Docker lays it out.
pub fn collect(src: &Source<'_>, spec: &CopySpec<'_>, out: &mut Entries) -> Result<(), StepError> {
    let mut found = Vec::new();
    for s in spec.sources {
        let m = matches(src, s)?;
        if m.is_empty() {
            return Err(StepError::SourceNotFound {
                source_path: s.clone(),
            });
        }
        found.extend(m);
    }
    let dest_is_dir = spec.dest.ends_with('/')
        || spec.dest.ends_with("/.")
        || spec.dest == "."
        || found.len() > 1;
    // Clean the destination lexically: `.` dropped, `..` never above the root.
    let mut parts: Vec<&str> = Vec::new();
    for c in spec.dest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let dest = parts.join("/");
    for rel in found {
        let host = src.root.join(&rel);
        // The named source itself is followed if it is a symlink; links inside copied
        // directories are kept as links.
        let md = fs::metadata(&host).map_err(io_err("stat", &host))?;
        let name = rel.rsplit('/').next().unwrap_or("").to_string();
        if md.is_dir() {
            out.insert_implicit_dir(&dest, dir_entry(spec, 0o755));
            copy_tree(src, &host, &rel, &dest, spec, out)?;
        } else if spec.add && is_tar(&host) {
            extract(&host, &dest, spec, out)?;
        } else {
            let target = if dest_is_dir || dest.is_empty() {
                format!("{dest}/{name}")
            } else {
                dest.clone()
            };
            out.insert(&target, file_entry(spec, &md, Node::File(Data::Path(host))));
        }
    }
    Ok(())
}

fn dir_entry(spec: &CopySpec<'_>, mode: u32) -> Entry {
    let (uid, gid) = spec.owner.unwrap_or((0, 0));
    Entry {
        node: Node::Dir,
        mode: spec.chmod.unwrap_or(mode),
        uid,
        gid,
    }
}

fn file_entry(spec: &CopySpec<'_>, md: &fs::Metadata, node: Node) -> Entry {
    let (uid, gid) = spec.owner.unwrap_or((0, 0));
    Entry {
        node,
        mode: spec.chmod.unwrap_or(md.mode() & 0o7777),
        uid,
        gid,
    }
}

fn copy_tree(
    src: &Source<'_>,
    dir: &Path,
    rel: &str,
    dest: &str,
    spec: &CopySpec<'_>,
    out: &mut Entries,
) -> Result<(), StepError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io_err("read", dir))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(io_err("read", dir))
        })
        .collect::<Result<_, _>>()?;
    names.sort();
    for n in names {
        let r = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        if src.ignore.is_some_and(|i| i.excluded(&r)) {
            continue;
        }
        let host = dir.join(&n);
        let d = format!("{dest}/{n}");
        let md = fs::symlink_metadata(&host).map_err(io_err("stat", &host))?;
        let ft = md.file_type();
        if ft.is_dir() {
            out.insert(&d, dir_entry(spec, md.mode() & 0o7777));
            copy_tree(src, &host, &r, &d, spec, out)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&host).map_err(io_err("read link", &host))?;
            let mut e = file_entry(spec, &md, Node::Symlink(t.to_string_lossy().into_owned()));
            e.mode = 0o777;
            out.insert(&d, e);
        } else if ft.is_file() {
            out.insert(&d, file_entry(spec, &md, Node::File(Data::Path(host))));
        }
        // Sockets, fifos and devices in a context are skipped, as Docker does.
    }
    Ok(())
}

/// Whether a file is a tar archive (after any gzip/zstd compression): ADD extracts those.
fn is_tar(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let Ok((_, mut r)) = manifest::decompress(f) else {
        return false;
    };
    let mut block = [0u8; 512];
    if r.read_exact(&mut block).is_err() {
        return false;
    }
    // A ustar/GNU header has "ustar" at offset 257 and a valid checksum.
    let h = tar::Header::from_byte_slice(&block);
    &block[257..262] == b"ustar"
        && h.cksum().is_ok_and(|c| {
            c == block
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32u32
                    } else {
                        u32::from(*b)
                    }
                })
                .sum::<u32>()
        })
}

/// ADD of a local archive: its entries land under `dest` (always a directory).
fn extract(
    file: &Path,
    dest: &str,
    spec: &CopySpec<'_>,
    out: &mut Entries,
) -> Result<(), StepError> {
    let bad = |source: std::io::Error| StepError::BadArchive {
        file: file.to_path_buf(),
        source,
    };
    let f = fs::File::open(file).map_err(io_err("open", file))?;
    let (_, r) = manifest::decompress(f).map_err(bad)?;
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let raw = e.path().map_err(bad)?.into_owned();
        let rel: PathBuf = safe_relative(&raw).map_err(|_| StepError::BadArchive {
            file: file.to_path_buf(),
            source: std::io::Error::other(format!(
                "entry {} escapes the destination",
                raw.display()
            )),
        })?;
        let rel = rel.to_string_lossy().trim_matches('/').to_string();
        if rel.is_empty() {
            continue;
        }
        let path = format!("{dest}/{rel}");
        let h = e.header();
        let mode = h.mode().map_err(bad)?;
        let (uid, gid) = match spec.owner {
            Some(o) => o,
            // Some tar writers leave the owner fields blank: root, as GNU tar reads them.
            None => (h.uid().unwrap_or(0), h.gid().unwrap_or(0)),
        };
        let node = match h.entry_type() {
            tar::EntryType::Directory => Node::Dir,
            tar::EntryType::Symlink => Node::Symlink(
                e.link_name()
                    .map_err(bad)?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            tar::EntryType::Link => {
                let l = e
                    .link_name()
                    .map_err(bad)?
                    .map(|l| l.to_string_lossy().trim_matches('/').to_string())
                    .unwrap_or_default();
                Node::Link(
                    format!("{}/{l}", dest.trim_matches('/'))
                        .trim_start_matches('/')
                        .to_string(),
                )
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).map_err(bad)?;
                Node::File(Data::Bytes(buf))
            }
            // Devices and fifos in an ADDed archive are skipped (Docker needs privileges
            // for them too); PAX/GNU metadata entries are folded in by the tar reader.
            _ => continue,
        };
        out.insert(
            &path,
            Entry {
                node,
                mode: spec.chmod.unwrap_or(mode),
                uid,
                gid,
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_ignores() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("f?[0-9]", "fo7"));
        assert!(!glob_match("[^a]x", "ax"));
        let i = Ignore::parse("# comment\n*.log\nsecret/\n!keep.log\n**/tmp\n");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(i.excluded("secret/x/y"));
        assert!(i.excluded("a/b/tmp/c"));
        assert!(!i.excluded("src/main.rs"));
    }
}
