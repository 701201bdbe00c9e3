//! Repository names and tags as the distribution spec constrains them.
//!
//! A valid name is also a safe relative path: every component starts and ends with
//! `[a-z0-9]`, so `..`, `.`, empty components and our own `_`-prefixed bookkeeping
//! directories can never be named by a client.

/// Longest repository name distribution accepts (it counts the host part too; we have none).
const MAX_NAME_LEN: usize = 255;

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`
pub fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    // Alternating runs: alphanumerics, then exactly one separator, then alphanumerics...
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return false;
    }
    let first_ok = b[0].is_ascii_alphanumeric() || b[0] == b'_';
    first_ok
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "library/busybox", "a.b-c__d/e_f", "a---b", "0/1/2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/../b",
            "..",
            "a/./b",
            "a//b",
            "/a",
            "a/",
            "a___b",
            "-a",
            "a-",
            "a.",
            "_x",
            "a/_layers",
            "a b",
            "a:b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(256)));
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_v1.2-rc"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag("a/b"));
        assert!(!valid_tag(&"a".repeat(129)));
    }
}
