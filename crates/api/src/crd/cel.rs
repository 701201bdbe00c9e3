//! CEL `x-kubernetes-validations` rules: a small interpreter for the subset CRDs
//! commonly use, over JSON values.
//!
//! Supported: literals (int, uint `1u`, double, string, bool, null, lists, maps), `self`
//! and `oldSelf`, field selection and indexing, `! - * / % + - < <= > >= == != in && ||
//! ?:`, `has()`, `size()`, `int() uint() double() string()`, the string functions
//! `startsWith endsWith contains matches lowerAscii upperAscii trim`, and the macros
//! `all exists exists_one map filter`. Not supported: other functions (timestamps,
//! durations, quantities, URLs …: a rule calling one is accepted but not evaluated),
//! optionals (`.?`, a syntax error here), and `messageExpression` (the static `message`
//! is used).

use regex::Regex;
use serde_json::{Map, Number, Value};

use super::{render, Cause};

/// One compiled rule of `x-kubernetes-validations`.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    src: String,
    expr: Expr,
    message: String,
    reason: String,
    field_path: String,
    transition: bool,
}

impl Rule {
    /// Compiles one `{rule, message, reason, fieldPath}` entry; `None` if it does not parse
    /// (the CRD's validation refuses such rules).
    pub(crate) fn compile(v: &Value) -> Option<Rule> {
        let src = v.get("rule")?.as_str()?.to_string();
        let expr = parse(&src).ok()?;
        check_functions(&expr).ok()?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(Rule {
            transition: expr.uses_old_self(),
            expr,
            src,
            message: s("message"),
            reason: s("reason"),
            field_path: s("fieldPath"),
        })
    }

    /// Evaluates the rule on `v` (schema type `ty`, at `path`); `old` is `oldSelf` on
    /// updates. Transition rules are skipped without an old value.
    pub(crate) fn check(
        &self,
        v: &Value,
        old: Option<&Value>,
        path: &str,
        ty: &str,
    ) -> Option<Cause> {
        if self.transition && old.is_none() {
            return None;
        }
        let env = Env {
            vars: vec![
                ("self".into(), v.clone()),
                ("oldSelf".into(), old.cloned().unwrap_or(Value::Null)),
            ],
        };
        let field = if self.field_path.is_empty() {
            path.to_string()
        } else if path.is_empty() || path == "<nil>" {
            self.field_path.trim_start_matches('.').to_string()
        } else {
            format!("{path}{}", self.field_path)
        };
        let why = match eval(&self.expr, &env) {
            Ok(Value::Bool(true)) => return None,
            Ok(Value::Bool(false)) => {
                if self.message.is_empty() {
                    format!("failed rule: {}", self.src.trim())
                } else {
                    self.message.clone()
                }
            }
            Ok(other) => format!(
                "rule result must be a bool, got {} evaluating rule: {}",
                render(&other),
                self.src.trim()
            ),
            Err(e) => format!("{e} evaluating rule: {}", self.src.trim()),
        };
        let ty = if ty.is_empty() { "object" } else { ty };
        Some(match self.reason.as_str() {
            "FieldValueForbidden" => Cause {
                reason: "FieldValueForbidden",
                field,
                message: format!("Forbidden: {why}"),
            },
            "FieldValueRequired" => Cause {
                reason: "FieldValueRequired",
                field,
                message: format!("Required value: {why}"),
            },
            // kube reports the schema type as the duplicate value, without the detail.
            "FieldValueDuplicate" => Cause {
                reason: "FieldValueDuplicate",
                field,
                message: format!("Duplicate value: {ty:?}"),
            },
            _ => Cause {
                reason: "FieldValueInvalid",
                field,
                message: format!("Invalid value: {ty:?}: {why}"),
            },
        })
    }
}

