//! Label and field selectors as `kubectl -l` and `--field-selector` send them, and the
//! `metav1.LabelSelector` objects found in workload and policy specs.
//!
//! Label selector grammar (what kube-apiserver's `labels.Parse` accepts):
//!
//! ```text
//! selector    := "" | requirement ("," requirement)*
//! requirement := ["!"] KEY
//!              | KEY ("=" | "==" | "!=") VALUE?
//!              | KEY ("in" | "notin") "(" VALUE ("," VALUE)* ")"
//!              | KEY (">" | "<") INTEGER
//! ```
//!
//! Whitespace between tokens is ignored. Keys are qualified names (`[prefix/]name`, prefix
//! a DNS-1123 subdomain, name ≤ 63 characters of `[A-Za-z0-9_.-]` starting and ending
//! alphanumeric); values are empty or follow the name rule.
//!
//! Field selectors are `field(=|==|!=)value` terms joined by commas, where a value may
//! contain `\,`, `\=` and `\\` escapes (as `fields.EscapeValue` produces).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

mod field;
pub use field::{escape_field_value, FieldOp, FieldSelector, FieldTerm};

/// A selector string that could not be parsed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl SelectorError {
    fn new(selector: &str, reason: impl Into<String>) -> Self {
        SelectorError {
            selector: selector.to_string(),
            reason: reason.into(),
        }
    }
}

/// How one label requirement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value`, `key==value`, `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key!=value`, `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>5`: the label's value is an integer greater than the value.
    GreaterThan,
    /// `key<5`: the label's value is an integer less than the value.
    LessThan,
}

