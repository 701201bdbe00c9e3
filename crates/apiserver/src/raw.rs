//! Stored objects as bytes: the store holds each object's JSON without
//! `metadata.resourceVersion` (it is the key's mod revision, known only after the write).
//! Lists and watch events splice the revision into the stored bytes instead of decoding
//! and re-encoding every object, which is most of the cost of a large LIST and most of the
//! memory of the watch cache.
//!
//! The splice needs the position just inside the top-level `"metadata":{`. [`scan`] finds
//! it with a small byte scanner that also walks the whole document's structure, so a
//! truncated or foreign value (another program's data under `/registry/`) is refused and
//! callers fall back to decoding, which reports it.

use serde_json::Value;
use skiff_store::Revision;

/// Where a resourceVersion goes into a stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Splice {
    /// Byte offset just after the `{` that opens the top-level `metadata` object.
    pub at: usize,
    /// `metadata` has no members, so no comma follows the inserted one.
    pub empty: bool,
    /// Where the top-level `apiVersion` string's contents are (empty range if none), so
    /// lists can tell objects stored in another version of their kind without decoding.
    pub api_version: (usize, usize),
}

impl Splice {
    /// The object's `apiVersion` as stored (raw, escapes not resolved).
    pub fn api_version<'a>(&self, json: &'a [u8]) -> &'a [u8] {
        json.get(self.api_version.0..self.api_version.1)
            .unwrap_or_default()
    }
}

