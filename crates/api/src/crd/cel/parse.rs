//! CEL syntax: a lexer and a recursive-descent parser for the supported subset.

use serde_json::{Number, Value};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Value),
    Ident(String),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Select(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    /// `x.?f`: an optional of the field (none when it is absent).
    OptSelect(Box<Expr>, String),
    /// `x[?k]`: an optional of the entry (none when it is absent).
    OptIndex(Box<Expr>, Box<Expr>),
    /// A function call: receiver (for `x.f()`), name, arguments.
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    Unary(char, Box<Expr>),
    Binary(String, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

impl Expr {
    pub(super) fn uses_old_self(&self) -> bool {
        self.mentions("oldSelf")
    }

    /// Whether the expression names the variable `name` anywhere.
    pub(super) fn mentions(&self, name: &str) -> bool {
        let m = |e: &Expr| e.mentions(name);
        match self {
            Expr::Ident(n) => n == name,
            Expr::Lit(_) => false,
            Expr::List(l) => l.iter().any(m),
            Expr::Map(entries) => entries.iter().any(|(k, v)| m(k) || m(v)),
            Expr::Select(e, _) | Expr::OptSelect(e, _) | Expr::Unary(_, e) => m(e),
            Expr::Index(a, b) | Expr::OptIndex(a, b) | Expr::Binary(_, a, b) => m(a) || m(b),
            Expr::Call(r, _, args) => r.as_deref().is_some_and(m) || args.iter().any(m),
            Expr::Cond(a, b, c) => m(a) || m(b) || m(c),
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
    depth: usize,
}

/// Parses a rule (checking only syntax and the supported subset).
pub(crate) fn parse(src: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        depth: 0,
    };
    let e = p.ternary()?;
    if p.pos != p.toks.len() {
        return Err(format!("Syntax error: unexpected {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

const FUNCTIONS: &[&str] = &[
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
    "dyn",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "replace",
    "split",
    "substring",
    "join",
    "isSorted",
    "sum",
    "min",
    "max",
    "find",
    "findAll",
    "bool",
    // Optionals: `optional.of(x)`, `optional.none()`, `x.?f.orValue(d)` …
    "of",
    "none",
    "ofNonZeroValue",
    "hasValue",
    "value",
    "orValue",
    "or",
    // The authorizer library: `authorizer.group('').resource('pods').check('get')` …
    "group",
    "resource",
    "subresource",
    "namespace",
    "name",
    "path",
    "serviceAccount",
    "check",
    "allowed",
    "reason",
    "errored",
    "error",
];

/// The macros: a method whose first argument names a variable bound in the others.
pub(super) const MACROS: [&str; 5] = ["all", "exists", "exists_one", "map", "filter"];

/// How deeply expressions may nest (cel-go's parser refuses deeper ones too), so a
/// hostile expression cannot exhaust the stack.
const MAX_DEPTH: usize = 100;

/// What an expression may name: top-level variables, and the composited `variables.*`
/// declared so far (None: `variables` is not declared at all).
pub struct Declarations<'a> {
    pub names: &'a [&'a str],
    pub variables: Option<&'a [String]>,
}

/// Checks that every identifier `e` uses is declared (or bound by a macro), as cel-go's
/// type checker refuses an expression naming an undeclared variable.
pub(super) fn check_references(
    e: &Expr,
    decls: &Declarations<'_>,
    bound: &mut Vec<String>,
) -> Result<(), String> {
    let local = |bound: &[String], n: &str| bound.iter().any(|b| b == n);
    match e {
        Expr::Lit(_) => Ok(()),
        Expr::Ident(n) => {
            if local(bound, n)
                || decls.names.contains(&n.as_str())
                || (n == "variables" && decls.variables.is_some())
            {
                Ok(())
            } else {
                Err(format!("undeclared reference to '{n}' (in container '')"))
            }
        }
        Expr::Select(x, field) | Expr::OptSelect(x, field) if matches!(&**x, Expr::Ident(n) if n == "variables" && !local(bound, n)) => {
            match decls.variables {
                Some(vars) if vars.iter().any(|v| v == field) => Ok(()),
                Some(_) => Err(format!("undefined field '{field}'")),
                None => Err("undeclared reference to 'variables' (in container '')".into()),
            }
        }
        Expr::List(l) => l.iter().try_for_each(|x| check_references(x, decls, bound)),
        Expr::Map(m) => m.iter().try_for_each(|(k, v)| {
            check_references(k, decls, bound)?;
            check_references(v, decls, bound)
        }),
        Expr::Select(x, _) | Expr::OptSelect(x, _) | Expr::Unary(_, x) => {
            check_references(x, decls, bound)
        }
        Expr::Index(a, b) | Expr::OptIndex(a, b) | Expr::Binary(_, a, b) => {
            check_references(a, decls, bound)?;
            check_references(b, decls, bound)
        }
        Expr::Cond(a, b, c) => {
            check_references(a, decls, bound)?;
            check_references(b, decls, bound)?;
            check_references(c, decls, bound)
        }
        Expr::Call(None, name, args) if name == "has" => match args.as_slice() {
            [Expr::Select(x, _)] => check_references(x, decls, bound),
            _ => Err("invalid argument to has() macro".into()),
        },
        Expr::Call(Some(r), name, args) if matches!(&**r, Expr::Ident(n) if n == "optional" && !local(bound, n)) =>
        {
            if !matches!(name.as_str(), "of" | "none" | "ofNonZeroValue") {
                return Err(format!("undeclared reference to 'optional.{name}'"));
            }
            args.iter()
                .try_for_each(|x| check_references(x, decls, bound))
        }
        Expr::Call(Some(r), name, args) if MACROS.contains(&name.as_str()) => {
            check_references(r, decls, bound)?;
            let (var, body) = match args.as_slice() {
                [Expr::Ident(v), rest @ ..] if matches!(rest.len(), 1 | 2) => (v, rest),
                _ => return Err(format!("invalid arguments to {name}() macro")),
            };
            if body.len() == 2 && name != "map" {
                return Err(format!("invalid arguments to {name}() macro"));
            }
            bound.push(var.clone());
            let r = body
                .iter()
                .try_for_each(|x| check_references(x, decls, bound));
            bound.pop();
            r
        }
        Expr::Call(r, _, args) => {
            if let Some(r) = r {
                check_references(r, decls, bound)?;
            }
            args.iter()
                .try_for_each(|x| check_references(x, decls, bound))
        }
    }
}

/// Whether every call is in the supported subset. Rules calling other functions (CEL's
/// timestamps, durations, quantities, URLs …) are accepted in CRDs but not evaluated.
pub(super) fn check_functions(e: &Expr) -> Result<(), String> {
    match e {
        Expr::Lit(_) | Expr::Ident(_) => Ok(()),
        Expr::List(l) => l.iter().try_for_each(check_functions),
        Expr::Map(m) => m.iter().try_for_each(|(k, v)| {
            check_functions(k)?;
            check_functions(v)
        }),
        Expr::Select(x, _) | Expr::OptSelect(x, _) | Expr::Unary(_, x) => check_functions(x),
        Expr::Index(a, b) | Expr::OptIndex(a, b) | Expr::Binary(_, a, b) => {
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
    /// Enters one level of nesting (parentheses, operands, arguments).
    fn nest<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        self.deepen()?;
        let r = f(self);
        self.depth -= 1;
        r
    }
    fn ternary(&mut self) -> Result<Expr, String> {
        self.nest(Self::ternary_inner)
    }
    fn deepen(&mut self) -> Result<(), String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!(
                "Syntax error: expression nests deeper than {MAX_DEPTH} levels"
            ));
        }
        self.depth += 1;
        Ok(())
    }
    fn ternary_inner(&mut self) -> Result<Expr, String> {
        let c = self.binary(0)?;
        if self.eat("?") {
            let a = self.ternary()?;
            self.expect(":")?;
            let b = self.ternary()?;
            return Ok(Expr::Cond(Box::new(c), Box::new(a), Box::new(b)));
        }
        Ok(c)
    }
    /// Binary operators by precedence climbing: operators binding tighter than
    /// `min` level are folded into the right operand (one stack frame per precedence
    /// change, not per level).
    fn binary(&mut self, min: usize) -> Result<Expr, String> {
        const LEVELS: [&[&str]; 5] = [
            &["||"],
            &["&&"],
            &["==", "!=", "<", "<=", ">", ">=", "in"],
            &["+", "-"],
            &["*", "/", "%"],
        ];
        let level_of = |t: Option<&Tok>| match t {
            Some(Tok::Op(o)) => LEVELS.iter().position(|l| l.contains(o)),
            Some(Tok::Ident(i)) if i == "in" => Some(2),
            _ => None,
        };
        let mut lhs = self.unary()?;
        // Each operator of a chain nests the tree one level deeper.
        let base = self.depth;
        while let Some(level) = level_of(self.toks.get(self.pos)).filter(|l| *l >= min) {
            let op = match &self.toks[self.pos] {
                Tok::Op(o) => o.to_string(),
                _ => "in".to_string(),
            };
            self.pos += 1;
            self.deepen()?;
            let rhs = self.binary(level + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth = base;
        Ok(lhs)
    }
    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Unary('!', Box::new(self.nest(Self::unary)?)));
        }
        if self.eat("-") {
            return Ok(Expr::Unary('-', Box::new(self.nest(Self::unary)?)));
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
        let base = self.depth;
        loop {
            if self.peek_op(".") || self.peek_op("[") {
                self.deepen()?;
            }
            if self.eat(".") {
                let optional = self.eat("?");
                let Some(Tok::Ident(name)) = self.toks.get(self.pos).cloned() else {
                    return Err("Syntax error: expected a field name".into());
                };
                self.pos += 1;
                if self.eat("(") {
                    let args = self.args(")")?;
                    e = Expr::Call(Some(Box::new(e)), name, args);
                } else if optional {
                    e = Expr::OptSelect(Box::new(e), name);
                } else {
                    e = Expr::Select(Box::new(e), name);
                }
            } else if self.eat("[") {
                let optional = self.eat("?");
                let i = self.ternary()?;
                self.expect("]")?;
                e = if optional {
                    Expr::OptIndex(Box::new(e), Box::new(i))
                } else {
                    Expr::Index(Box::new(e), Box::new(i))
                };
            } else {
                self.depth = base;
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
