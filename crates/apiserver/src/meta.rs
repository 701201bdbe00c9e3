//! Object metadata helpers: timestamps, uids, names, labels, and the storage key layout.

use std::time::{SystemTime, UNIX_EPOCH};

use skiff_api::kinds::Kind;

/// RFC 3339 in UTC with second precision, as Kubernetes' `metav1.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    skiff_api::table::format_time(i64::try_from(secs).unwrap_or(i64::MAX))
}

pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// Parses an RFC 3339 time (what [`rfc3339`] writes, or with a fraction or an offset).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let secs = u64::try_from(skiff_api::table::parse_time(s)?).ok()?;
    Some(UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The time source of the API server's time-dependent rules (graceful deletion
/// deadlines, Event expiry), injectable so tests can set the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
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

pub use skiff_api::object::{
    default_at, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_label_value,
    is_qualified_name, labels, metadata_mut, name, namespace, str_at,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56Z"), Some(t));
        assert_eq!(parse_rfc3339("2024-02-29T12:34:56.123456Z"), Some(t));
        assert_eq!(parse_rfc3339(&rfc3339(UNIX_EPOCH)), Some(UNIX_EPOCH));
        for bad in [
            "",
            "2024-02-29",
            "2024-13-01T00:00:00Z",
            "2024-02-29T12:34:56",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn names() {
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
