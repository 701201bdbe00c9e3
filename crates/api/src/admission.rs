//! ValidatingAdmissionPolicies (`admissionregistration.k8s.io/v1`) without I/O: a policy
//! compiled once per generation ([`Policy::compile`]), a binding read once
//! ([`Binding::parse`]), and one evaluation of a policy over a request ([`Policy::validate`],
//! kube's `validator.Validate`): match conditions, then each validation (with its
//! `messageExpression`, `message` or `failed expression: …`), then the audit annotations,
//! errors resolved by the policy's `failurePolicy`. Which policies and bindings match a
//! request, where params come from and what a denial answers is the API server's.
//!
//! [`Condition`] (one named CEL condition, as `matchConditions` of policies and webhooks
//! hold) and [`conditions_match`] are shared with the admission webhooks.

use serde_json::Value;

use crate::cel::{Declarations, Input, Program, Variable};

/// Names every policy expression may use (`params` only with a `paramKind`).
const POLICY_NAMES: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "namespaceObject",
    "authorizer",
];
const POLICY_NAMES_WITH_PARAMS: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "namespaceObject",
    "authorizer",
    "params",
];
/// `messageExpression`s see no `authorizer`.
const MESSAGE_NAMES: &[&str] = &["object", "oldObject", "request", "namespaceObject"];
const MESSAGE_NAMES_WITH_PARAMS: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "namespaceObject",
    "params",
];
/// What an admission webhook's `matchConditions` may use.
pub const WEBHOOK_CONDITION_NAMES: &[&str] = &["object", "oldObject", "request", "authorizer"];

/// kube's `MaxEvaluatedMessageExpressionSizeBytes`: a longer message is not used.
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// One named CEL condition (`matchConditions`).
#[derive(Debug, Clone)]
pub struct Condition {
    pub name: String,
    pub program: Result<Program, String>,
}

impl Condition {
    /// Compiles `{name, expression}`.
    pub fn compile(v: &Value, decls: &Declarations<'_>) -> Condition {
        Condition {
            name: str_of(v, "name").to_string(),
            program: Program::compile(str_of(v, "expression"), decls),
        }
    }
}

