//! CEL evaluation over JSON values (CEL's ints are JSON integers, doubles JSON floats).

use regex::Regex;
use serde_json::{Map, Number, Value};

use super::parse::Expr;

pub(super) struct Env {
    pub(super) vars: Vec<(String, Value)>,
}

impl Env {
    fn get(&self, name: &str) -> Option<&Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
}

type R = Result<Value, String>;

fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}
fn is_int(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_i64() || n.is_u64())
}

fn no_overload(name: &str) -> String {
    format!("no such overload: {name}")
}

fn truthy(v: R) -> Result<bool, String> {
    match v? {
        Value::Bool(b) => Ok(b),
        _ => Err(no_overload("logical operator")),
    }
}

fn eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => as_f64(a) == as_f64(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| eq(v, w)))
        }
        _ => a == b,
    }
}

pub(super) fn eval(e: &Expr, env: &Env) -> R {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ident(n) => env
            .get(n)
            .cloned()
            .ok_or_else(|| format!("undeclared reference to '{n}'")),
        Expr::List(items) => Ok(Value::Array(
            items
                .iter()
                .map(|i| eval(i, env))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let key = match eval(k, env)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(key, eval(v, env)?);
            }
            Ok(Value::Object(m))
        }
        Expr::Select(obj, field) => match eval(obj, env)? {
            Value::Object(m) => m
                .get(field)
                .cloned()
                .ok_or_else(|| format!("no such key: {field}")),
            _ => Err(format!("no such key: {field}")),
        },
        Expr::Index(obj, idx) => {
            let (o, i) = (eval(obj, env)?, eval(idx, env)?);
            match (&o, &i) {
                (Value::Array(a), Value::Number(n)) => n
                    .as_i64()
                    .and_then(|n| usize::try_from(n).ok())
                    .and_then(|n| a.get(n).cloned())
                    .ok_or_else(|| format!("index out of bounds: {n}")),
                (Value::Object(m), Value::String(k)) => {
                    m.get(k).cloned().ok_or_else(|| format!("no such key: {k}"))
                }
                _ => Err(no_overload("index")),
            }
        }
        Expr::Unary('!', x) => Ok(Value::Bool(!truthy(eval(x, env))?)),
        Expr::Unary(_, x) => match eval(x, env)? {
            Value::Number(n) if n.is_i64() => n
                .as_i64()
                .and_then(i64::checked_neg)
                .map(Value::from)
                .ok_or_else(|| "integer overflow".to_string()),
            Value::Number(n) => Ok(float(-n.as_f64().unwrap_or(0.0))),
            _ => Err(no_overload("-_")),
        },
        Expr::Cond(c, a, b) => {
            if truthy(eval(c, env))? {
                eval(a, env)
            } else {
                eval(b, env)
            }
        }
        Expr::Binary(op, a, b) => binary(op, a, b, env),
        Expr::Call(recv, name, args) => call(recv.as_deref(), name, args, env),
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn binary(op: &str, a: &Expr, b: &Expr, env: &Env) -> R {
    // Logical operators are commutative on errors, as in CEL: an error on one side is
    // absorbed when the other side decides the result.
    if op == "&&" || op == "||" {
        let decisive = op == "||";
        let l = truthy(eval(a, env));
        if l == Ok(decisive) {
            return Ok(Value::Bool(decisive));
        }
        let r = truthy(eval(b, env));
        return match (l, r) {
            (_, Ok(x)) if x == decisive => Ok(Value::Bool(decisive)),
            (Ok(_), Ok(x)) => Ok(Value::Bool(x)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    let (l, r) = (eval(a, env)?, eval(b, env)?);
    match op {
        "==" => Ok(Value::Bool(eq(&l, &r))),
        "!=" => Ok(Value::Bool(!eq(&l, &r))),
        "in" => match &r {
            Value::Array(items) => Ok(Value::Bool(items.iter().any(|x| eq(x, &l)))),
            Value::Object(m) => Ok(Value::Bool(l.as_str().is_some_and(|k| m.contains_key(k)))),
            _ => Err(no_overload("@in")),
        },
        "<" | "<=" | ">" | ">=" => {
            let ord = compare(&l, &r).ok_or_else(|| no_overload(op))?;
            use std::cmp::Ordering::*;
            Ok(Value::Bool(match op {
                "<" => ord == Less,
                "<=" => ord != Greater,
                ">" => ord == Greater,
                _ => ord != Less,
            }))
        }
        _ => arith(op, &l, &r),
    }
}

fn arith(op: &str, l: &Value, r: &Value) -> R {
    match (l, r) {
        (Value::String(x), Value::String(y)) if op == "+" => Ok(Value::String(format!("{x}{y}"))),
        (Value::Array(x), Value::Array(y)) if op == "+" => {
            Ok(Value::Array(x.iter().chain(y).cloned().collect()))
        }
        (Value::Number(_), Value::Number(_)) if is_int(l) && is_int(r) => {
            let (Some(x), Some(y)) = (l.as_i64(), r.as_i64()) else {
                return Err("integer overflow".into());
            };
            let v = match op {
                "+" => x.checked_add(y),
                "-" => x.checked_sub(y),
                "*" => x.checked_mul(y),
                "/" if y == 0 => return Err("division by zero".into()),
                "%" if y == 0 => return Err("modulus by zero".into()),
                "/" => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            v.map(Value::from).ok_or_else(|| "integer overflow".into())
        }
        (Value::Number(_), Value::Number(_)) => {
            let (x, y) = (l.as_f64().unwrap_or(0.0), r.as_f64().unwrap_or(0.0));
            Ok(float(match op {
                "+" => x + y,
                "-" => x - y,
                "*" => x * y,
                "/" => x / y,
                _ => return Err(no_overload("_%_")),
            }))
        }
        _ => Err(no_overload(op)),
    }
}

fn int_arg(vals: &[Value], i: usize) -> Result<i64, String> {
    vals.get(i)
        .filter(|v| is_int(v))
        .and_then(Value::as_i64)
        .ok_or_else(|| no_overload("int argument"))
}

/// CEL's ordering of two values of one comparable type.
fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => as_f64(a)?.partial_cmp(&as_f64(b)?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn size(v: &Value) -> R {
    match v {
        Value::String(s) => Ok(Value::from(s.chars().count() as i64)),
        Value::Array(a) => Ok(Value::from(a.len() as i64)),
        Value::Object(m) => Ok(Value::from(m.len() as i64)),
        _ => Err(no_overload("size")),
    }
}

fn call(recv: Option<&Expr>, name: &str, args: &[Expr], env: &Env) -> R {
    // Macros take an unevaluated expression.
    if name == "has" && recv.is_none() {
        let [Expr::Select(obj, field)] = args else {
            return Err("invalid argument to has() macro".into());
        };
        return match eval(obj, env)? {
            Value::Object(m) => Ok(Value::Bool(m.contains_key(field))),
            _ => Err(no_overload("has")),
        };
    }
    if let (Some(r), true) = (
        recv,
        matches!(name, "all" | "exists" | "exists_one" | "map" | "filter"),
    ) {
        let [Expr::Ident(var), body] = args else {
            return Err(format!("invalid arguments to {name}() macro"));
        };
        let target = eval(r, env)?;
        let elems: Vec<Value> = match target {
            Value::Array(a) => a,
            Value::Object(m) => m.keys().map(|k| Value::String(k.clone())).collect(),
            _ => return Err(no_overload(name)),
        };
        let mut inner = Env {
            vars: env.vars.clone(),
        };
        let mut results = Vec::new();
        for x in &elems {
            inner.vars.push((var.clone(), x.clone()));
            results.push(eval(body, &inner));
            inner.vars.pop();
        }
        return match name {
            "all" => {
                let mut err = None;
                for r in results {
                    match truthy(r) {
                        Ok(false) => return Ok(Value::Bool(false)),
                        Err(e) => err = Some(e),
                        _ => {}
                    }
                }
                err.map_or(Ok(Value::Bool(true)), Err)
            }
            "exists" => {
                let mut err = None;
                for r in results {
                    match truthy(r) {
                        Ok(true) => return Ok(Value::Bool(true)),
                        Err(e) => err = Some(e),
                        _ => {}
                    }
                }
                err.map_or(Ok(Value::Bool(false)), Err)
            }
            "exists_one" => {
                let mut n = 0;
                for r in results {
                    if truthy(r)? {
                        n += 1;
                    }
                }
                Ok(Value::Bool(n == 1))
            }
            "map" => Ok(Value::Array(results.into_iter().collect::<Result<_, _>>()?)),
            _ => {
                let mut out = Vec::new();
                for (x, r) in elems.into_iter().zip(results) {
                    if truthy(r)? {
                        out.push(x);
                    }
                }
                Ok(Value::Array(out))
            }
        };
    }
    let mut vals = Vec::new();
    if let Some(r) = recv {
        vals.push(eval(r, env)?);
    }
    for a in args {
        vals.push(eval(a, env)?);
    }
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
            let i = int_arg(&vals, 1)?;
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
            let start = int_arg(&vals, 1)?;
            let end = if vals.len() == 3 {
                int_arg(&vals, 2)?
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
                int_arg(&vals, 2)?
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
        ("string", 1) => Ok(Value::String(match &vals[0] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        _ => Err(format!("undeclared reference to '{name}'")),
    }
}
