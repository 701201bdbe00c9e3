//! CEL evaluation over JSON values (CEL's ints are JSON integers, doubles JSON floats).

use std::cell::Cell;

use serde_json::{Map, Number, Value};

use super::functions::builtin;
use super::parse::{Expr, MACROS};

/// Where top-level names come from: fixed values (`self`, `object`, `params` …), the
/// composited `variables.*` (evaluated on first use) and the authorizer.
pub(super) trait Scope {
    /// A top-level variable.
    fn lookup(&self, name: &str) -> Option<&Value>;
    /// A composited variable, evaluated once (an error: it failed, or is not declared).
    fn variable(&self, name: &str) -> Result<&Value, String> {
        Err(format!("undeclared reference to 'variables.{name}'"))
    }
    /// Every composited variable, as a map (for `variables` used whole).
    fn variables(&self) -> Result<Value, String> {
        Err("undeclared reference to 'variables'".into())
    }
    /// The decision on one `authorizer` check (a builder with its `verb`).
    fn authorize(&self, _check: &Map<String, Value>) -> Result<Value, String> {
        Err("undeclared reference to 'authorizer'".into())
    }
    /// The limits shared by every expression evaluated in this scope.
    fn limits(&self) -> &Limits;
}

/// What one evaluation may spend: steps, and how deeply evaluation may recurse (the
/// parser bounds one expression; this bounds chains of composited variables too), so a
/// hostile policy can neither hang the server nor exhaust a thread's stack.
#[derive(Debug)]
pub(super) struct Limits {
    steps: Cell<u64>,
    depth: Cell<usize>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            steps: Cell::new(BUDGET),
            depth: Cell::new(0),
        }
    }
}

impl Limits {
    #[cfg(test)]
    pub(super) fn steps_left(&self) -> u64 {
        self.steps.get()
    }
}

/// How deeply evaluation may recurse (an expression is at most 100 levels deep).
const MAX_EVAL_DEPTH: usize = 160;

/// The names in force while evaluating: the scope's, shadowed by macro variables.
pub(super) struct Env<'a> {
    pub(super) root: &'a dyn Scope,
    pub(super) locals: Vec<(String, Value)>,
}

impl<'a> Env<'a> {
    pub(super) fn new(root: &'a dyn Scope) -> Env<'a> {
        Env {
            root,
            locals: Vec::new(),
        }
    }

    fn local(&self, name: &str) -> Option<&Value> {
        self.locals
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn get(&self, name: &str) -> Result<&Value, String> {
        self.local(name)
            .or_else(|| self.root.lookup(name))
            .ok_or_else(|| format!("undeclared reference to '{name}'"))
    }

    /// Spends `n` steps of the budget: evaluation stops with an error when it runs out,
    /// as kube stops an expression past its cost budget.
    fn spend(&self, n: u64) -> Result<(), String> {
        let b = &self.root.limits().steps;
        match b.get().checked_sub(n) {
            Some(left) => {
                b.set(left);
                Ok(())
            }
            None => {
                b.set(0);
                Err("operation cancelled: actual cost limit exceeded".into())
            }
        }
    }
}

/// Steps one evaluation may take (kube's per-policy runtime cost budget is of this order).
pub(super) const BUDGET: u64 = 10_000_000;

type R = Result<Value, String>;

/// Optionals are JSON objects with this single key (which no Kubernetes object has)
/// holding `[]` (none) or `[value]`.
const OPTIONAL: &str = "\u{0}optional";
/// An `authorizer` check being built: the request attributes set so far.
const AUTHZ: &str = "\u{0}authorizer";
/// The decision of an `authorizer` check.
const DECISION: &str = "\u{0}decision";

pub(super) fn optional(v: Option<Value>) -> Value {
    let mut m = Map::new();
    m.insert(OPTIONAL.into(), Value::Array(v.into_iter().collect()));
    Value::Object(m)
}

/// `Some(inner)` when `v` is an optional.
fn as_optional(v: &Value) -> Option<Option<&Value>> {
    marker(v, OPTIONAL)
        .and_then(Value::as_array)
        .map(|a| a.first())
}

fn marker<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(key),
        _ => None,
    }
}

fn marked(key: &str, fields: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert(key.into(), Value::Object(fields));
    Value::Object(m)
}

/// The `authorizer` variable: checks are built from it; `requestResource` starts from
/// the request's own resource (`request` holds group, resource, subresource, namespace,
/// name).
pub(super) fn authorizer(request: Map<String, Value>) -> Value {
    let mut fields = Map::new();
    fields.insert("requestResource".into(), Value::Object(request));
    marked(AUTHZ, fields)
}

