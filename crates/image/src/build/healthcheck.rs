//! HEALTHCHECK as Docker stores it in the image config: `Test` plus durations in
//! nanoseconds.

use serde_json::{json, Value};

use super::StepError;
use crate::dockerfile::{Command, Healthcheck};

/// The config's `Healthcheck` object.
pub(super) fn to_config(h: &Healthcheck) -> Result<Value, StepError> {
    let v = match h {
        Healthcheck::None => json!({"Test": ["NONE"]}),
        Healthcheck::Check { command, options } => {
            let test = match command {
                Command::Exec(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v.iter().cloned());
                    t
                }
                Command::Shell(c) => vec!["CMD-SHELL".to_string(), c.clone()],
            };
            let mut m = json!({"Test": test});
            for (k, v) in options {
                let field = match k.as_str() {
                    "interval" => "Interval",
                    "timeout" => "Timeout",
                    "start-period" => "StartPeriod",
                    "start-interval" => "StartInterval",
                    "retries" => "Retries",
                    _ => {
                        return Err(StepError::BadFlag {
                            flag: "HEALTHCHECK option",
                            value: k.clone(),
                        })
                    }
                };
                let n = if field == "Retries" {
                    v.parse::<u64>().ok()
                } else {
                    duration_ns(v)
                };
                let n = n.ok_or_else(|| StepError::BadFlag {
                    flag: "HEALTHCHECK option",
                    value: format!("--{k}={v}"),
                })?;
                m[field] = json!(n);
            }
            m
        }
    };
    Ok(v)
}

/// Go durations as Docker's HEALTHCHECK takes them (`30s`, `1m30s`, `500ms`) in ns.
pub(super) fn duration_ns(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mul = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num * mul;
        rest = &rest[u..];
    }
    Some(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("5"), None);
    }
}