/// One `key op values` term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and de-duplicated (as kube does, so equal selectors print the same).
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a requirement, checking the key, the values and their number for `op`.
    pub fn new<I, S>(key: &str, operator: Operator, values: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        validate_label_key(key)?;
        let values: BTreeSet<String> = values.into_iter().map(Into::into).collect();
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    return Err(format!(
                        "{key}: for 'in', 'notin' operators, values set can't be empty"
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(format!(
                        "{key}: values set must be empty for exists and does not exist"
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(format!(
                        "{key}: for 'Gt', 'Lt' operators, exactly one value is required"
                    ));
                }
                for v in &values {
                    if v.parse::<i64>().is_err() {
                        return Err(format!(
                            "{key}: for 'Gt', 'Lt' operators, the value must be an integer, not {v:?}"
                        ));
                    }
                }
            }
        }
        for v in &values {
            validate_label_value(v).map_err(|e| format!("{key}: {e}"))?;
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let got = labels.get(&self.key);
        match self.operator {
            Operator::In => got.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => got.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => got.is_some(),
            Operator::DoesNotExist => got.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = got.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self
                    .values
                    .iter()
                    .next()
                    .and_then(|v| v.parse::<i64>().ok())
                else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let one = || self.values.iter().next().map(String::as_str).unwrap_or("");
        let list = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::In if self.values.len() == 1 => write!(f, "{}={}", self.key, one()),
            Operator::NotIn if self.values.len() == 1 => write!(f, "{}!={}", self.key, one()),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::GreaterThan => write!(f, "{}>{}", self.key, one()),
            Operator::LessThan => write!(f, "{}<{}", self.key, one()),
        }
    }
}

/// A parsed label selector.
///
/// Two selectors need care: the *empty* selector (`""` as a query parameter, or `{}` as a
/// `metav1.LabelSelector`) matches every object, while a *null* `metav1.LabelSelector`
/// (a missing or `null` `selector` field) matches nothing. [`LabelSelector::nothing`] builds
/// the latter; [`LabelSelector::matches_nothing`] and [`LabelSelector::is_everything`] tell
/// them apart. [`LabelSelector::is_empty`] is true only for the match-everything one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Parses the query-string form (`app=web,tier in (a,b),!canary`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s).map_err(|r| SelectorError::new(s, r))?;
        let mut p = Parser { tokens, pos: 0 };
        let requirements = p.parse().map_err(|r| SelectorError::new(s, r))?;
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`), as
    /// found in deployment/replicaset/service specs. A null selector matches nothing; an
    /// empty object matches everything.
    pub fn from_object(sel: &Value) -> Result<Self, SelectorError> {
        let shown = || sel.to_string();
        let obj =
            match sel {
                Value::Null => return Ok(Self::nothing()),
                Value::Object(o) => o,
                _ => return Err(SelectorError::new(
                    &shown(),
                    "a label selector must be an object with matchLabels and/or matchExpressions",
                )),
            };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v.as_str().ok_or_else(|| {
                        SelectorError::new(
                            &shown(),
                            format!("matchLabels[{k:?}] must be a string, not {v}"),
                        )
                    })?;
                    let r = Requirement::new(k, Operator::In, [v])
                        .map_err(|e| SelectorError::new(&shown(), format!("matchLabels: {e}")))?;
                    requirements.push(r);
                }
            }
            Some(other) => {
                return Err(SelectorError::new(
                    &shown(),
                    format!("matchLabels must be a map of strings, not {other}"),
                ))
            }
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, e) in exprs.iter().enumerate() {
                    let at = format!("matchExpressions[{i}]");
                    let key = e.get("key").and_then(Value::as_str).ok_or_else(|| {
                        SelectorError::new(&shown(), format!("{at}.key: a string is required"))
                    })?;
                    let op = match e.get("operator").and_then(Value::as_str) {
                        Some("In") => Operator::In,
                        Some("NotIn") => Operator::NotIn,
                        Some("Exists") => Operator::Exists,
                        Some("DoesNotExist") => Operator::DoesNotExist,
                        other => {
                            return Err(SelectorError::new(
                                &shown(),
                                format!(
                                    "{at}.operator: {other:?} is not a valid label selector operator (In, NotIn, Exists, DoesNotExist)"
                                ),
                            ))
                        }
                    };
                    let values: Vec<String> = match e.get("values") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(vs)) => vs
                            .iter()
                            .map(|v| {
                                v.as_str().map(str::to_string).ok_or_else(|| {
                                    SelectorError::new(
                                        &shown(),
                                        format!("{at}.values: {v} is not a string"),
                                    )
                                })
                            })
                            .collect::<Result<_, _>>()?,
                        Some(other) => {
                            return Err(SelectorError::new(
                                &shown(),
                                format!("{at}.values must be a list of strings, not {other}"),
                            ))
                        }
                    };
                    let r = Requirement::new(key, op, values)
                        .map_err(|e| SelectorError::new(&shown(), format!("{at}: {e}")))?;
                    requirements.push(r);
                }
            }
            Some(other) => {
                return Err(SelectorError::new(
                    &shown(),
                    format!("matchExpressions must be a list, not {other}"),
                ))
            }
        }
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// The selector that matches everything (same as `parse("")`).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// The selector that matches nothing (what a null `metav1.LabelSelector` means).
    pub fn nothing() -> Self {
        LabelSelector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// True for the match-everything selector (no requirements); false for [`Self::nothing`].
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Same as [`Self::is_empty`], named for readability at call sites.
    pub fn is_everything(&self) -> bool {
        self.is_empty()
    }

    /// True for the selector built from a null `metav1.LabelSelector`.
    pub fn matches_nothing(&self) -> bool {
        self.nothing
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Adds a requirement (all requirements must hold).
    pub fn add(&mut self, r: Requirement) {
        self.requirements.push(r);
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object's `metadata.labels` (JSON); a missing map counts as empty.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

/// Prints the query-string form, with requirements sorted by key as kube prints them.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut reqs: Vec<&Requirement> = self.requirements.iter().collect();
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        let parts: Vec<String> = reqs.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    NotEquals,
    DoubleEquals,
    Equals,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    In,
    NotInKw,
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '>' | '<' | '(' | ')' | ',')
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next = chars.peek().map(|&(_, c)| c);
            let tok = match (c, next) {
                ('!', Some('=')) => {
                    chars.next();
                    Token::NotEquals
                }
                ('=', Some('=')) => {
                    chars.next();
                    Token::DoubleEquals
                }
                ('!', _) => Token::Not,
                ('=', _) => Token::Equals,
                ('>', _) => Token::Gt,
                ('<', _) => Token::Lt,
                ('(', _) => Token::Open,
                (')', _) => Token::Close,
                (',', _) => Token::Comma,
                _ => return Err(format!("unexpected character {c:?} at position {i}")),
            };
            out.push(tok);
            continue;
        }
        let start = i;
        let mut end = s.len();
        while let Some(&(j, c)) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                end = j;
                break;
            }
            chars.next();
        }
        let word = &s[start..end];
        out.push(match word {
            "in" => Token::In,
            "notin" => Token::NotInKw,
            _ => Token::Ident(word.to_string()),
        });
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "end of string".to_string(),
        Some(Token::Ident(s)) => format!("{s:?}"),
        Some(Token::Not) => "'!'".into(),
        Some(Token::NotEquals) => "'!='".into(),
        Some(Token::DoubleEquals) => "'=='".into(),
        Some(Token::Equals) => "'='".into(),
        Some(Token::Gt) => "'>'".into(),
        Some(Token::Lt) => "'<'".into(),
        Some(Token::Open) => "'('".into(),
        Some(Token::Close) => "')'".into(),
        Some(Token::Comma) => "','".into(),
        Some(Token::In) => "'in'".into(),
        Some(Token::NotInKw) => "'notin'".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut out = Vec::new();
        if self.tokens.is_empty() {
            return Ok(out);
        }
        loop {
            out.push(self.requirement()?);
            match self.next() {
                None => return Ok(out),
                Some(Token::Comma) => {
                    if self.peek().is_none() {
                        return Err("a requirement is expected after ','".into());
                    }
                }
                t => {
                    return Err(format!(
                        "found {}, expected ',' or end of string",
                        describe(t.as_ref())
                    ))
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(k)) => {
                validate_label_key(&k)?;
                Ok(k)
            }
            // `in`/`notin` are keywords, but kube also lexes them as keywords in key
            // position, so a label literally named "in" cannot be selected either.
            t => Err(format!(
                "found {}, expected a label key",
                describe(t.as_ref())
            )),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Not) {
            self.next();
            let key = self.key()?;
            return Requirement::new(&key, Operator::DoesNotExist, Vec::<String>::new());
        }
        let key = self.key()?;
        let op = match self.peek() {
            None | Some(Token::Comma) => {
                return Requirement::new(&key, Operator::Exists, Vec::<String>::new())
            }
            Some(_) => self.next(),
        };
        match op {
            Some(Token::Equals | Token::DoubleEquals) => {
                let v = self.single_value()?;
                Requirement::new(&key, Operator::In, [v])
            }
            Some(Token::NotEquals) => {
                let v = self.single_value()?;
                Requirement::new(&key, Operator::NotIn, [v])
            }
            Some(Token::Gt) => {
                let v = self.single_value()?;
                Requirement::new(&key, Operator::GreaterThan, [v])
            }
            Some(Token::Lt) => {
                let v = self.single_value()?;
                Requirement::new(&key, Operator::LessThan, [v])
            }
            Some(Token::In) => {
                let vs = self.value_list()?;
                Requirement::new(&key, Operator::In, vs)
            }
            Some(Token::NotInKw) => {
                let vs = self.value_list()?;
                Requirement::new(&key, Operator::NotIn, vs)
            }
            t => Err(format!(
                "found {} after {key:?}, expected one of '=', '==', '!=', 'in', 'notin', '>', '<' or ','",
                describe(t.as_ref())
            )),
        }
    }

    /// The value after `=`/`!=`: may be empty (`app=`), which selects the empty value.
    fn single_value(&mut self) -> Result<String, String> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Ident(_)) => match self.next() {
                Some(Token::Ident(v)) => Ok(v),
                _ => unreachable_value(),
            },
            // `in`/`notin` as values are just words.
            Some(Token::In) => {
                self.next();
                Ok("in".into())
            }
            Some(Token::NotInKw) => {
                self.next();
                Ok("notin".into())
            }
            t => Err(format!("found {}, expected a value", describe(t))),
        }
    }

    fn value_list(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Token::Open) => {}
            t => return Err(format!("found {}, expected '('", describe(t.as_ref()))),
        }
        let mut out = Vec::new();
        loop {
            match self.next() {
                // An empty element (`(a,,b)` or `()`) is the empty value, as in kube.
                Some(Token::Close) => {
                    if out.is_empty() {
                        // `()`: no values at all; Requirement::new reports it.
                        return Ok(out);
                    }
                    out.push(String::new());
                    return Ok(out);
                }
                Some(Token::Comma) => out.push(String::new()),
                Some(Token::Ident(v)) => {
                    out.push(v);
                    match self.next() {
                        Some(Token::Comma) => {
                            if self.peek() == Some(&Token::Close) {
                                self.next();
                                out.push(String::new());
                                return Ok(out);
                            }
                        }
                        Some(Token::Close) => return Ok(out),
                        t => {
                            return Err(format!(
                                "found {}, expected ',' or ')' in a value list",
                                describe(t.as_ref())
                            ))
                        }
                    }
                }
                Some(Token::In) | Some(Token::NotInKw) => {
                    let v = if self.tokens[self.pos - 1] == Token::In {
                        "in"
                    } else {
                        "notin"
                    };
                    out.push(v.to_string());
                    match self.next() {
                        Some(Token::Comma) => {}
                        Some(Token::Close) => return Ok(out),
                        t => {
                            return Err(format!(
                                "found {}, expected ',' or ')' in a value list",
                                describe(t.as_ref())
                            ))
                        }
                    }
                }
                t => {
                    return Err(format!(
                        "found {}, expected a value or ')' in a value list",
                        describe(t.as_ref())
                    ))
                }
            }
        }
    }
}

fn unreachable_value() -> Result<String, String> {
    Err("internal: value token vanished".into())
}

const NAME_HINT: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

pub(crate) fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', ≤ 253, each label starting
/// and ending alphanumeric.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Checks a label key (a qualified name: `[prefix/]name`).
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Err(format!(
                "invalid label key {key:?}: prefix part must be non-empty"
            ));
        }
        if !is_dns1123_subdomain(p) {
            return Err(format!(
                "invalid label key {key:?}: prefix part must be a lowercase RFC 1123 subdomain (e.g. 'example.com') of at most 253 characters"
            ));
        }
    }
    if name.is_empty() {
        return Err(format!(
            "invalid label key {key:?}: name part must be non-empty"
        ));
    }
    if name.len() > 63 {
        return Err(format!(
            "invalid label key {key:?}: name part must be no more than 63 characters"
        ));
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "invalid label key {key:?}: name part {NAME_HINT} (e.g. 'MyName', 'my.name', or '123-abc'), with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or ≤ 63 characters of the name alphabet.
pub fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 {
        return Err(format!(
            "invalid label value {v:?}: must be no more than 63 characters"
        ));
    }
    if !is_qualified_name_part(v) {
        return Err(format!(
            "invalid label value {v:?}: a valid label {NAME_HINT} (e.g. 'MyValue', 'my_value', or '12345')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_table() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let db = labels(&[("app", "db"), ("canary", "")]);
        let none = labels(&[]);
        // (selector, matches web, matches db, matches none)
        let cases: &[(&str, bool, bool, bool)] = &[
            ("", true, true, true),
            ("app=web", true, false, false),
            ("app==web", true, false, false),
            ("app = web", true, false, false),
            ("app!=web", false, true, true),
            ("app in (web,db)", true, true, false),
            ("app in(web, db )", true, true, false),
            ("app notin (web)", false, true, true),
            ("canary", false, true, false),
            ("!canary", true, false, true),
            (" ! canary ", true, false, true),
            ("app=web,tier=front", true, false, false),
            ("app,tier", true, false, false),
            ("canary=", false, true, false),
            ("canary in (,x)", false, true, false),
            ("n>4", true, false, false),
            ("n<4", false, false, false),
            ("example.com/role!=x", true, true, true),
            ("app in (web),!canary,tier notin (back)", true, false, false),
        ];
        for (s, w, d, n) in cases {
            let sel = LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&web), *w, "{s} vs web");
            assert_eq!(sel.matches(&db), *d, "{s} vs db");
            assert_eq!(sel.matches(&none), *n, "{s} vs none");
        }
    }

    #[test]
    fn label_selector_errors() {
        for bad in [
            "app in ()",
            "app in (a",
            "app in a",
            "=web",
            "app=web,",
            ",app",
            "app=web=x",
            "app=web)",
            "-app=x",
            "app=-x",
            "a/b/c=x",
            "Example.com/x=y",
            "app==",
            "n>x",
            "app notin",
            "!app=x",
            &format!("{}=x", "a".repeat(64)),
            &format!("a={}", "b".repeat(64)),
        ] {
            let r = LabelSelector::parse(bad);
            // `app==` is `app == ""`: valid in kube, checked here to keep the list honest.
            if bad == "app==" {
                assert!(r.is_ok(), "{bad}");
                continue;
            }
            let e = r.expect_err(bad);
            assert_eq!(e.selector, bad);
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn label_selector_display_is_normalised() {
        let s = LabelSelector::parse("z in (b,a,a), a!=x, !c, d").expect("parse");
        assert_eq!(s.to_string(), "a!=x,!c,d,z in (a,b)");
        assert_eq!(LabelSelector::parse(&s.to_string()).expect("reparse"), {
            let mut r = LabelSelector::parse("a!=x,!c,d,z in (a,b)").expect("p");
            r.requirements.sort_by(|a, b| a.key.cmp(&b.key));
            r
        });
    }

    #[test]
    fn label_selector_objects() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let null = LabelSelector::from_object(&Value::Null).expect("null");
        assert!(null.matches_nothing() && !null.is_empty() && !null.is_everything());
        assert!(!null.matches(&web) && !null.matches(&labels(&[])));

        let empty = LabelSelector::from_object(&json!({})).expect("empty");
        assert!(empty.is_everything() && !empty.matches_nothing());
        assert!(empty.matches(&web) && empty.matches(&labels(&[])));

        let sel = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front", "back"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "app", "operator": "Exists", "values": null},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
            ]
        }))
        .expect("full");
        assert!(sel.matches(&web));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "x")])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("env", "prod")
        ])));
        assert!(
            sel.matches_object(&json!({"metadata": {"labels": {"app": "web", "tier": "back"}}}))
        );

        for bad in [
            json!({"matchLabels": {"app": 1}}),
            json!({"matchLabels": ["app"]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchExpressions": [{"operator": "Exists"}]}),
            json!({"matchLabels": {"bad key": "x"}}),
            json!("app=web"),
        ] {
            assert!(LabelSelector::from_object(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_table() {
        let obj = |f: &str| match f {
            "metadata.name" => Some("a,b=c\\d".to_string()),
            "status.phase" => Some("Running".to_string()),
            "spec.nodeName" => None,
            _ => None,
        };
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("status.phase=Running", true),
            ("status.phase==Running", true),
            ("status.phase!=Running", false),
            ("status.phase!=Pending", true),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
            ("metadata.name=a\\,b\\=c\\\\d", true),
            ("metadata.name=a\\,b\\=c\\\\d,status.phase=Running", true),
            ("metadata.name=a\\,b\\=c\\\\d,status.phase=Pending", false),
            ("status.phase=Running,", true),
        ];
        for (s, want) in cases {
            let sel = FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&obj), *want, "{s}");
        }
        let sel = FieldSelector::parse("spec.nodeName=n1,metadata.namespace!=kube-system")
            .expect("parse");
        assert_eq!(
            sel.fields().collect::<Vec<_>>(),
            vec!["spec.nodeName", "metadata.namespace"]
        );
        assert_eq!(sel.requires_exact("spec.nodeName"), Some("n1"));
        assert_eq!(sel.requires_exact("metadata.namespace"), None);
        let esc = FieldSelector::parse("metadata.name=a\\,b").expect("parse");
        assert_eq!(esc.terms()[0].value, "a,b");
        assert_eq!(esc.to_string(), "metadata.name=a\\,b");
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "[a-z0-9!=(), \\\\/.é-]{0,40}", any in ".{0,40}") {
            for x in [&s, &any] {
                let _ = LabelSelector::parse(x);
                let _ = FieldSelector::parse(x);
            }
        }
    }

    #[test]
    fn field_selector_errors() {
        for bad in [
            "status.phase",
            "=Running",
            "metadata.name=a\\x",
            "metadata.name=a\\",
            "metadata.name=a=b",
        ] {
            let e = FieldSelector::parse(bad).expect_err(bad);
            assert_eq!(e.selector, bad);
        }
    }
}
