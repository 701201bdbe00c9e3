//! Cron schedules as CronJobs write them, parsed and stepped the way Kubernetes does
//! (its cron library's `ParseStandard`): five fields (minute, hour, day of month, month,
//! day of week) of `*`/`?`, numbers, names (`JAN`–`DEC`, `SUN`–`SAT`, any case), ranges
//! `a-b`, steps `/n` and lists `a,b`; or a descriptor (`@yearly`, `@annually`,
//! `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`, `@every <duration>`); an
//! optional `TZ=zone ` or `CRON_TZ=zone ` prefix (which the API server refuses in new
//! objects, but a stored one is honoured). Errors read as that library's, because the API
//! server returns them to users verbatim.
//!
//! As in that library, when both day fields are restricted (neither starts with `*`) a
//! day matches either; otherwise both must match. Times are stepped in the civil time of
//! the schedule's zone: a time in a daylight-saving gap runs at the same offset after the
//! gap, a repeated hour runs once.

use jiff::civil::{DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Why a schedule does not parse (messages as Kubernetes' cron library words them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("empty spec string")]
    Empty,
    #[error("expected exactly 5 fields, found {found}: [{}]", fields.join(" "))]
    FieldCount { found: usize, fields: Vec<String> },
    #[error("too many hyphens: {expr}")]
    TooManyHyphens { expr: String },
    #[error("too many slashes: {expr}")]
    TooManySlashes { expr: String },
    #[error("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: {why}")]
    NotANumber { expr: String, why: &'static str },
    #[error("negative number ({num}) not allowed: {expr}")]
    Negative { num: i64, expr: String },
    #[error("beginning of range ({start}) below minimum ({min}): {expr}")]
    BelowMinimum { start: u32, min: u32, expr: String },
    #[error("end of range ({end}) above maximum ({max}): {expr}")]
    AboveMaximum { end: u32, max: u32, expr: String },
    #[error("beginning of range ({start}) beyond end of range ({end}): {expr}")]
    Backwards { start: u32, end: u32, expr: String },
    #[error("step of range should be a positive number: {expr}")]
    ZeroStep { expr: String },
    #[error("unrecognized descriptor: {descriptor}")]
    UnknownDescriptor { descriptor: String },
    #[error("failed to parse duration {descriptor}: time: invalid duration {duration:?}")]
    BadDuration {
        descriptor: String,
        duration: String,
    },
    #[error("provided bad location {name}: {source}")]
    BadLocation {
        name: String,
        #[source]
        source: TimeZoneError,
    },
}

/// Why a time zone name is refused (as Go's `time.LoadLocation` words it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeZoneError {
    #[error("unknown time zone {0}")]
    Unknown(String),
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
    /// The zone of a `TZ=`/`CRON_TZ=` prefix.
    zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Spec(Spec),
    /// `@every`: a fixed interval in whole seconds (at least one).
    Every(i64),
}

/// One bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Whether the day-of-month or day-of-week field was `*` (then both must match).
    day_star: bool,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

/// Parses a CronJob schedule.
pub fn parse(spec: &str) -> Result<Schedule, CronError> {
    if spec.is_empty() {
        return Err(CronError::Empty);
    }
    let mut rest = spec;
    let mut zone = None;
    if let Some(tail) = spec
        .strip_prefix("TZ=")
        .or_else(|| spec.strip_prefix("CRON_TZ="))
    {
        let (name, after) = tail.split_once(' ').unwrap_or((tail, ""));
        load_location(name).map_err(|source| CronError::BadLocation {
            name: name.to_string(),
            source,
        })?;
        zone = Some(name.to_string());
        rest = after.trim();
    }
    let kind = if rest.starts_with('@') {
        descriptor(rest)?
    } else {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount {
                found: fields.len(),
                fields: fields.iter().map(|f| f.to_string()).collect(),
            });
        }
        let (minute, _) = field(fields[0], &MINUTES)?;
        let (hour, _) = field(fields[1], &HOURS)?;
        let (dom, dom_star) = field(fields[2], &DOM)?;
        let (month, _) = field(fields[3], &MONTHS)?;
        let (dow, dow_star) = field(fields[4], &DOW)?;
        Kind::Spec(Spec {
            minute,
            hour,
            dom,
            month,
            dow,
            day_star: dom_star || dow_star,
        })
    };
    Ok(Schedule { kind, zone })
}

