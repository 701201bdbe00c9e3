//! CEL's functions over evaluated arguments: conversions, string, list and regular
//! expression functions (kept apart from the evaluator, which recurses, so its stack
//! frames stay small).

use regex::Regex;
use serde_json::Value;

use super::eval::{arith, compare, eq, float, is_int, no_overload};

type R = Result<Value, String>;

fn int_arg(vals: &[Value], i: usize) -> Result<i64, String> {
    vals.get(i)
        .filter(|v| is_int(v))
        .and_then(Value::as_i64)
        .ok_or_else(|| no_overload("int argument"))
}

fn size(v: &Value) -> R {
    match v {
        Value::String(s) => Ok(Value::from(s.chars().count() as i64)),
        Value::Array(a) => Ok(Value::from(a.len() as i64)),
        Value::Object(m) => Ok(Value::from(m.len() as i64)),
        _ => Err(no_overload("size")),
    }
}

/// CEL's `string(double)`: the shortest form that reads back, integral values without
/// a fraction (`string(2.0) == '2'`), exponents from 1e21.
fn double_string(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        format!("{f}")
    }
}

/// The function `name` over its evaluated arguments (the receiver first).
pub(super) fn builtin(name: &str, vals: &[Value]) -> R {
    let str_arg = |i: usize| {
        vals.get(i)
            .and_then(Value::as_str)
            .ok_or_else(|| no_overload(name))
    };
    match (name, vals.len()) {
        ("size", 1) => size(&vals[0]),
        ("startsWith", 2) => Ok(Value::Bool(str_arg(0)?.starts_with(str_arg(1)?))),
        ("endsWith", 2) => Ok(Value::Bool(str_arg(0)?.ends_with(str_arg(1)?))),
        ("contains", 2) => Ok(Value::Bool(str_arg(0)?.contains(str_arg(1)?))),
        ("matches", 2) => {
            let re = Regex::new(str_arg(1)?).map_err(|e| e.to_string())?;
            Ok(Value::Bool(re.is_match(str_arg(0)?)))
        }
        ("lowerAscii", 1) => Ok(Value::String(str_arg(0)?.to_ascii_lowercase())),
        ("upperAscii", 1) => Ok(Value::String(str_arg(0)?.to_ascii_uppercase())),
        ("trim", 1) => Ok(Value::String(str_arg(0)?.trim().to_string())),
        ("dyn", 1) => Ok(vals[0].clone()),
        ("bool", 1) => match &vals[0] {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(t) => match t.as_str() {
                "true" | "True" | "TRUE" | "t" | "1" => Ok(Value::Bool(true)),
                "false" | "False" | "FALSE" | "f" | "0" => Ok(Value::Bool(false)),
                _ => Err("type conversion error from 'string' to 'bool'".to_string()),
            },
            _ => Err(no_overload("bool")),
        },
        ("charAt", 2) => {
            let chars: Vec<char> = str_arg(0)?.chars().collect();
            let i = int_arg(vals, 1)?;
            match usize::try_from(i).ok().filter(|i| *i <= chars.len()) {
                Some(i) => Ok(Value::String(
                    chars.get(i).map(|c| c.to_string()).unwrap_or_default(),
                )),
                None => Err(format!("index out of range: {i}")),
            }
        }
        ("indexOf" | "lastIndexOf", 2) if vals[0].is_string() => {
            let (hay, needle) = (str_arg(0)?, str_arg(1)?);
            let found = if name == "indexOf" {
                hay.find(needle)
            } else {
                hay.rfind(needle)
            };
            Ok(Value::from(
                found.map_or(-1, |b| hay[..b].chars().count() as i64),
            ))
        }
        ("indexOf" | "lastIndexOf", 2) => {
            let list = vals[0].as_array().ok_or_else(|| no_overload(name))?;
            let mut idx = list
                .iter()
                .enumerate()
                .filter(|(_, x)| eq(x, &vals[1]))
                .map(|(i, _)| i as i64);
            let found = if name == "indexOf" {
                idx.next()
            } else {
                idx.next_back()
            };
            Ok(Value::from(found.unwrap_or(-1)))
        }
        ("replace", 3) => Ok(Value::String(str_arg(0)?.replace(str_arg(1)?, str_arg(2)?))),
        ("split", 2) => Ok(Value::Array(
            str_arg(0)?
                .split(str_arg(1)?)
                .map(|p| Value::String(p.to_string()))
                .collect(),
        )),
        ("substring", 2 | 3) => {
            let chars: Vec<char> = str_arg(0)?.chars().collect();
            let start = int_arg(vals, 1)?;
            let end = if vals.len() == 3 {
                int_arg(vals, 2)?
            } else {
                chars.len() as i64
            };
            if start < 0 || end < start || end as usize > chars.len() {
                return Err(format!("index out of range: {start}, {end}"));
            }
            Ok(Value::String(
                chars[start as usize..end as usize].iter().collect(),
            ))
        }
        ("join", 1 | 2) => {
            let list = vals[0].as_array().ok_or_else(|| no_overload(name))?;
            let sep = if vals.len() == 2 { str_arg(1)? } else { "" };
            let parts: Vec<&str> = list
                .iter()
                .map(|x| x.as_str().ok_or_else(|| no_overload(name)))
                .collect::<Result<_, _>>()?;
            Ok(Value::String(parts.join(sep)))
        }
        ("isSorted", 1) => {
            let list = vals[0].as_array().ok_or_else(|| no_overload(name))?;
            let mut sorted = true;
            for w in list.windows(2) {
                sorted &= compare(&w[0], &w[1]).ok_or_else(|| no_overload(name))?
                    != std::cmp::Ordering::Greater;
            }
            Ok(Value::Bool(sorted))
        }
        ("sum", 1) => {
            let list = vals[0].as_array().ok_or_else(|| no_overload(name))?;
            list.iter()
                .try_fold(Value::from(0), |acc, x| arith("+", &acc, x))
        }
        ("min" | "max", 1) => {
            let list = vals[0].as_array().ok_or_else(|| no_overload(name))?;
            let mut best: Option<&Value> = None;
            for x in list {
                best = Some(match best {
                    None => x,
                    Some(b) => {
                        let ord = compare(x, b).ok_or_else(|| no_overload(name))?;
                        let better = if name == "min" {
                            ord == std::cmp::Ordering::Less
                        } else {
                            ord == std::cmp::Ordering::Greater
                        };
                        if better {
                            x
                        } else {
                            b
                        }
                    }
                });
            }
            best.cloned()
                .ok_or_else(|| format!("{name}(list) called on an empty list"))
        }
        ("find", 2) => {
            let re = Regex::new(str_arg(1)?).map_err(|e| e.to_string())?;
            Ok(Value::String(
                re.find(str_arg(0)?)
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
            ))
        }
        ("findAll", 2 | 3) => {
            let re = Regex::new(str_arg(1)?).map_err(|e| e.to_string())?;
            let limit = if vals.len() == 3 {
                int_arg(vals, 2)?
            } else {
                -1
            };
            let all = re
                .find_iter(str_arg(0)?)
                .map(|m| Value::String(m.as_str().to_string()));
            Ok(Value::Array(if limit < 0 {
                all.collect()
            } else {
                all.take(limit as usize).collect()
            }))
        }
        ("int", 1) => match &vals[0] {
            Value::Number(n) if is_int(&vals[0]) => n
                .as_i64()
                .map(Value::from)
                .ok_or_else(|| "integer overflow".into()),
            Value::Number(n) => Ok(Value::from(n.as_f64().unwrap_or(0.0).trunc() as i64)),
            Value::String(s) => s
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| format!("cannot convert {s:?} to int")),
            _ => Err(no_overload("int")),
        },
        ("uint", 1) => match &vals[0] {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Value::from)
                .ok_or_else(|| "uint out of range".into()),
            Value::String(s) => s
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| format!("cannot convert {s:?} to uint")),
            _ => Err(no_overload("uint")),
        },
        ("double", 1) => match &vals[0] {
            Value::Number(n) => Ok(float(n.as_f64().unwrap_or(0.0))),
            Value::String(s) => s
                .parse::<f64>()
                .map(float)
                .map_err(|_| format!("cannot convert {s:?} to double")),
            _ => Err(no_overload("double")),
        },
        ("string", 1) => match &vals[0] {
            Value::String(s) => Ok(Value::String(s.clone())),
            Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
                Ok(Value::String(double_string(n.as_f64().unwrap_or(0.0))))
            }
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            _ => Err(no_overload("string")),
        },
        _ => Err(format!("undeclared reference to '{name}'")),
    }
}
