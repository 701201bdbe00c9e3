//! An error and its causes on one line, for logs and for messages that can only carry a
//! string (a Kubernetes `Status`, the runtime init's report to its parent, the CLI).

use std::error::Error;
use std::fmt;

/// Displays an error followed by its sources, `outer: cause: root cause`. A cause whose
/// text the line already ends with (a transparent wrapper, or an outer message that
/// prints its source itself) is said once.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&error_chain(self.0))
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `outer: cause: root cause`; see [`Chain`].
pub fn error_chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !cs.is_empty() && !s.ends_with(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chain_joins_causes_and_says_repeated_text_once() {
        let root = E("permission denied", None);
        let mid = E("opening /x", Some(Box::new(root)));
        let top = E("starting", Some(Box::new(mid)));
        assert_eq!(error_chain(&top), "starting: opening /x: permission denied");
        // A transparent wrapper prints its source's text: said once.
        let transparent = E("disk full", Some(Box::new(E("disk full", None))));
        assert_eq!(error_chain(&transparent), "disk full");
        assert_eq!(
            Chain(&E("a", Some(Box::new(E("b", None))))).to_string(),
            "a: b"
        );
    }
}