fn all(b: &Bounds) -> u64 {
    bits(b.min, b.max, 1)
}

fn descriptor(d: &str) -> Result<Kind, CronError> {
    let spec = |minute, hour, dom, month, dow, day_star| {
        Kind::Spec(Spec {
            minute,
            hour,
            dom,
            month,
            dow,
            day_star,
        })
    };
    Ok(match d {
        "@yearly" | "@annually" => spec(1, 1, 1 << 1, 1 << 1, all(&DOW), true),
        "@monthly" => spec(1, 1, 1 << 1, all(&MONTHS), all(&DOW), true),
        "@weekly" => spec(1, 1, all(&DOM), all(&MONTHS), 1, true),
        "@daily" | "@midnight" => spec(1, 1, all(&DOM), all(&MONTHS), all(&DOW), true),
        "@hourly" => spec(1, all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW), true),
        _ => {
            let Some(text) = d.strip_prefix("@every ") else {
                return Err(CronError::UnknownDescriptor {
                    descriptor: d.to_string(),
                });
            };
            let nanos = go_duration(text).ok_or_else(|| CronError::BadDuration {
                descriptor: d.to_string(),
                duration: text.to_string(),
            })?;
            Kind::Every((nanos / 1_000_000_000).max(1) as i64)
        }
    })
}

/// A Go duration (`1h30m`, `90s`, `1.5h`) in nanoseconds; None when it does not parse or
/// is negative.
fn go_duration(s: &str) -> Option<u128> {
    if s == "0" {
        return Some(0);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * unit;
    }
    Some(total as u128)
}

/// The bits of one field and whether it was a plain `*` (or `?`).
fn field(text: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let mut out = 0;
    let mut star = false;
    for expr in text.split(',').filter(|e| !e.is_empty()) {
        let (bits, s) = range(expr, b)?;
        out |= bits;
        star |= s;
    }
    Ok((out, star))
}

fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut star) = if low_high[0] == "*" || low_high[0] == "?" {
        (b.min, b.max, true)
    } else {
        let start = int_or_name(low_high[0], b)?;
        let end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], b)?,
            _ => {
                return Err(CronError::TooManyHyphens {
                    expr: expr.to_string(),
                })
            }
        };
        (start, end, false)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = number(range_and_step[1])?;
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => {
            return Err(CronError::TooManySlashes {
                expr: expr.to_string(),
            })
        }
    };
    if start < b.min {
        return Err(CronError::BelowMinimum {
            start,
            min: b.min,
            expr: expr.to_string(),
        });
    }
    if end > b.max {
        return Err(CronError::AboveMaximum {
            end,
            max: b.max,
            expr: expr.to_string(),
        });
    }
    if start > end {
        return Err(CronError::Backwards {
            start,
            end,
            expr: expr.to_string(),
        });
    }
    if step == 0 {
        return Err(CronError::ZeroStep {
            expr: expr.to_string(),
        });
    }
    Ok((bits(start, end, step), star))
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u32, CronError> {
    let lower = expr.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    number(expr)
}

/// A non-negative number as Go's `strconv.Atoi` reads it.
fn number(expr: &str) -> Result<u32, CronError> {
    let digits = expr
        .strip_prefix('+')
        .or_else(|| expr.strip_prefix('-'))
        .unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(CronError::NotANumber {
            expr: expr.to_string(),
            why: "invalid syntax",
        });
    }
    let n: i64 = expr.parse().map_err(|_| CronError::NotANumber {
        expr: expr.to_string(),
        why: "value out of range",
    })?;
    if n < 0 {
        return Err(CronError::Negative {
            num: n,
            expr: expr.to_string(),
        });
    }
    // Anything this large is above every field's maximum anyway.
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn bits(start: u32, end: u32, step: u32) -> u64 {
    let mut out = 0u64;
    let mut i = start;
    while i <= end && i < 64 {
        out |= 1 << i;
        i += step;
    }
    out
}

