//! PriorityClasses (scheduling.k8s.io/v1) and pod priority admission, as kube-apiserver's
//! PriorityClass strategy and `Priority` admission plugin.
//!
//! Contract: the two system classes ([`system_priority_classes`]) exist in every cluster
//! (the API server creates them at start), may not be deleted, and keep their value and
//! `globalDefault`; other classes may not use the `system-` prefix nor a value above
//! 1,000,000,000; a class's value and preemptionPolicy never change. On pod create the
//! API server reads every class and calls [`admit_pod_priority`], which resolves
//! `spec.priorityClassName` (or the global default class) into `spec.priority` and
//! `spec.preemptionPolicy`; the I/O is the API server's, the rules are here.

use serde_json::{json, Value};

use super::{Cause, Strategy};
use crate::object::default_at;

/// The highest value a class outside the system ones may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
const SYSTEM_PREFIX: &str = "system-";
const PREEMPT_LOWER: &str = "PreemptLowerPriority";

/// The built-in classes: name, value, description.
const SYSTEM: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The built-in classes as objects (without server metadata), for the API server to
/// create at start.
pub fn system_priority_classes() -> Vec<Value> {
    SYSTEM
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value, "description": description,
                "preemptionPolicy": PREEMPT_LOWER,
            })
        })
        .collect()
}