/// Finds where `metadata.resourceVersion` can be inserted into `json`: `None` if `json`
/// is not a well-formed object, has no `metadata` object, already carries a
/// resourceVersion, or spells the keys with escapes (callers then decode it).
pub fn scan(json: &[u8]) -> Option<Splice> {
    std::str::from_utf8(json).ok()?;
    let mut s = Scanner { b: json, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let mut found = None;
    let mut api_version = (0, 0);
    let mut first = true;
    loop {
        s.ws();
        if s.peek()? == b'}' {
            s.i += 1;
            break;
        }
        if !first {
            s.expect(b',')?;
            s.ws();
        }
        first = false;
        let key = s.string()?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        if key == b"metadata" {
            if found.is_some() || s.peek()? != b'{' {
                return None;
            }
            s.i += 1;
            let at = s.i;
            let (empty, has_rv) = s.members(1)?;
            if has_rv {
                return None;
            }
            found = Some((at, empty));
        } else if key == b"apiVersion" && s.peek()? == b'"' {
            let start = s.i + 1;
            let v = s.string()?;
            api_version = (start, start + v.len());
        } else {
            s.value(1)?;
        }
    }
    s.ws();
    if s.i != json.len() {
        return None;
    }
    found.map(|(at, empty)| Splice {
        at,
        empty,
        api_version,
    })
}

/// Appends `json` to `out` with `metadata.resourceVersion` = `rv` inserted at `sp`.
pub fn write_spliced(out: &mut Vec<u8>, json: &[u8], sp: Splice, rv: Revision) {
    out.extend_from_slice(&json[..sp.at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.push(b'"');
    if !sp.empty {
        out.push(b',');
    }
    out.extend_from_slice(&json[sp.at..]);
}

/// Appends the stored object `json` with its resourceVersion to `out`: spliced when the
/// bytes allow it, otherwise decoded and re-encoded. False (and nothing appended) if the
/// value is not a JSON object.
pub fn write_with_rv(out: &mut Vec<u8>, json: &[u8], rv: Revision) -> bool {
    match scan(json) {
        Some(sp) => {
            write_spliced(out, json, sp, rv);
            true
        }
        None => match decode(json, rv) {
            Some(v) => serde_json::to_writer(out, &v).is_ok(),
            None => false,
        },
    }
}

/// The stored object `json` with its resourceVersion, as bytes.
pub fn with_rv(json: &[u8], rv: Revision) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len() + 40);
    write_with_rv(&mut out, json, rv).then_some(out)
}

/// Decodes a stored object and sets its resourceVersion. `None` if it is not a JSON object.
pub fn decode(json: &[u8], rv: Revision) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(json).ok()?;
    let m = v.as_object_mut()?;
    if let Some(Value::Object(md)) = m.get_mut("metadata") {
        md.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    Some(v)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

/// Containers nested deeper than this are refused (serde_json's own limit is 128).
const MAX_DEPTH: usize = 128;

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string's raw contents (escapes left as they are); the scanner stops after it.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => {
                    let s = &self.b[start..self.i];
                    self.i += 1;
                    return Some(s);
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let end = self.i.checked_add(5)?;
                            if !self
                                .b
                                .get(self.i + 1..end)?
                                .iter()
                                .all(u8::is_ascii_hexdigit)
                            {
                                return None;
                            }
                            self.i = end;
                        }
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
    }

    /// Members of an object whose `{` was consumed: (no members, has resourceVersion).
    fn members(&mut self, depth: usize) -> Option<(bool, bool)> {
        let mut empty = true;
        let mut has_rv = false;
        loop {
            self.ws();
            if self.peek()? == b'}' {
                self.i += 1;
                return Some((empty, has_rv));
            }
            if !empty {
                self.expect(b',')?;
                self.ws();
            }
            empty = false;
            if self.string()? == b"resourceVersion" {
                has_rv = true;
            }
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.value(depth)?;
        }
    }

    /// Skips one value, checking JSON's grammar on the way, so whatever is spliced is
    /// valid JSON even if the stored bytes were not written by us.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.members(depth + 1).map(|_| ())
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                let mut first = true;
                loop {
                    self.ws();
                    if self.peek()? == b']' {
                        self.i += 1;
                        return Some(());
                    }
                    if !first {
                        self.expect(b',')?;
                        self.ws();
                    }
                    first = false;
                    self.value(depth + 1)?;
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.need_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.need_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn need_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn spliced(v: &Value, rv: Revision) -> Value {
        let bytes = v.to_string().into_bytes();
        let out = with_rv(&bytes, rv).expect("an object");
        serde_json::from_slice(&out).expect("valid JSON after the splice")
    }

    #[test]
    fn splices_the_revision_into_metadata() {
        let v = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"containers": [{"name": "c"}]}});
        let out = spliced(&v, 42);
        let mut want = v.clone();
        want["metadata"]["resourceVersion"] = json!("42");
        assert_eq!(out, want);
    }

    #[test]
    fn empty_metadata_gets_no_trailing_comma() {
        let b = br#" { "kind" : "X" , "metadata" : { } } "#;
        let sp = scan(b).expect("splice point");
        assert!(sp.empty);
        assert_eq!(sp.api_version(b), b"");
        let b2 = br#"{"apiVersion":"autoscaling/v2","metadata":{"a":1}}"#;
        assert_eq!(scan(b2).expect("splice").api_version(b2), b"autoscaling/v2");
        let out = with_rv(b, 7).expect("object");
        let v: Value = serde_json::from_slice(&out).expect("valid");
        assert_eq!(v["metadata"], json!({"resourceVersion": "7"}));
    }

    #[test]
    fn falls_back_when_the_splice_is_not_possible() {
        // A stored resourceVersion is replaced, not duplicated.
        let b = br#"{"metadata":{"name":"a","resourceVersion":"3"}}"#;
        assert_eq!(scan(b), None);
        let v: Value = serde_json::from_slice(&with_rv(b, 9).expect("object")).expect("valid");
        assert_eq!(v["metadata"]["resourceVersion"], json!("9"));
        // No metadata: nothing to set, the object stays as it is.
        let v: Value =
            serde_json::from_slice(&with_rv(br#"{"kind":"X"}"#, 9).expect("obj")).expect("valid");
        assert_eq!(v, json!({"kind": "X"}));
        // Truncated, foreign or not an object: refused.
        for bad in [
            &br#"{"metadata":{"name":"a"}"#[..],
            b"k8s\x00\x0a\x09",
            b"[1,2]",
            b"",
            br#"{"metadata":{"name":"a"}} x"#,
            br#"{"metadata":{"a":[}}}"#,
        ] {
            assert_eq!(scan(bad), None, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(with_rv(bad, 1), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn keys_with_escapes_and_tricky_strings() {
        let v = json!({"a": "}{][\"\\", "metadata": {"n\"ame": "x,}", "annotations": {"k": "{\"metadata\":{}}"}}, "z": [1, {"metadata": 2}]});
        let out = spliced(&v, 5);
        assert_eq!(out["metadata"]["resourceVersion"], json!("5"));
        assert_eq!(out["z"], v["z"]);
        assert_eq!(out["a"], v["a"]);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Splicing agrees with decoding for any object, pretty-printed or compact.
        #[test]
        fn splice_matches_decode(md in prop::collection::btree_map("[a-zA-Z\"\\\\{}]{0,8}", arb_json(), 0..4),
                                 rest in arb_json(), rv in 1i64..1_000_000, pretty in any::<bool>()) {
            let mut obj = json!({"kind": "X", "rest": rest});
            obj["metadata"] = Value::Object(md.into_iter().collect());
            let bytes = if pretty { serde_json::to_vec_pretty(&obj) } else { serde_json::to_vec(&obj) }.expect("encode");
            let out = with_rv(&bytes, rv).expect("an object");
            let got: Value = serde_json::from_slice(&out).expect("valid JSON");
            prop_assert_eq!(got, decode(&bytes, rv).expect("decodes"));
        }

        /// Arbitrary bytes never panic, and whatever is spliced is valid JSON.
        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Some(out) = with_rv(&b, 3) {
                prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
            }
        }
    }
}