/// The decision value an authorizer answers with.
pub(super) fn decision(allowed: bool, reason: &str) -> Value {
    let mut fields = Map::new();
    fields.insert("allowed".into(), Value::Bool(allowed));
    fields.insert("reason".into(), Value::String(reason.into()));
    marked(DECISION, fields)
}

pub(super) fn as_f64(v: &Value) -> Option<f64> {
    v.as_f64()
}
pub(super) fn is_int(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_i64() || n.is_u64())
}

pub(super) fn no_overload(name: &str) -> String {
    format!("no such overload: {name}")
}

fn truthy(v: R) -> Result<bool, String> {
    match v? {
        Value::Bool(b) => Ok(b),
        _ => Err(no_overload("logical operator")),
    }
}

pub(super) fn eq(a: &Value, b: &Value) -> bool {
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

fn select<'v>(base: &'v Value, field: &str) -> Result<&'v Value, String> {
    match base {
        Value::Object(m) => m.get(field).ok_or_else(|| format!("no such key: {field}")),
        _ => Err(format!("no such key: {field}")),
    }
}

fn index<'v>(base: &'v Value, idx: &Value) -> Result<&'v Value, String> {
    match (base, idx) {
        (Value::Array(a), Value::Number(n)) => n
            .as_i64()
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| a.get(n))
            .ok_or_else(|| format!("index out of bounds: {n}")),
        (Value::Object(m), Value::String(k)) => m.get(k).ok_or_else(|| format!("no such key: {k}")),
        _ => Err(no_overload("index")),
    }
}