fn value(pc: &Value) -> i64 {
    pc.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn global_default(pc: &Value) -> bool {
    pc.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

fn preemption(pc: &Value) -> Option<&str> {
    pc.get("preemptionPolicy").and_then(Value::as_str)
}

/// Whether `name` with `value`/`global` is one of the system classes, or why not.
fn known_system_class(name: &str, value: i64, global: bool) -> Result<(), String> {
    match SYSTEM.iter().find(|(n, ..)| *n == name) {
        None => Err(format!("{name} is not a known system priority class")),
        Some((_, v, _)) if *v != value => Err(format!("value of {name} PriorityClass must be {v}")),
        Some(_) if global => Err(format!(
            "globalDefault of {name} PriorityClass must be false"
        )),
        Some(_) => Ok(()),
    }
}

/// `ValidatePreemptionPolicy`: the field's cause, if the policy is not a known one.
pub(super) fn preemption_policy(policy: Option<&Value>, field: &str) -> Option<Cause> {
    match policy? {
        Value::Null => None,
        Value::String(s) if s == PREEMPT_LOWER || s == "Never" => None,
        Value::String(s) if s.is_empty() => Some(Cause::required(field)),
        other => Some(Cause::not_supported(
            field,
            other.as_str().unwrap_or_default(),
            &["Never", PREEMPT_LOWER],
        )),
    }
}

pub(super) struct PriorityClass;

impl Strategy for PriorityClass {
    fn has_generation(&self) -> bool {
        false
    }

    fn default(&self, obj: &mut Value) {
        default_at(obj, &["preemptionPolicy"], json!(PREEMPT_LOWER));
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        let name = crate::object::name(obj);
        if name.starts_with(SYSTEM_PREFIX) {
            if let Err(e) = known_system_class(name, value(obj), global_default(obj)) {
                causes.push(Cause::forbidden(
                    "metadata.name",
                    &format!("priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {e}"),
                ));
            }
        } else if value(obj) > HIGHEST_USER_DEFINABLE_PRIORITY {
            causes.push(Cause::forbidden(
                "value",
                &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
            ));
        }
        causes.extend(preemption_policy(
            obj.get("preemptionPolicy"),
            "preemptionPolicy",
        ));
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        if value(old) != value(new) {
            causes.push(Cause::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        if preemption(old) != preemption(new) {
            causes.push(Cause::invalid(
                "preemptionPolicy",
                preemption(new).unwrap_or("null"),
                "field is immutable",
            ));
        }
    }

    fn delete_forbidden(&self, obj: &Value) -> Option<&'static str> {
        let name = crate::object::name(obj);
        SYSTEM
            .iter()
            .any(|(n, ..)| *n == name)
            .then_some("this is a system priority class and cannot be deleted")
    }
}

/// The global default class among `classes`: the lowest-valued one marked
/// `globalDefault` (two can exist after a race between API servers).
fn default_class(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| global_default(c))
        .min_by_key(|c| value(c))
}

/// Why `pc` may not be written as a global default while `classes` exist (admission on
/// create and update): only one class may be the default.
pub fn default_class_conflict(pc: &Value, classes: &[Value], creating: bool) -> Option<String> {
    if !global_default(pc) {
        return None;
    }
    let d = default_class(classes)?;
    let dname = crate::object::name(d);
    (creating || dname != crate::object::name(pc)).then(|| {
        format!("PriorityClass {dname} is already marked as default. Only one default can exist")
    })
}

/// Why a pod is refused by priority admission (kube answers 403 Forbidden with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityRefusal(pub String);

/// Priority admission of a new pod against every PriorityClass: `priorityClassName`
/// (or the global default class, whose name the pod then gets) sets `spec.priority` and
/// `spec.preemptionPolicy`; a pod naming no class and with no default gets priority 0.
/// A pod that names a missing class, or sets a priority or policy other than its class
/// gives, is refused with kube's message.
pub fn admit_pod_priority(pod: &mut Value, classes: &[Value]) -> Result<(), PriorityRefusal> {
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
        return Ok(());
    };
    let named = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let (priority, policy) = match named {
        Some(name) => {
            let pc = classes
                .iter()
                .find(|c| crate::object::name(c) == name)
                .ok_or_else(|| {
                    PriorityRefusal(format!("no PriorityClass with name {name} was found"))
                })?;
            (value(pc), preemption(pc).map(str::to_string))
        }
        None => match default_class(classes) {
            Some(d) => {
                spec["priorityClassName"] = json!(crate::object::name(d));
                (value(d), preemption(d).map(str::to_string))
            }
            None => (0, None),
        },
    };
    if let Some(p) = spec.get("priority").and_then(Value::as_i64) {
        if p != priority {
            return Err(PriorityRefusal(format!(
                "the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
    }
    spec["priority"] = json!(priority);
    let policy = policy.unwrap_or_else(|| PREEMPT_LOWER.to_string());
    if let Some(p) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        if p != policy {
            return Err(PriorityRefusal(format!(
                "the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
    }
    spec["preemptionPolicy"] = json!(policy);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{for_kind, validate, validate_update};

    fn pc(name: &str, value: i64, global: bool) -> Value {
        let mut o = json!({"metadata": {"name": name}, "value": value, "globalDefault": global});
        for_kind("PriorityClass").default(&mut o);
        o
    }

    fn messages(c: Vec<Cause>) -> Vec<String> {
        c.into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn classes_validate_as_kube() {
        assert!(validate("PriorityClass", &pc("high", 1_000_000_000, false)).is_empty());
        for sys in system_priority_classes() {
            let mut sys = sys;
            for_kind("PriorityClass").default(&mut sys);
            assert!(validate("PriorityClass", &sys).is_empty(), "{sys}");
        }
        assert_eq!(
            messages(validate("PriorityClass", &pc("high", 1_000_000_001, false))),
            ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
        );
        assert_eq!(
            messages(validate("PriorityClass", &pc("system-mine", 5, false))),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"]
        );
        assert_eq!(
            messages(validate("PriorityClass", &pc("system-node-critical", 5, false))),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: value of system-node-critical PriorityClass must be 2000001000"]
        );
        let mut bad = pc("x", 1, false);
        bad["preemptionPolicy"] = json!("Sometimes");
        assert_eq!(
            messages(validate("PriorityClass", &bad)),
            ["preemptionPolicy: Unsupported value: \"Sometimes\": supported values: \"Never\", \"PreemptLowerPriority\""]
        );
        assert_eq!(
            messages(validate_update(
                "PriorityClass",
                &pc("x", 1, false),
                &pc("x", 2, false)
            )),
            ["value: Forbidden: may not be changed in an update."]
        );
        let s = for_kind("PriorityClass");
        assert!(s
            .delete_forbidden(&pc("system-node-critical", 0, false))
            .is_some());
        assert!(s.delete_forbidden(&pc("high", 0, false)).is_none());
    }

    #[test]
    fn one_global_default() {
        let classes = vec![pc("a", 10, true), pc("b", 5, false)];
        assert_eq!(
            default_class_conflict(&pc("c", 1, true), &classes, true).as_deref(),
            Some("PriorityClass a is already marked as default. Only one default can exist")
        );
        assert_eq!(
            default_class_conflict(&pc("a", 10, true), &classes, false),
            None
        );
        assert!(default_class_conflict(&pc("b", 5, true), &classes, false).is_some());
        assert_eq!(
            default_class_conflict(&pc("c", 1, false), &classes, true),
            None
        );
    }

    #[test]
    fn pods_get_their_class_priority() {
        let mut classes = vec![pc("high", 1000, false)];
        classes[0]["preemptionPolicy"] = json!("Never");
        let mut pod = json!({"spec": {"priorityClassName": "high"}});
        admit_pod_priority(&mut pod, &classes).unwrap();
        assert_eq!(pod["spec"]["priority"], 1000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");

        let mut pod = json!({"spec": {}});
        admit_pod_priority(&mut pod, &classes).unwrap();
        assert_eq!(pod["spec"]["priority"], 0);
        assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        assert!(pod["spec"].get("priorityClassName").is_none());

        classes.push(pc("normal", 7, true));
        let mut pod = json!({"spec": {}});
        admit_pod_priority(&mut pod, &classes).unwrap();
        assert_eq!(pod["spec"]["priority"], 7);
        assert_eq!(pod["spec"]["priorityClassName"], "normal");

        let mut pod = json!({"spec": {"priorityClassName": "foo"}});
        assert_eq!(
            admit_pod_priority(&mut pod, &classes),
            Err(PriorityRefusal(
                "no PriorityClass with name foo was found".into()
            ))
        );
        let mut pod = json!({"spec": {"priorityClassName": "high", "priority": 5}});
        assert_eq!(
            admit_pod_priority(&mut pod, &classes).unwrap_err().0,
            "the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"
        );
        let mut pod = json!({"spec": {"priorityClassName": "high", "priority": 1000}});
        assert!(admit_pod_priority(&mut pod, &classes).is_ok());
    }
}