// ------------------------------------------------------------------ syntax

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Value),
    Ident(String),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    /// A function call: receiver (for `x.f()`), name, arguments.
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    Unary(char, Box<Expr>),
    Binary(String, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

impl Expr {
    fn uses_old_self(&self) -> bool {
        match self {
            Expr::Ident(n) => n == "oldSelf",
            Expr::Lit(_) => false,
            Expr::List(l) => l.iter().any(Expr::uses_old_self),
            Expr::Map(m) => m
                .iter()
                .any(|(k, v)| k.uses_old_self() || v.uses_old_self()),
            Expr::Select(e, _) | Expr::Unary(_, e) => e.uses_old_self(),
            Expr::Index(a, b) | Expr::Binary(_, a, b) => a.uses_old_self() || b.uses_old_self(),
            Expr::Call(r, _, args) => {
                r.as_ref().is_some_and(|r| r.uses_old_self())
                    || args.iter().any(Expr::uses_old_self)
            }
            Expr::Cond(a, b, c) => a.uses_old_self() || b.uses_old_self() || c.uses_old_self(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Value),
    Str(String),
    Ident(String),
    Op(&'static str),
}

const OPS: [&str; 24] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", "(",
    ")", "[", "]", ",", "{", "}",
];

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            let mut float = false;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (chars[i] == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit())
                    || chars[i] == 'e'
                    || chars[i] == 'E')
            {
                float |= !chars[i].is_ascii_digit();
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            if i < chars.len() && (chars[i] == 'u' || chars[i] == 'U') && !float {
                i += 1;
                let n: u64 = text.parse().map_err(|_| format!("bad number {text}"))?;
                out.push(Tok::Num(Value::from(n)));
            } else if float {
                let f: f64 = text.parse().map_err(|_| format!("bad number {text}"))?;
                out.push(Tok::Num(
                    Number::from_f64(f)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                ));
            } else {
                let n: i64 = text.parse().map_err(|_| format!("bad number {text}"))?;
                out.push(Tok::Num(Value::from(n)));
            }
        } else if c == '"' || c == '\'' {
            let (text, next) = lex_string(&chars, i, false)?;
            out.push(Tok::Str(text));
            i = next;
        } else if matches!(c, 'r' | 'R' | 'b' | 'B') && matches!(chars.get(i + 1), Some('"' | '\''))
        {
            let (text, next) = lex_string(&chars, i + 1, matches!(c, 'r' | 'R'))?;
            out.push(Tok::Str(text));
            i = next;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = OPS
                .iter()
                .find(|op| rest.starts_with(**op))
                .ok_or_else(|| format!("Syntax error: token recognition error at: '{c}'"))?;
            i += op.chars().count();
            out.push(Tok::Op(op));
        }
    }
    Ok(out)
}

/// A string literal at `chars[i]` (its opening quote), single or triple quoted; `raw`
/// strings keep backslashes. Returns the text and the index after the closing quote.
fn lex_string(chars: &[char], mut i: usize, raw: bool) -> Result<(String, usize), String> {
    let q = chars[i];
    let triple = chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q);
    i += if triple { 3 } else { 1 };
    let mut s = String::new();
    loop {
        let Some(&ch) = chars.get(i) else {
            return Err("Syntax error: unterminated string".into());
        };
        if ch == q && (!triple || (chars.get(i + 1) == Some(&q) && chars.get(i + 2) == Some(&q))) {
            return Ok((s, i + if triple { 3 } else { 1 }));
        }
        i += 1;
        if ch == '\\' && !raw {
            let Some(&e) = chars.get(i) else {
                return Err("Syntax error: unterminated string".into());
            };
            i += 1;
            s.push(match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
        } else {
            s.push(ch);
        }
    }
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

/// Parses a rule (checking only syntax and the supported subset).
pub(crate) fn parse(src: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
    };
    let e = p.ternary()?;
    if p.pos != p.toks.len() {
        return Err(format!("Syntax error: unexpected {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

const FUNCTIONS: [&str; 18] = [
    "has",
    "size",
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "lowerAscii",
    "upperAscii",
    "trim",
    "int",
    "uint",
    "double",
    "string",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
];

/// Whether every call is in the supported subset. Rules calling other functions (CEL's
/// timestamps, durations, quantities, URLs …) are accepted in CRDs but not evaluated.
fn check_functions(e: &Expr) -> Result<(), String> {
    match e {
        Expr::Lit(_) | Expr::Ident(_) => Ok(()),
        Expr::List(l) => l.iter().try_for_each(check_functions),
        Expr::Map(m) => m.iter().try_for_each(|(k, v)| {
            check_functions(k)?;
            check_functions(v)
        }),
        Expr::Select(x, _) | Expr::Unary(_, x) => check_functions(x),
        Expr::Index(a, b) | Expr::Binary(_, a, b) => {
            check_functions(a)?;
            check_functions(b)
        }
        Expr::Cond(a, b, c) => {
            check_functions(a)?;
            check_functions(b)?;
            check_functions(c)
        }
        Expr::Call(r, name, args) => {
            if !FUNCTIONS.contains(&name.as_str()) {
                return Err(format!("undeclared reference to '{name}'"));
            }
            if let Some(r) = r {
                check_functions(r)?;
            }
            args.iter().try_for_each(check_functions)
        }
    }
}

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }
    fn eat(&mut self, op: &str) -> bool {
        if self.peek_op(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.eat(op) {
            Ok(())
        } else {
            Err(format!("Syntax error: expected '{op}'"))
        }
    }
    fn ternary(&mut self) -> Result<Expr, String> {
        let c = self.binary(0)?;
        if self.eat("?") {
            let a = self.ternary()?;
            self.expect(":")?;
            let b = self.ternary()?;
            return Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
        }
        Ok(c)
    }
    fn binary(&mut self, level: usize) -> Result<Expr, String> {
        const LEVELS: [&[&str]; 5] = [
            &["||"],
            &["&&"],
            &["==", "!=", "<", "<=", ">", ">=", "in"],
            &["+", "-"],
            &["*", "/", "%"],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Op(o)) if LEVELS[level].contains(o) => o.to_string(),
                Some(Tok::Ident(i)) if i == "in" && level == 2 => "in".to_string(),
                _ => break,
            };
            self.pos += 1;
            let rhs = self.binary(level + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Unary('!', Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(Expr::Unary('-', Box::new(self.unary()?)));
        }
        self.member()
    }
    fn args(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(self.ternary()?);
            if self.eat(close) {
                return Ok(out);
            }
            self.expect(",")?;
        }
    }
    fn member(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                // `x.?f` (optional field selection) is parsed as a call of an
                // unsupported function: the rule is accepted but not evaluated.
                let optional = self.eat("?");
                let Some(Tok::Ident(name)) = self.toks.get(self.pos).cloned() else {
                    return Err("Syntax error: expected a field name".into());
                };
                self.pos += 1;
                if self.eat("(") {
                    let args = self.args(")")?;
                    e = Expr::Call(Some(Box::new(e)), name, args);
                } else if optional {
                    e = Expr::Call(
                        Some(Box::new(e)),
                        "_?._".into(),
                        vec![Expr::Lit(Value::String(name))],
                    );
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat("[") {
                let i = self.ternary()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(i));
            } else {
                return Ok(e);
            }
        }
    }
    fn primary(&mut self) -> Result<Expr, String> {
        let Some(t) = self.toks.get(self.pos).cloned() else {
            return Err("Syntax error: unexpected end of rule".into());
        };
        self.pos += 1;
        match t {
            Tok::Num(v) => Ok(Expr::Lit(v)),
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s))),
            Tok::Ident(id) => match id.as_str() {
                "true" => Ok(Expr::Lit(Value::Bool(true))),
                "false" => Ok(Expr::Lit(Value::Bool(false))),
                "null" => Ok(Expr::Lit(Value::Null)),
                _ if self.eat("(") => {
                    let args = self.args(")")?;
                    Ok(Expr::Call(None, id, args))
                }
                _ => Ok(Expr::Ident(id)),
            },
            Tok::Op("(") => {
                let e = self.ternary()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Op("[") => Ok(Expr::List(self.args("]")?)),
            Tok::Op("{") => {
                let mut entries = Vec::new();
                if !self.eat("}") {
                    loop {
                        let k = self.ternary()?;
                        self.expect(":")?;
                        let v = self.ternary()?;
                        entries.push((k, v));
                        if self.eat("}") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok(Expr::Map(entries))
            }
            other => Err(format!("Syntax error: unexpected {other:?}")),
        }
    }
}

// ------------------------------------------------------------------ evaluation

struct Env {
    vars: Vec<(String, Value)>,
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

fn eval(e: &Expr, env: &Env) -> R {
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
            let ord = match (&l, &r) {
                (Value::Number(_), Value::Number(_)) => as_f64(&l)
                    .zip(as_f64(&r))
                    .and_then(|(x, y)| x.partial_cmp(&y)),
                (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
                _ => None,
            }
            .ok_or_else(|| no_overload(op))?;
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
