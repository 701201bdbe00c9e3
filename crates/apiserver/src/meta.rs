//! Object metadata helpers: timestamps, uids, names, labels, and the storage key layout.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use skiff_api::kinds::Kind;

/// RFC 3339 in UTC with second precision, as Kubernetes' `metav1.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

pub fn now() -> String {
    rfc3339(SystemTime::now())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG only fails when the kernel has none; fall back to the clock then
    // (uids need uniqueness, not secrecy).
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = n[i % n.len()];
        }
    }
    b
}

/// A random version-4 UUID.
pub fn uid() -> String {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix of generateName (kube's alphabet: no vowels, no look-alikes).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Storage key prefix of a kind: `/registry/<group|core>/<plural>/`.
pub fn kind_prefix(kind: &Kind) -> String {
    let g = if kind.group.is_empty() {
        "core"
    } else {
        kind.group
    };
    format!("/registry/{g}/{}/", kind.plural)
}

/// Storage prefix for listing: all objects of the kind, or those of one namespace.
pub fn list_prefix(kind: &Kind, ns: Option<&str>) -> String {
    match ns {
        Some(ns) if kind.namespaced => format!("{}{ns}/", kind_prefix(kind)),
        _ => kind_prefix(kind),
    }
}

pub fn key(kind: &Kind, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) if kind.namespaced => format!("{}{ns}/{name}", kind_prefix(kind)),
        _ => format!("{}{name}", kind_prefix(kind)),
    }
}

pub fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

pub fn name(v: &Value) -> &str {
    str_at(v, "/metadata/name").unwrap_or_default()
}

pub fn namespace(v: &Value) -> Option<&str> {
    str_at(v, "/metadata/namespace")
}

pub fn labels(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `obj.metadata`, created if missing.
pub fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        // Just made an object above.
        _ => unreachable!("metadata is an object"),
    }
}

/// Sets `obj[path...]` to `value` unless a value is already there, creating objects on the way.
pub fn default_at(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, seg) in path.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        let last = i + 1 == path.len();
        let entry = match cur.as_object_mut() {
            Some(m) => m.entry(seg.to_string()).or_insert_with(|| {
                if last {
                    Value::Null
                } else {
                    Value::Object(Map::new())
                }
            }),
            None => return,
        };
        if last {
            if entry.is_null() {
                *entry = value;
            }
            return;
        }
        cur = entry;
    }
}

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// A qualified name (label/annotation key): optional DNS subdomain prefix and a name part
/// of at most 63 alphanumerics, '-', '_', '.' that starts and ends alphanumeric.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            return false;
        }
    }
    is_label_value(name) && !name.is_empty()
}

pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1035_label("1a"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("-x"));
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
