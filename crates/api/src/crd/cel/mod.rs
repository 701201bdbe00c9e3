//! CEL `x-kubernetes-validations` rules: a small interpreter for the subset CRDs
//! commonly use, over JSON values.
//!
//! Supported: literals (int, uint `1u`, double, strings with raw and triple-quoted forms,
//! bool, null, lists, maps), `self` and `oldSelf`, field selection and indexing,
//! `! - * / % + - < <= > >= == != in && || ?:`, `has()`, `size()`, `int() uint() double()
//! string() bool() dyn()`, the string functions `startsWith endsWith contains matches
//! lowerAscii upperAscii trim charAt indexOf lastIndexOf replace split substring join
//! find findAll`, the list functions `isSorted sum min max indexOf lastIndexOf`, and the
//! macros `all exists exists_one map filter`. Not supported: other functions
//! (timestamps, durations, quantities, URLs, IPs …: a rule calling one is accepted but
//! not evaluated), optional field selection `.?` (likewise), and `messageExpression`
//! (the static `message` is used).

mod eval;
mod parse;

use serde_json::Value;

use super::{render, Cause};
use eval::{eval, Env};
pub(crate) use parse::parse;
use parse::{check_functions, Expr};

/// Evaluates one CEL expression over named variables (an admission webhook's
/// `matchConditions` see `object`, `oldObject`, `request`), with the subset and the
/// limits described above: an expression calling an unsupported function is an error.
pub fn evaluate(src: &str, vars: Vec<(String, Value)>) -> Result<Value, String> {
    let expr = parse(src)?;
    check_functions(&expr)?;
    eval(&expr, &Env { vars })
}

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