/// The zone of a name as Go's `time.LoadLocation` resolves it: "" and "UTC" are UTC
/// ("Local" is UTC too here: the control plane keeps UTC); anything else from the
/// system's tz database.
pub fn load_location(name: &str) -> Result<TimeZone, TimeZoneError> {
    match name {
        "" | "UTC" | "Local" => Ok(TimeZone::UTC),
        _ => {
            // Names that could escape the database directory are never looked up.
            if name.starts_with('/') || name.split('/').any(|p| p == ".." || p.is_empty()) {
                return Err(TimeZoneError::Unknown(name.to_string()));
            }
            let tz = jiff::tz::db()
                .get(name)
                .map_err(|_| TimeZoneError::Unknown(name.to_string()))?;
            // The database is searched without regard to case; Go's (on Linux) is not.
            match tz.iana_name() {
                Some(found) if found != name => Err(TimeZoneError::Unknown(name.to_string())),
                _ => Ok(tz),
            }
        }
    }
}

impl Schedule {
    /// The zone of a `TZ=`/`CRON_TZ=` prefix, if the schedule had one.
    pub fn zone(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The first time of the schedule strictly after `after`, in zone `tz`; None when
    /// none comes within five years (`30 0 31 2 *`: February 31st never comes).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(secs) => Timestamp::from_second(after.as_second().checked_add(*secs)?).ok(),
            Kind::Spec(s) => s.next(after, tz),
        }
    }
}

impl Spec {
    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.dom & (1 << dt.day()) != 0;
        let dow = self.dow & (1 << weekday(dt.weekday())) != 0;
        if self.day_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let mut dt = next_minute(local.date().at(local.hour(), local.minute(), 0, 0))?;
        let limit = local.year().saturating_add(5);
        loop {
            if dt.year() > limit {
                return None;
            }
            if self.month & (1 << dt.month()) == 0 {
                dt = dt.date().last_of_month().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = next_hour(dt)?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = next_minute(dt)?;
                continue;
            }
            let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
            if ts > after {
                return Some(ts);
            }
            dt = next_minute(dt)?;
        }
    }
}

fn weekday(w: Weekday) -> i8 {
    w.to_sunday_zero_offset()
}

fn next_hour(dt: DateTime) -> Option<DateTime> {
    if dt.hour() == 23 {
        Some(dt.date().tomorrow().ok()?.at(0, 0, 0, 0))
    } else {
        Some(dt.date().at(dt.hour() + 1, 0, 0, 0))
    }
}

