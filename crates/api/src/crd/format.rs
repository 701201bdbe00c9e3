//! The string `format`s kube-openapi checks in custom objects (its strfmt registry);
//! formats it does not know (and numeric ones like `int32`) are not checked.

use base64::Engine;

/// Whether `s` is valid in `format`.
pub(crate) fn valid(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => date_time(s),
        "date" => date(s),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "uuid" => uuid(s, None),
        "uuid3" => uuid(s, Some('3')),
        "uuid4" => uuid(s, Some('4')),
        "uuid5" => uuid(s, Some('5')),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.parse::<ipnet::IpNet>().is_ok(),
        "mac" => mac(s),
        "hostname" => hostname(s),
        "email" => email(s),
        "duration" => duration(s),
        _ => true,
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn date(s: &str) -> bool {
    let p: Vec<&str> = s.split('-').collect();
    if p.len() != 3 || p[0].len() != 4 || p[1].len() != 2 || p[2].len() != 2 {
        return false;
    }
    if !p.iter().all(|x| digits(x)) {
        return false;
    }
    let (m, d): (u32, u32) = (p[1].parse().unwrap_or(0), p[2].parse().unwrap_or(0));
    (1..=12).contains(&m) && (1..=31).contains(&d)
}

fn date_time(s: &str) -> bool {
    let Some(t) = s.find(['T', 't', ' ']) else {
        return false;
    };
    if !date(&s[..t]) {
        return false;
    }
    let rest = &s[t + 1..];
    let (clock, zone) = if let Some(r) = rest.strip_suffix(['Z', 'z']) {
        (r, None)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        (&rest[..i], Some(&rest[i + 1..]))
    } else {
        return false;
    };
    if let Some(z) = zone {
        let zp: Vec<&str> = z.split(':').collect();
        if zp.len() != 2 || !zp.iter().all(|x| x.len() == 2 && digits(x)) {
            return false;
        }
    }
    let (hms, frac) = match clock.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (clock, None),
    };
    if frac.is_some_and(|f| !digits(f)) {
        return false;
    }
    let p: Vec<&str> = hms.split(':').collect();
    p.len() == 3
        && p.iter().all(|x| x.len() == 2 && digits(x))
        && p[0].parse::<u32>().is_ok_and(|h| h < 24)
        && p[1].parse::<u32>().is_ok_and(|m| m < 60)
        && p[2].parse::<u32>().is_ok_and(|s| s < 61)
}

fn uuid(s: &str, version: Option<char>) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
        && version.is_none_or(|v| groups[2].starts_with(v))
}

fn mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    matches!(parts.len(), 6 | 8 | 20)
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn email(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && hostname(domain),
        None => false,
    }
}

fn duration(s: &str) -> bool {
    let mut rest = s.trim();
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return false;
        }
        rest = rest[n..].trim_start();
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        let known = [
            "ns", "us", "µs", "ms", "s", "m", "h", "d", "w", "sec", "secs", "second", "seconds",
            "min", "mins", "minute", "minutes", "hr", "hrs", "hour", "hours", "day", "days", "wk",
            "wks", "week", "weeks",
        ];
        if !known.contains(&unit) {
            return false;
        }
        rest = rest[u..].trim_start();
    }
    true
}
