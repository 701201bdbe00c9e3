//! CEL: a small interpreter for the subset Kubernetes users commonly write, over JSON
//! values — CRD `x-kubernetes-validations` rules (`Rule`), and admission webhooks'
//! `matchConditions` and ValidatingAdmissionPolicies ([`Program`], compiled once and
//! evaluated per request over an [`Input`]).
//!
//! Supported: literals (int, uint `1u`, double, strings with raw and triple-quoted forms,
//! bool, null, lists, maps), variables, field selection and indexing,
//! `! - * / % + - < <= > >= == != in && || ?:`, `has()`, `size()`, `int() uint() double()
//! string() bool() dyn()`, the string functions `startsWith endsWith contains matches
//! lowerAscii upperAscii trim charAt indexOf lastIndexOf replace split substring join
//! find findAll`, the list functions `isSorted sum min max indexOf lastIndexOf`, the
//! macros `all exists exists_one map (2 and 3 arguments) filter`, optionals (`x.?f`,
//! `m[?k]`, `optional.of/none/ofNonZeroValue`, `hasValue value orValue or`), lazily
//! evaluated composited `variables.*`, and the `authorizer` library (`path group
//! resource subresource namespace name serviceAccount check allowed reason errored
//! error`, `requestResource`). Not supported: other functions (timestamps, durations,
//! quantities, URLs, IPs …): a CRD rule calling one is accepted but not evaluated; a
//! [`Program`] calling one does not compile. There is no static type checking: a type
//! mismatch is an evaluation error, not a compile error.
//!
//! Limits: expressions nest at most 250 levels (parse error beyond), and one evaluation
//! (all the programs over one [`Input`]) takes at most ten million steps, string and list
//! concatenation counting their length, so no expression hangs or exhausts the server.

mod eval;
mod functions;
mod parse;
#[cfg(test)]
mod tests;

use std::cell::OnceCell;

use serde_json::{Map, Value};

use super::{render, Cause};
use crate::rbac::{Attributes, Decision};
use eval::{eval, Env, Limits, Scope};
pub(crate) use parse::parse;
pub use parse::Declarations;
use parse::{check_functions, check_references, Expr};

/// Fixed variables (a CRD rule's `self` and `oldSelf`).
struct Vars {
    vars: Vec<(String, Value)>,
    limits: Limits,
}

impl Vars {
    fn new(vars: Vec<(String, Value)>) -> Vars {
        Vars {
            vars,
            limits: Limits::default(),
        }
    }
}

impl Scope for Vars {
    fn lookup(&self, name: &str) -> Option<&Value> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// A compiled expression: parsed, its functions in the supported subset and its names
/// declared. Compile once (per policy generation), evaluate per request.
#[derive(Debug, Clone)]
pub struct Program {
    src: String,
    expr: Expr,
}

impl Program {
    /// Compiles `src` against what it may name. The error reads as cel-go's compile
    /// errors do after `ERROR: <input>:` (`undeclared reference to 'x' (in container '')`,
    /// `Syntax error: …`).
    pub fn compile(src: &str, decls: &Declarations<'_>) -> Result<Program, String> {
        let expr = parse(src)?;
        check_functions(&expr)?;
        check_references(&expr, decls, &mut Vec::new())?;
        Ok(Program {
            src: src.to_string(),
            expr,
        })
    }

    pub fn source(&self) -> &str {
        &self.src
    }

    /// Whether the program names the variable `name` (so a caller can skip reading what
    /// no expression uses).
    pub fn mentions(&self, name: &str) -> bool {
        self.expr.mentions(name)
    }

    /// Evaluates the program over `input` (whose variables and budget it shares with the
    /// other programs evaluated over the same input).
    pub fn evaluate(&self, input: &Input<'_>) -> Result<Value, String> {
        eval(&self.expr, &Env::new(input))
    }
}

/// One composited variable (`spec.variables` of a ValidatingAdmissionPolicy): later
/// variables and the expressions see it as `variables.<name>`.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    /// The compile error, if it does not compile: using the variable fails with it.
    pub program: Result<Program, String>,
}

/// Who an `authorizer` check is about, and the authorizer deciding it.
pub struct Authorizer<'a> {
    pub username: &'a str,
    pub groups: &'a [String],
    /// The request's resource, for `authorizer.requestResource`.
    pub request: RequestResource<'a>,
    pub decide: &'a dyn Fn(&Attributes) -> Decision,
}