fn next_minute(dt: DateTime) -> Option<DateTime> {
    if dt.minute() == 59 {
        next_hour(dt)
    } else {
        Some(dt.date().at(dt.hour(), dt.minute() + 1, 0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str, zone: &str) -> String {
        let tz = load_location(zone).unwrap();
        parse(spec)
            .unwrap()
            .next(ts(after), &tz)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn errors_read_as_kubernetes_cron_library() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(e("* * *"), "expected exactly 5 fields, found 3: [* * *]");
        assert_eq!(e(""), "empty spec string");
        assert_eq!(e("60 * * * *"), "end of range (60) above maximum (59): 60");
        assert_eq!(
            e("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            e("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            e("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(e("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(e("1/2/3 * * * *"), "too many slashes: 1/2/3");
        assert_eq!(
            e("x * * * *"),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(e("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(e("@sometimes"), "unrecognized descriptor: @sometimes");
        assert_eq!(
            e("TZ=Mars/Phobos * * * * *"),
            "provided bad location Mars/Phobos: unknown time zone Mars/Phobos"
        );
    }

    #[test]
    fn names_ranges_steps_and_lists() {
        assert!(parse("0 0 * JAN-mar,Dec MON-FRI").is_ok());
        assert!(parse("*/15 9-17/2 1,15 * ?").is_ok());
        assert_eq!(parse("TZ=UTC 0 0 * * *").unwrap().zone(), Some("UTC"));
        assert_eq!(
            parse("CRON_TZ=Europe/Paris @daily").unwrap().zone(),
            Some("Europe/Paris")
        );
    }

    #[test]
    fn next_times() {
        let z = "UTC";
        assert_eq!(
            next("* * * * *", "2024-01-01T10:00:00Z", z),
            "2024-01-01T10:01:00Z"
        );
        assert_eq!(
            next("* * * * *", "2024-01-01T10:00:30Z", z),
            "2024-01-01T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T10:16:00Z", z),
            "2024-01-01T10:30:00Z"
        );
        assert_eq!(
            next("0 0 * * *", "2024-01-31T12:00:00Z", z),
            "2024-02-01T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2024-01-01T10:59:59Z", z),
            "2024-01-01T11:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2024-01-01T00:00:00Z", z),
            "2024-01-07T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "2024-01-15T00:00:00Z", z),
            "2024-02-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2024-01-15T00:00:00Z", z),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("0 12 29 2 *", "2023-03-01T00:00:00Z", z),
            "2024-02-29T12:00:00Z"
        );
        // Both day fields restricted: either matches (the 13th, or a Friday).
        assert_eq!(
            next("0 0 13 * 5", "2024-01-01T00:00:00Z", z),
            "2024-01-05T00:00:00Z"
        );
        // One of them `*`: both must match (Friday the 13th).
        assert_eq!(
            next("0 0 13 * */1", "2024-01-01T00:00:00Z", z),
            "2024-01-13T00:00:00Z"
        );
        assert_eq!(
            next("0 0 */1 * FRI", "2024-01-01T00:00:00Z", z),
            "2024-01-05T00:00:00Z"
        );
        assert_eq!(
            next("@every 90s", "2024-01-01T00:00:00.5Z", z),
            "2024-01-01T00:01:30Z"
        );
        // February 31st never comes.
        assert_eq!(next("0 0 31 2 *", "2024-01-01T00:00:00Z", z), "");
    }

    #[test]
    fn next_times_in_a_zone_across_daylight_saving() {
        let ny = "America/New_York";
        // 09:00 in New York in winter is 14:00 UTC, in summer 13:00 UTC.
        assert_eq!(
            next("0 9 * * *", "2024-01-10T00:00:00Z", ny),
            "2024-01-10T14:00:00Z"
        );
        assert_eq!(
            next("0 9 * * *", "2024-07-10T00:00:00Z", ny),
            "2024-07-10T13:00:00Z"
        );
        // 02:30 does not exist on 2024-03-10: it runs at 03:30 EDT (07:30 UTC).
        assert_eq!(
            next("30 2 * * *", "2024-03-10T05:00:00Z", ny),
            "2024-03-10T07:30:00Z"
        );
        // 01:30 happens twice on 2024-11-03: it runs once.
        assert_eq!(
            next("30 1 * * *", "2024-11-03T04:00:00Z", ny),
            "2024-11-03T05:30:00Z"
        );
        assert_eq!(
            next("30 1 * * *", "2024-11-03T05:30:00Z", ny),
            "2024-11-04T06:30:00Z"
        );
    }

    #[test]
    fn zones_load_or_are_unknown() {
        assert!(load_location("Europe/Berlin").is_ok());
        assert_eq!(load_location("").unwrap(), TimeZone::UTC);
        assert_eq!(
            load_location("Mars/Phobos").unwrap_err().to_string(),
            "unknown time zone Mars/Phobos"
        );
        assert!(load_location("../etc/passwd").is_err());
        assert!(load_location("europe/berlin").is_err());
        assert!(load_location("US/Eastern").is_ok());
    }
}