/// kube's match-condition matcher: any condition that is false means no match (even if
/// others failed); otherwise a failed one is the error (several, in brackets).
pub fn conditions_match(conditions: &[Condition], input: &Input<'_>) -> Result<bool, String> {
    let mut errors = Vec::new();
    for c in conditions {
        let r = match &c.program {
            Err(e) => Err(format!("compilation error: {e}")),
            Ok(p) => p
                .evaluate(input)
                .map_err(|e| resulted_in_error(p.source(), &e)),
        };
        match r {
            Ok(Value::Bool(false)) => return Ok(false),
            // Only false excludes (kube's type check refuses other result types where it
            // can tell; where it cannot, they count as a match).
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(true),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

fn resulted_in_error(src: &str, e: &str) -> String {
    format!("expression '{src}' resulted in error: {e}")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "double",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `spec.paramKind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamKind {
    pub api_version: String,
    pub kind: String,
}

/// One entry of `spec.validations`.
#[derive(Debug, Clone)]
pub struct Validation {
    pub expression: Result<Program, String>,
    /// The expression as written (the message when no other is given).
    pub source: String,
    pub message: String,
    pub message_expression: Option<Result<Program, String>>,
    /// `Forbidden`, `Invalid`, `Unauthorized` or `RequestEntityTooLarge`; None: Invalid.
    pub reason: Option<String>,
}

/// One entry of `spec.auditAnnotations`.
#[derive(Debug, Clone)]
pub struct AuditAnnotation {
    pub key: String,
    pub source: String,
    pub value: Result<Program, String>,
}

/// A ValidatingAdmissionPolicy, compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub uid: String,
    pub generation: i64,
    /// `failurePolicy: Fail` (the default): errors deny; `Ignore`: they admit.
    pub fail: bool,
    pub param_kind: Option<ParamKind>,
    /// `spec.matchConstraints` as stored (None: the policy matches nothing and is a
    /// configuration error).
    pub match_constraints: Option<Value>,
    pub match_conditions: Vec<Condition>,
    pub variables: Vec<Variable>,
    pub validations: Vec<Validation>,
    pub audit_annotations: Vec<AuditAnnotation>,
}

impl Policy {
    /// Whether any expression names `name` (`namespaceObject`, `authorizer` …: what
    /// the caller need not provide when none does).
    pub fn mentions(&self, name: &str) -> bool {
        let p = |r: &Result<Program, String>| r.as_ref().is_ok_and(|p| p.mentions(name));
        self.match_conditions.iter().any(|c| p(&c.program))
            || self.variables.iter().any(|v| p(&v.program))
            || self
                .validations
                .iter()
                .any(|v| p(&v.expression) || v.message_expression.as_ref().is_some_and(p))
            || self.audit_annotations.iter().any(|a| p(&a.value))
    }

    /// Compiles a stored policy; expressions that do not compile keep their error (their
    /// evaluation fails with it, under the failure policy), as kube keeps them.
    pub fn compile(obj: &Value) -> Policy {
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        let param_kind = spec
            .get("paramKind")
            .filter(|p| p.is_object())
            .map(|p| ParamKind {
                api_version: str_of(p, "apiVersion").to_string(),
                kind: str_of(p, "kind").to_string(),
            });
        let has_params = param_kind.is_some();
        let var_names: Vec<String> = list(spec.get("variables"))
            .iter()
            .map(|v| str_of(v, "name").to_string())
            .collect();
        let decls = |n: usize| Declarations {
            names: if has_params {
                POLICY_NAMES_WITH_PARAMS
            } else {
                POLICY_NAMES
            },
            variables: Some(&var_names[..n]),
        };
        let all = decls(var_names.len());
        let message_decls = Declarations {
            names: if has_params {
                MESSAGE_NAMES_WITH_PARAMS
            } else {
                MESSAGE_NAMES
            },
            variables: Some(&var_names),
        };
        let variables = list(spec.get("variables"))
            .iter()
            .enumerate()
            .map(|(i, v)| Variable {
                name: var_names[i].clone(),
                program: Program::compile(str_of(v, "expression"), &decls(i)),
            })
            .collect();
        let validations = list(spec.get("validations"))
            .iter()
            .map(|v| Validation {
                expression: Program::compile(str_of(v, "expression"), &all),
                source: str_of(v, "expression").to_string(),
                message: str_of(v, "message").to_string(),
                message_expression: v
                    .get("messageExpression")
                    .and_then(Value::as_str)
                    .filter(|m| !m.trim().is_empty())
                    .map(|m| Program::compile(m, &message_decls)),
                reason: v.get("reason").and_then(Value::as_str).map(String::from),
            })
            .collect();
        let audit_annotations = list(spec.get("auditAnnotations"))
            .iter()
            .map(|a| AuditAnnotation {
                key: str_of(a, "key").to_string(),
                source: str_of(a, "valueExpression").to_string(),
                value: Program::compile(str_of(a, "valueExpression"), &all),
            })
            .collect();
        Policy {
            name: str_of(obj.get("metadata").unwrap_or(&Value::Null), "name").to_string(),
            uid: crate::object::str_at(obj, "/metadata/uid")
                .unwrap_or_default()
                .to_string(),
            generation: obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            fail: spec.get("failurePolicy").and_then(Value::as_str) != Some("Ignore"),
            param_kind,
            match_constraints: spec
                .get("matchConstraints")
                .filter(|m| m.is_object())
                .cloned(),
            match_conditions: list(spec.get("matchConditions"))
                .iter()
                .map(|c| Condition::compile(c, &all))
                .collect(),
            variables,
            validations,
            audit_annotations,
        }
    }

    /// The compile errors, as `field: message` (what a create of the policy refuses).
    pub fn compile_errors(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut add = |field: String, src: &str, r: &Result<Program, String>| {
            if let Err(e) = r {
                out.push((field, src.to_string(), e.clone()));
            }
        };
        for (i, c) in self.match_conditions.iter().enumerate() {
            let src = c.program.as_ref().map(|p| p.source()).unwrap_or_default();
            add(
                format!("spec.matchConditions[{i}].expression"),
                src,
                &c.program,
            );
        }
        for (i, v) in self.variables.iter().enumerate() {
            let src = v.program.as_ref().map(|p| p.source()).unwrap_or_default();
            add(format!("spec.variables[{i}].expression"), src, &v.program);
        }
        for (i, v) in self.validations.iter().enumerate() {
            add(
                format!("spec.validations[{i}].expression"),
                &v.source,
                &v.expression,
            );
            if let Some(m) = &v.message_expression {
                let src = m.as_ref().map(|p| p.source()).unwrap_or_default();
                add(format!("spec.validations[{i}].messageExpression"), src, m);
            }
        }
        for (i, a) in self.audit_annotations.iter().enumerate() {
            add(
                format!("spec.auditAnnotations[{i}].valueExpression"),
                &a.source,
                &a.value,
            );
        }
        out
    }

    /// One evaluation over `input` (its variables must be this policy's
    /// [`Policy::variables`]): kube's validator.
    pub fn validate(&self, input: &Input<'_>) -> Evaluation {
        let error = |message: String| Decision {
            deny: self.fail,
            error: true,
            message,
            reason: None,
        };
        if !self.match_conditions.is_empty() {
            match conditions_match(&self.match_conditions, input) {
                Ok(true) => {}
                Ok(false) => return Evaluation::default(),
                Err(e) => {
                    return Evaluation {
                        decisions: vec![error(e)],
                        ..Default::default()
                    }
                }
            }
        }
        let mut decisions = Vec::with_capacity(self.validations.len());
        for v in &self.validations {
            let r = match &v.expression {
                Err(e) => Err(format!("compilation error: {e}")),
                // Anything but true fails the validation, as in kube (whose type check
                // refuses other result types where it can tell).
                Ok(p) => match p.evaluate(input) {
                    Ok(v) => Ok(v == Value::Bool(true)),
                    Err(e) => Err(resulted_in_error(p.source(), &e)),
                },
            };
            decisions.push(match r {
                Ok(true) => Decision::default(),
                Ok(false) => Decision {
                    deny: true,
                    error: false,
                    message: self.message(v, input),
                    reason: v.reason.clone(),
                },
                Err(e) => error(e),
            });
        }
        let mut annotations = Vec::new();
        for a in &self.audit_annotations {
            let r = match &a.value {
                Err(e) => Err(format!("compilation error: {e}")),
                Ok(p) => match p.evaluate(input) {
                    Ok(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                    Ok(Value::Null) => Ok(None),
                    Ok(other) => Err(format!(
                        "valueExpression '{}' resulted in unsupported return type: {}. Return type must be either string or null.",
                        a.source,
                        type_name(&other)
                    )),
                    Err(e) => Err(resulted_in_error(p.source(), &e)),
                },
            };
            match r {
                Ok(Some(value)) => annotations.push(AnnotationResult::Publish {
                    key: a.key.clone(),
                    value,
                }),
                Ok(None) => {}
                // Under Ignore a failed annotation is left out.
                Err(e) if self.fail => annotations.push(AnnotationResult::Error(e)),
                Err(_) => {}
            }
        }
        Evaluation {
            decisions,
            annotations,
        }
    }

    /// The message of a failed validation: its `messageExpression` when that gives a
    /// usable string, else its `message`, else `failed expression: <expression>`.
    fn message(&self, v: &Validation, input: &Input<'_>) -> String {
        if let Some(Ok(p)) = &v.message_expression {
            if let Ok(Value::String(m)) = p.evaluate(input) {
                let m = m.trim();
                if !m.is_empty() && m.len() <= MAX_MESSAGE_BYTES && !m.contains('\n') {
                    return m.to_string();
                }
            }
        }
        let m = v.message.trim();
        if !m.is_empty() {
            return m.to_string();
        }
        format!("failed expression: {}", v.source.trim())
    }
}

/// The outcome of one validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Whether it refuses (a failed validation, or an error under `failurePolicy: Fail`).
    pub deny: bool,
    /// Whether it came from an error (evaluation, compilation, match conditions).
    pub error: bool,
    pub message: String,
    /// The validation's `reason`; None: kube's default, Invalid.
    pub reason: Option<String>,
}

/// An audit annotation's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnotationResult {
    Publish {
        key: String,
        value: String,
    },
    /// The expression failed under `failurePolicy: Fail`: the request is refused.
    Error(String),
}

/// One evaluation of a policy: a decision per validation (none when the match conditions
/// exclude the request, one error decision when they fail), and the audit annotations.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub decisions: Vec<Decision>,
    pub annotations: Vec<AnnotationResult>,
}

/// `spec.paramRef` of a binding.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamRef {
    pub name: String,
    pub namespace: String,
    /// A label selector (object form).
    pub selector: Option<Value>,
    /// `parameterNotFoundAction: Deny`: no param found is an error.
    pub deny_when_missing: bool,
}

/// A ValidatingAdmissionPolicyBinding.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub name: String,
    pub policy_name: String,
    pub param_ref: Option<ParamRef>,
    /// `spec.matchResources` (None: the binding narrows nothing).
    pub match_resources: Option<Value>,
    /// `validationActions` as written (Deny, Warn, Audit).
    pub actions: Vec<String>,
}

impl Binding {
    pub fn parse(obj: &Value) -> Binding {
        let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
        Binding {
            name: crate::object::name(obj).to_string(),
            policy_name: str_of(&spec, "policyName").to_string(),
            param_ref: spec
                .get("paramRef")
                .filter(|p| p.is_object())
                .map(|p| ParamRef {
                    name: str_of(p, "name").to_string(),
                    namespace: str_of(p, "namespace").to_string(),
                    selector: p.get("selector").filter(|s| s.is_object()).cloned(),
                    deny_when_missing: str_of(p, "parameterNotFoundAction") == "Deny",
                }),
            match_resources: spec
                .get("matchResources")
                .filter(|m| m.is_object())
                .cloned(),
            actions: list(spec.get("validationActions"))
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        }
    }

    pub fn has_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(spec: Value) -> Policy {
        Policy::compile(&json!({"metadata": {"name": "p", "generation": 1}, "spec": spec}))
    }

    fn run(p: &Policy, object: &Value, params: Option<&Value>) -> Evaluation {
        let null = Value::Null;
        let mut values = vec![
            ("object", object),
            ("oldObject", &null),
            ("request", &null),
            ("namespaceObject", &null),
        ];
        values.push(("params", params.unwrap_or(&null)));
        p.validate(&Input::new(values).with_variables(&p.variables))
    }

    #[test]
    fn messages_follow_kubes_order_of_preference() {
        let p = policy(json!({
            "validations": [
                {"expression": "object.spec.replicas <= 5"},
                {"expression": "object.spec.replicas <= 4", "message": "  at most four  ", "reason": "Forbidden"},
                {"expression": "object.spec.replicas <= 3", "message": "m",
                 "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > 3'"},
                {"expression": "object.spec.replicas <= 2", "message": "fallback",
                 "messageExpression": "'two\\nlines'"},
                {"expression": "object.spec.replicas <= 1", "message": "not a string",
                 "messageExpression": "object.spec.replicas"},
            ],
        }));
        let e = run(&p, &json!({"spec": {"replicas": 6}}), None);
        let messages: Vec<&str> = e.decisions.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "failed expression: object.spec.replicas <= 5",
                "at most four",
                "replicas 6 > 3",
                "fallback",
                "not a string"
            ]
        );
        assert!(e.decisions.iter().all(|d| d.deny && !d.error));
        assert_eq!(e.decisions[1].reason.as_deref(), Some("Forbidden"));
        let ok = run(&p, &json!({"spec": {"replicas": 1}}), None);
        assert!(ok.decisions.iter().all(|d| !d.deny));
    }

    #[test]
    fn errors_follow_the_failure_policy() {
        let spec = |fp: &str| json!({"failurePolicy": fp, "validations": [{"expression": "object.spec.missing > 1"}]});
        let fail = run(&policy(spec("Fail")), &json!({"spec": {}}), None);
        assert_eq!(
            fail.decisions,
            [Decision {
                deny: true,
                error: true,
                message:
                    "expression 'object.spec.missing > 1' resulted in error: no such key: missing"
                        .into(),
                reason: None,
            }]
        );
        let ignore = run(&policy(spec("Ignore")), &json!({"spec": {}}), None);
        assert!(!ignore.decisions[0].deny && ignore.decisions[0].error);
    }

    #[test]
    fn match_conditions_params_and_variables() {
        let p = Policy::compile(&json!({"metadata": {"name": "p"}, "spec": {
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConditions": [
                {"name": "not-exempt", "expression": "!('exempt' in object.metadata.labels)"},
            ],
            "variables": [
                {"name": "max", "expression": "int(params.data.max)"},
                {"name": "over", "expression": "object.spec.replicas > variables.max"},
            ],
            "validations": [{"expression": "!variables.over", "messageExpression": "'max is ' + string(variables.max)"}],
        }}));
        assert!(p.compile_errors().is_empty(), "{:?}", p.compile_errors());
        let params = json!({"data": {"max": "3"}});
        let obj = |labels: Value| json!({"metadata": {"labels": labels}, "spec": {"replicas": 4}});
        let e = run(&p, &obj(json!({})), Some(&params));
        assert_eq!(e.decisions[0].message, "max is 3");
        assert!(run(&p, &obj(json!({"exempt": "y"})), Some(&params))
            .decisions
            .is_empty());
        // A condition that cannot be evaluated is one error decision.
        let e = run(&p, &json!({"metadata": {}, "spec": {}}), Some(&params));
        assert_eq!(e.decisions.len(), 1);
        assert!(e.decisions[0].error, "{e:?}");
        // params only with a paramKind.
        let bad = policy(json!({"validations": [{"expression": "params.x == 1"}]}));
        assert_eq!(
            bad.compile_errors(),
            [(
                "spec.validations[0].expression".to_string(),
                "params.x == 1".to_string(),
                "undeclared reference to 'params' (in container '')".to_string()
            )]
        );
    }

    #[test]
    fn audit_annotations_publish_strings_and_skip_null() {
        let p = policy(json!({
            "auditAnnotations": [
                {"key": "replicas", "valueExpression": "'n=' + string(object.spec.replicas)"},
                {"key": "none", "valueExpression": "null"},
                {"key": "bad", "valueExpression": "object.spec.replicas"},
            ],
        }));
        let e = run(&p, &json!({"spec": {"replicas": 2}}), None);
        assert_eq!(
            e.annotations[0],
            AnnotationResult::Publish {
                key: "replicas".into(),
                value: "n=2".into()
            }
        );
        assert_eq!(e.annotations.len(), 2);
        assert!(
            matches!(&e.annotations[1], AnnotationResult::Error(m) if m.contains("unsupported return type: int"))
        );
    }

    #[test]
    fn conditions_aggregate_errors_but_false_wins() {
        let d = Declarations {
            names: WEBHOOK_CONDITION_NAMES,
            variables: None,
        };
        let c = |e: &str| Condition::compile(&json!({"name": "c", "expression": e}), &d);
        let obj = json!({"a": 1});
        let input = Input::new(vec![("object", &obj)]);
        assert_eq!(conditions_match(&[c("object.a == 1")], &input), Ok(true));
        assert_eq!(
            conditions_match(&[c("object.x == 1"), c("false")], &input),
            Ok(false)
        );
        assert_eq!(
            conditions_match(&[c("object.x == 1"), c("true")], &input),
            Err("expression 'object.x == 1' resulted in error: no such key: x".into())
        );
        assert!(conditions_match(&[c("object.x"), c("object.y")], &input)
            .unwrap_err()
            .starts_with("[expression 'object.x'"));
    }
}
