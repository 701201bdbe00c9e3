//! Field selectors (`metadata.name=x,status.phase!=Running`): `field(=|==|!=)value`
//! terms joined by commas, values escaped with `\,`, `\=` and `\\`.

use std::fmt;

use super::SelectorError;

/// How one field term compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field op value` term of a field selector (value unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

/// A parsed field selector (`metadata.name=x,status.phase!=Running`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for raw in split_unescaped_commas(s) {
            if raw.trim().is_empty() {
                // kube skips empty terms (`a=b,` and the empty selector).
                continue;
            }
            let (lhs, op, rhs) = split_field_term(raw).ok_or_else(|| {
                SelectorError::new(
                    s,
                    format!("invalid field selector term {raw:?}: expected field=value, field==value or field!=value"),
                )
            })?;
            let field = lhs.trim();
            if field.is_empty() {
                return Err(SelectorError::new(
                    s,
                    format!("invalid field selector term {raw:?}: the field name is empty"),
                ));
            }
            let value = unescape_field_value(rhs)
                .map_err(|r| SelectorError::new(s, format!("term {raw:?}: {r}")))?;
            terms.push(FieldTerm {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The field paths the selector mentions, so the server can refuse unsupported ones.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// The value an `=`/`==` term requires of `field`, if any (index lookups, e.g. `spec.nodeName`).
    pub fn requires_exact(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.op == FieldOp::Equals)
            .map(|t| t.value.as_str())
    }

    /// `get` returns the object's value for a field path, `None` if it has none (which
    /// compares as the empty string, as in kube's `fields.Set`).
    pub fn matches(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|t| {
            let have = get(&t.field).unwrap_or_default();
            match t.op {
                FieldOp::Equals => have == t.value,
                FieldOp::NotEquals => have != t.value,
            }
        })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = match t.op {
                    FieldOp::Equals => "=",
                    FieldOp::NotEquals => "!=",
                };
                format!("{}{}{}", t.field, op, escape_field_value(&t.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Escapes `\`, `,` and `=` in a field selector value.
pub fn escape_field_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// Finds the first operator by position, `!=` before `==` before `=` at one position.
fn split_field_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (tok, op) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ] {
            if rest.starts_with(tok) {
                return Some((&term[..i], op, &term[i + tok.len()..]));
            }
        }
    }
    None
}

fn unescape_field_value(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => {
                    return Err(format!(
                        "invalid escape sequence '\\{e}' in value {v:?}: only \\\\, \\, and \\= are allowed"
                    ))
                }
                None => {
                    return Err(format!(
                        "value {v:?} ends with an unfinished escape '\\'; write '\\\\' for a backslash"
                    ))
                }
            },
            ',' | '=' => {
                return Err(format!(
                    "unescaped {c:?} in value {v:?}; escape it as '\\{c}'"
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}