/// The resource a request is about.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestResource<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// What the programs of one evaluation see: fixed variables (`object`, `oldObject`,
/// `request`, `params`, `namespaceObject`), the composited variables, evaluated lazily
/// and at most once, and optionally the `authorizer`. The runtime budget is shared by
/// everything evaluated over one input.
pub struct Input<'a> {
    values: Vec<(&'a str, &'a Value)>,
    variables: &'a [Variable],
    cache: Vec<OnceCell<Result<Value, String>>>,
    authorizer: Option<(Value, Authorizer<'a>)>,
    limits: Limits,
}

impl<'a> Input<'a> {
    pub fn new(values: Vec<(&'a str, &'a Value)>) -> Input<'a> {
        Input {
            values,
            variables: &[],
            cache: Vec::new(),
            authorizer: None,
            limits: Limits::default(),
        }
    }

    pub fn with_variables(mut self, variables: &'a [Variable]) -> Input<'a> {
        self.variables = variables;
        self.cache = variables.iter().map(|_| OnceCell::new()).collect();
        self
    }

    pub fn with_authorizer(mut self, a: Authorizer<'a>) -> Input<'a> {
        let r = a.request;
        let mut request = Map::new();
        for (k, v) in [
            ("group", r.group),
            ("resource", r.resource),
            ("subresource", r.subresource),
            ("namespace", r.namespace),
            ("name", r.name),
        ] {
            request.insert(k.into(), Value::String(v.into()));
        }
        self.authorizer = Some((eval::authorizer(request), a));
        self
    }
}

impl Scope for Input<'_> {
    fn lookup(&self, name: &str) -> Option<&Value> {
        if name == "authorizer" {
            return self.authorizer.as_ref().map(|(v, _)| v);
        }
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn variable(&self, name: &str) -> Result<&Value, String> {
        let Some(i) = self.variables.iter().position(|v| v.name == name) else {
            return Err(format!("undefined field '{name}'"));
        };
        let cell = &self.cache[i];
        if cell.get().is_none() {
            // Variables name only earlier ones (checked when compiled), so this never
            // re-enters the cell being filled.
            let r = match &self.variables[i].program {
                Err(e) => Err(format!(
                    "composited variable {name:?} fails to compile: {e}"
                )),
                Ok(p) => p
                    .evaluate(self)
                    .map_err(|e| format!("composited variable {name:?} fails to evaluate: {e}")),
            };
            let _ = cell.set(r);
        }
        match cell.get() {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!(
                "composited variable {name:?} could not be evaluated"
            )),
        }
    }

    fn variables(&self) -> Result<Value, String> {
        let mut m = Map::new();
        for v in self.variables {
            m.insert(v.name.clone(), self.variable(&v.name)?.clone());
        }
        Ok(Value::Object(m))
    }

    fn authorize(&self, check: &Map<String, Value>) -> Result<Value, String> {
        let Some((_, a)) = &self.authorizer else {
            return Err("undeclared reference to 'authorizer'".into());
        };
        let s = |k: &str| check.get(k).and_then(Value::as_str).unwrap_or_default();
        let (user, groups): (String, Vec<String>) = match check.get("user") {
            Some(u) => (
                u.get("username")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                u.get("groups")
                    .and_then(Value::as_array)
                    .map(|g| {
                        g.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            None => (a.username.to_string(), a.groups.to_vec()),
        };
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let attrs = if s("kind") == "path" {
            Attributes::non_resource(&user, &groups, s("verb"), s("path"))
        } else {
            Attributes::resource(
                &user,
                &groups,
                s("verb"),
                s("namespace"),
                s("group"),
                s("resource"),
                s("subresource"),
                s("name"),
            )
        };
        Ok(match (a.decide)(&attrs) {
            Decision::Allow { reason } => eval::decision(true, &reason),
            Decision::NoOpinion { reason } => eval::decision(false, &reason),
        })
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }
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
        let vars = Vars::new(vec![
            ("self".into(), v.clone()),
            ("oldSelf".into(), old.cloned().unwrap_or(Value::Null)),
        ]);
        let env = Env::new(&vars);
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