/// Whether `e` names a stored value (a variable, or fields and entries below one): then
/// `Some` with a reference to it, so reading `object.spec.replicas` does not copy
/// `object`. None: `e` computes a new value (see [`eval`]).
fn place<'e>(e: &Expr, env: &'e Env<'_>) -> Option<Result<&'e Value, String>> {
    match e {
        Expr::Ident(n) if n == "variables" && env.local(n).is_none() => None,
        Expr::Ident(n) => Some(env.get(n)),
        Expr::Select(x, f) => {
            if matches!(&**x, Expr::Ident(n) if n == "variables" && env.local(n).is_none()) {
                return Some(env.root.variable(f));
            }
            let base = match place(x, env)? {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            if base.as_object().is_some_and(|m| m.len() == 1)
                && (as_optional(base).is_some() || marker(base, AUTHZ).is_some())
            {
                return None;
            }
            Some(select(base, f))
        }
        Expr::Index(x, i) => {
            let base = match place(x, env)? {
                Ok(b) => b,
                Err(e) => return Some(Err(e)),
            };
            if as_optional(base).is_some() {
                return None;
            }
            Some(eval(i, env).and_then(|idx| index(base, &idx)))
        }
        _ => None,
    }
}

/// Runs `f` on the value of `e`, by reference when `e` names a stored value.
fn with_value<T>(
    e: &Expr,
    env: &Env<'_>,
    f: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<T, String> {
    match place(e, env) {
        Some(v) => f(v?),
        None => f(&eval(e, env)?),
    }
}

pub(super) fn eval(e: &Expr, env: &Env<'_>) -> R {
    env.spend(1)?;
    let depth = &env.root.limits().depth;
    let d = depth.get();
    if d >= MAX_EVAL_DEPTH {
        return Err("expression nests too deeply to evaluate".into());
    }
    depth.set(d + 1);
    let r = eval_inner(e, env);
    depth.set(d);
    r
}

fn eval_inner(e: &Expr, env: &Env<'_>) -> R {
    if let Some(v) = place(e, env) {
        return v.cloned();
    }
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Ident(n) if n == "variables" && env.local(n).is_none() => env.root.variables(),
        Expr::Ident(n) => env.get(n).cloned(),
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
        Expr::Select(x, f) => {
            if matches!(&**x, Expr::Ident(n) if n == "variables" && env.local(n).is_none()) {
                return env.root.variable(f).cloned();
            }
            let base = eval(x, env)?;
            if let Some(inner) = as_optional(&base) {
                // Selecting below an optional keeps it optional.
                return match inner {
                    None => Ok(optional(None)),
                    Some(v) => Ok(optional(Some(select(v, f)?.clone()))),
                };
            }
            if let Some(fields) = marker(&base, AUTHZ) {
                return authz_field(fields, f);
            }
            select(&base, f).cloned()
        }
        Expr::Index(x, i) => {
            let base = eval(x, env)?;
            let idx = eval(i, env)?;
            match as_optional(&base) {
                Some(None) => Ok(optional(None)),
                Some(Some(v)) => Ok(optional(Some(index(v, &idx)?.clone()))),
                None => index(&base, &idx).cloned(),
            }
        }
        Expr::OptSelect(x, f) => {
            let base = eval(x, env)?;
            let target = match as_optional(&base) {
                Some(None) => return Ok(optional(None)),
                Some(Some(v)) => v,
                None => &base,
            };
            match target {
                Value::Object(m) => Ok(optional(m.get(f).cloned())),
                Value::Null => Ok(optional(None)),
                _ => Err(format!("no such key: {f}")),
            }
        }
        Expr::OptIndex(x, i) => {
            let base = eval(x, env)?;
            let idx = eval(i, env)?;
            let target = match as_optional(&base) {
                Some(None) => return Ok(optional(None)),
                Some(Some(v)) => v,
                None => &base,
            };
            match (target, &idx) {
                (Value::Object(_), Value::String(_)) | (Value::Array(_), Value::Number(_)) => {
                    Ok(optional(index(target, &idx).ok().cloned()))
                }
                (Value::Null, _) => Ok(optional(None)),
                _ => Err(no_overload("_[?_]")),
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

pub(super) fn float(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

fn binary(op: &str, a: &Expr, b: &Expr, env: &Env<'_>) -> R {
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
        _ => {
            if op == "+" {
                // Concatenation costs its length, so no expression builds huge strings.
                let len = |v: &Value| match v {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.len(),
                    _ => 0,
                };
                env.spend(((len(&l) + len(&r)) / 8) as u64)?;
            }
            arith(op, &l, &r)
        }
    }
}

pub(super) fn arith(op: &str, l: &Value, r: &Value) -> R {
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

/// CEL's ordering of two values of one comparable type.
pub(super) fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => as_f64(a)?.partial_cmp(&as_f64(b)?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A macro (`all exists exists_one map filter`) over a list's elements or a map's keys.
fn macro_call(r: &Expr, name: &str, args: &[Expr], env: &Env<'_>) -> R {
    let (var, body, transform) = match args {
        [Expr::Ident(v), b] => (v, b, None),
        [Expr::Ident(v), b, t] if name == "map" => (v, b, Some(t)),
        _ => return Err(format!("invalid arguments to {name}() macro")),
    };
    with_value(r, env, |target| {
        let elems: Box<dyn Iterator<Item = Value> + '_> = match target {
            Value::Array(a) => Box::new(a.iter().cloned()),
            Value::Object(m) => Box::new(m.keys().map(|k| Value::String(k.clone()))),
            _ => return Err(no_overload(name)),
        };
        let mut inner = Env {
            root: env.root,
            locals: env.locals.clone(),
        };
        let mut run = |x: Value, e: &Expr| {
            inner.locals.push((var.clone(), x));
            let r = eval(e, &inner);
            inner.locals.pop();
            r
        };
        match name {
            // An error is absorbed when another element decides the result, as CEL's
            // logical operators absorb them.
            "all" | "exists" => {
                let decisive = name == "exists";
                let mut err = None;
                for x in elems {
                    match truthy(run(x, body)) {
                        Ok(b) if b == decisive => return Ok(Value::Bool(decisive)),
                        Ok(_) => {}
                        Err(e) => err = Some(e),
                    }
                }
                err.map_or(Ok(Value::Bool(!decisive)), Err)
            }
            "exists_one" => {
                let mut n = 0;
                for x in elems {
                    if truthy(run(x, body))? {
                        n += 1;
                    }
                }
                Ok(Value::Bool(n == 1))
            }
            "map" => {
                let mut out = Vec::new();
                for x in elems {
                    match transform {
                        // map(x, filter, transform)
                        Some(t) => {
                            if truthy(run(x.clone(), body))? {
                                out.push(run(x, t)?);
                            }
                        }
                        None => out.push(run(x, body)?),
                    }
                }
                Ok(Value::Array(out))
            }
            _ => {
                let mut out = Vec::new();
                for x in elems {
                    if truthy(run(x.clone(), body))? {
                        out.push(x);
                    }
                }
                Ok(Value::Array(out))
            }
        }
    })
}

/// CEL's zero values (`optional.ofNonZeroValue` makes none of them).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// `authorizer.requestResource`.
fn authz_field(fields: &Value, f: &str) -> R {
    match (f, fields.get("requestResource")) {
        ("requestResource", Some(Value::Object(req))) => {
            let mut check = req.clone();
            check.insert("kind".into(), Value::String("resource".into()));
            if let Some(u) = fields.get("user") {
                check.insert("user".into(), u.clone());
            }
            Ok(marked(AUTHZ, check))
        }
        _ => Err(format!("no such key: {f}")),
    }
}

/// A method of an `authorizer` check being built.
fn authz_method(fields: &Value, name: &str, args: &[Value], env: &Env<'_>) -> R {
    let Value::Object(fields) = fields else {
        return Err(no_overload(name));
    };
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("root");
    let arg = |i: usize| {
        args.get(i)
            .and_then(Value::as_str)
            .map(|s| Value::String(s.to_string()))
            .ok_or_else(|| no_overload(name))
    };
    let mut next = Map::new();
    if let Some(u) = fields.get("user") {
        next.insert("user".into(), u.clone());
    }
    let with = |mut m: Map<String, Value>, kind: &str, pairs: Vec<(&str, Value)>| {
        m.insert("kind".into(), Value::String(kind.into()));
        for (k, v) in pairs {
            m.insert(k.into(), v);
        }
        Ok(marked(AUTHZ, m))
    };
    match (kind, name, args.len()) {
        ("root", "path", 1) => with(next, "path", vec![("path", arg(0)?)]),
        ("root", "group", 1) => with(next, "group", vec![("group", arg(0)?)]),
        ("root", "serviceAccount", 2) => {
            let (ns, sa) = (arg(0)?, arg(1)?);
            let (ns, sa) = (ns.as_str().unwrap_or(""), sa.as_str().unwrap_or(""));
            let mut root = fields.clone();
            root.insert(
                "user".into(),
                serde_json::json!({
                    "username": format!("system:serviceaccount:{ns}:{sa}"),
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                }),
            );
            Ok(marked(AUTHZ, root))
        }
        ("group", "resource", 1) => {
            let mut m = fields.clone();
            m.insert("resource".into(), arg(0)?);
            with(m, "resource", vec![])
        }
        ("resource", "subresource" | "namespace" | "name", 1) => {
            let mut m = fields.clone();
            m.insert(name.into(), arg(0)?);
            Ok(marked(AUTHZ, m))
        }
        ("path" | "resource", "check", 1) => {
            let mut m = fields.clone();
            m.insert("verb".into(), arg(0)?);
            env.root.authorize(&m)
        }
        _ => Err(no_overload(name)),
    }
}

fn call(recv: Option<&Expr>, name: &str, args: &[Expr], env: &Env<'_>) -> R {
    // Macros take an unevaluated expression.
    if name == "has" && recv.is_none() {
        let [Expr::Select(obj, field)] = args else {
            return Err("invalid argument to has() macro".into());
        };
        return with_value(obj, env, |v| match v {
            Value::Object(m) => Ok(Value::Bool(m.contains_key(field))),
            _ => Err(no_overload("has")),
        });
    }
    if let Some(r) = recv {
        if MACROS.contains(&name) {
            return macro_call(r, name, args, env);
        }
        if matches!(r, Expr::Ident(n) if n == "optional" && env.get(n).is_err()) {
            let vals = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<Vec<_>, _>>()?;
            return match (name, vals.as_slice()) {
                ("of", [v]) => Ok(optional(Some(v.clone()))),
                ("none", []) => Ok(optional(None)),
                ("ofNonZeroValue", [v]) => Ok(optional((!is_zero(v)).then(|| v.clone()))),
                _ => Err(format!("undeclared reference to 'optional.{name}'")),
            };
        }
    }
    let mut vals = Vec::new();
    if let Some(r) = recv {
        vals.push(eval(r, env)?);
    }
    for a in args {
        vals.push(eval(a, env)?);
    }
    if recv.is_some() {
        if let Some(inner) = as_optional(&vals[0]) {
            return match (name, &vals[1..]) {
                ("hasValue", []) => Ok(Value::Bool(inner.is_some())),
                ("value", []) => inner
                    .cloned()
                    .ok_or_else(|| "optional.none() dereference".to_string()),
                ("orValue", [d]) => Ok(inner.cloned().unwrap_or_else(|| d.clone())),
                ("or", [other]) if as_optional(other).is_some() => Ok(match inner {
                    Some(_) => vals[0].clone(),
                    None => other.clone(),
                }),
                _ => Err(no_overload(name)),
            };
        }
        if let Some(fields) = marker(&vals[0], AUTHZ) {
            return authz_method(fields, name, &vals[1..], env);
        }
        if let Some(d) = marker(&vals[0], DECISION) {
            return match (name, vals.len()) {
                ("allowed", 1) => Ok(d.get("allowed").cloned().unwrap_or(Value::Bool(false))),
                ("reason", 1) => Ok(d
                    .get("reason")
                    .cloned()
                    .unwrap_or(Value::String(String::new()))),
                ("errored", 1) => Ok(Value::Bool(false)),
                ("error", 1) => Ok(Value::String(String::new())),
                _ => Err(no_overload(name)),
            };
        }
    }
    builtin(name, &vals)
}
