//! Jobs and CronJobs.

use serde_json::{json, Value};

use super::pod::{pod_spec_defaults, validate_pod_spec};
use super::{Cause, Strategy};
use crate::object::default_at;

pub(super) struct Job;
pub(super) struct CronJob;

impl Strategy for Job {
    /// Jobs select their pods by the job's uid, as kube's job strategy does.
    fn prepare_for_create(&self, obj: &mut Value) {
        if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
            return;
        }
        let uid = crate::object::str_at(obj, "/metadata/uid")
            .unwrap_or_default()
            .to_string();
        let name = crate::object::name(obj).to_string();
        let labels = json!({
            "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
            "controller-uid": uid, "job-name": name,
        });
        if obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"]["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            default_at(obj, &["spec", "template", "metadata", "labels"], json!({}));
            if let Some(m) = obj
                .pointer_mut("/spec/template/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                for (k, v) in labels.as_object().into_iter().flatten() {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn default(&self, obj: &mut Value) {
        job_spec(obj.get_mut("spec"));
    }

    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_job_spec(obj.get("spec"), "spec", causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        if old.pointer("/spec/selector") != new.pointer("/spec/selector")
            || old.pointer("/spec/template") != new.pointer("/spec/template")
        {
            causes.push(Cause::invalid("spec.template", "", "field is immutable"));
        }
    }
}

impl Strategy for CronJob {
    fn validate(&self, obj: &Value, causes: &mut Vec<Cause>) {
        validate_cronjob(obj, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<Cause>) {
        // A schedule stored with TZ= before that was refused may keep it (as kube allows),
        // unless the timeZone field is set too.
        let had_tz = old
            .pointer("/spec/schedule")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("TZ"));
        if had_tz {
            let before = causes.len();
            causes.retain(|c| !c.message.ends_with(TZ_IN_SCHEDULE));
            let schedule = new.pointer("/spec/schedule").and_then(Value::as_str);
            let zone = new.pointer("/spec/timeZone").is_some_and(|z| !z.is_null());
            if let Some(schedule) = schedule.filter(|_| causes.len() < before && zone) {
                causes.push(Cause::invalid(
                    "spec.schedule",
                    schedule,
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }

    fn default(&self, obj: &mut Value) {
        default_at(obj, &["spec", "concurrencyPolicy"], json!("Allow"));
        default_at(obj, &["spec", "suspend"], json!(false));
        default_at(obj, &["spec", "successfulJobsHistoryLimit"], json!(3));
        default_at(obj, &["spec", "failedJobsHistoryLimit"], json!(1));
        if let Some(js) = obj.pointer_mut("/spec/jobTemplate/spec") {
            if let Some(spec) = js.pointer_mut("/template/spec") {
                pod_spec_defaults(spec);
            }
            default_at(js, &["backoffLimit"], json!(6));
            default_at(js, &["completionMode"], json!("NonIndexed"));
            default_at(js, &["suspend"], json!(false));
        }
    }
}

fn job_spec(spec: Option<&mut Value>) {
    let Some(js) = spec else { return };
    // kube: completions defaults to 1 only when neither it nor parallelism is set (a
    // parallelism alone makes a work queue, finished by its first success).
    let unset = |js: &Value, f: &str| js.get(f).is_none_or(Value::is_null);
    if unset(js, "completions") && unset(js, "parallelism") {
        default_at(js, &["completions"], json!(1));
    }
    default_at(js, &["parallelism"], json!(1));
    default_at(js, &["backoffLimit"], json!(6));
    default_at(js, &["completionMode"], json!("NonIndexed"));
    default_at(js, &["suspend"], json!(false));
    let policy = if js.get("podFailurePolicy").is_some_and(Value::is_object) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default_at(js, &["podReplacementPolicy"], json!(policy));
    if let Some(spec) = js.pointer_mut("/template/spec") {
        pod_spec_defaults(spec);
    }
}

const TZ_IN_SCHEDULE: &str = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead";

fn int_at(v: Option<&Value>, field: &str) -> Option<i64> {
    v.and_then(|v| v.get(field)).and_then(Value::as_i64)
}

fn str_at<'a>(v: Option<&'a Value>, field: &str) -> Option<&'a str> {
    v.and_then(|v| v.get(field)).and_then(Value::as_str)
}

/// kube's `ValidateNonnegativeField`.
fn non_negative(v: Option<&Value>, at: &str, field: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = int_at(v, field).filter(|n| *n < 0) {
        causes.push(Cause::invalid_raw(
            format!("{at}.{field}"),
            &n.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

/// kube's `ValidateCronJobCreate`/`Update` (the spec; the name's length).
fn validate_cronjob(obj: &Value, causes: &mut Vec<Cause>) {
    let name = crate::object::name(obj);
    // Jobs are named `<cronjob>-<minutes>`, which must stay a 63-character label.
    if name.len() > 52 {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let spec = obj.get("spec");
    let zone = spec
        .and_then(|s| s.get("timeZone"))
        .filter(|z| !z.is_null());
    match str_at(spec, "schedule") {
        None | Some("") => causes.push(Cause::required("spec.schedule")),
        Some(schedule) => {
            if let Err(e) = crate::cron::parse(schedule) {
                causes.push(Cause::invalid("spec.schedule", schedule, &e.to_string()));
            }
            if schedule.contains("TZ") {
                causes.push(Cause::invalid("spec.schedule", schedule, TZ_IN_SCHEDULE));
            }
        }
    }
    if let Some(zone) = zone {
        validate_time_zone(zone, causes);
    }
    if let Some(p) = str_at(spec, "concurrencyPolicy") {
        if !matches!(p, "Allow" | "Forbid" | "Replace") {
            causes.push(Cause::not_supported(
                "spec.concurrencyPolicy",
                p,
                &["Allow", "Forbid", "Replace"],
            ));
        }
    } else {
        causes.push(Cause::required("spec.concurrencyPolicy"));
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(spec, "spec", f, causes);
    }
    validate_job_spec(
        obj.pointer("/spec/jobTemplate/spec"),
        "spec.jobTemplate.spec",
        causes,
    );
}

/// kube's `validateTimeZone`.
fn validate_time_zone(zone: &Value, causes: &mut Vec<Cause>) {
    let Some(z) = zone.as_str() else {
        causes.push(Cause::invalid_raw(
            "spec.timeZone",
            &zone.to_string(),
            "must be a string",
        ));
        return;
    };
    if z.is_empty() {
        causes.push(Cause::invalid(
            "spec.timeZone",
            z,
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !z.split('/').all(part_ok) {
        causes.push(Cause::invalid(
            "spec.timeZone",
            z,
            &format!("unknown time zone {z}"),
        ));
        return;
    }
    if z.eq_ignore_ascii_case("local") {
        causes.push(Cause::invalid(
            "spec.timeZone",
            z,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
    }
    if let Err(e) = crate::cron::load_location(z) {
        causes.push(Cause::invalid("spec.timeZone", z, &e.to_string()));
    }
}

/// kube's `ValidateJobSpec` (the parts skiff checks).
fn validate_job_spec(spec: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, at, f, causes);
    }
    match str_at(spec, "completionMode") {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if int_at(spec, "completions").is_none() {
                causes.push(Cause::required_because(
                    format!("{at}.completions"),
                    "when completion mode is Indexed",
                ));
            }
            if let Some(p) = int_at(spec, "parallelism").filter(|p| *p > 100_000) {
                causes.push(Cause::invalid_raw(
                    format!("{at}.parallelism"),
                    &p.to_string(),
                    "must be less than or equal to 100000 when completion mode is Indexed",
                ));
            }
        }
        Some(m) => causes.push(Cause::not_supported(
            format!("{at}.completionMode"),
            m,
            &["NonIndexed", "Indexed"],
        )),
    }
    let template = spec.and_then(|s| s.pointer("/template/spec"));
    validate_pod_spec(template, &format!("{at}.template.spec"), causes);
    let rp = template
        .and_then(|t| t.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if rp != "Never" && rp != "OnFailure" {
        causes.push(Cause::not_supported(
            format!("{at}.template.spec.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
    if let Some(pfp) = spec
        .and_then(|s| s.get("podFailurePolicy"))
        .filter(|p| !p.is_null())
    {
        if rp != "Never" {
            causes.push(Cause::invalid(
                format!("{at}.template.spec.restartPolicy"),
                rp,
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
        validate_pod_failure_policy(pfp, &format!("{at}.podFailurePolicy"), causes);
    }
}

/// kube's `validatePodFailurePolicy`.
fn validate_pod_failure_policy(pfp: &Value, at: &str, causes: &mut Vec<Cause>) {
    let rules = pfp.get("rules").and_then(Value::as_array);
    let rules = rules.map(Vec::as_slice).unwrap_or_default();
    if rules.len() > 20 {
        causes.push(Cause {
            reason: "FieldValueTooMany",
            field: format!("{at}.rules"),
            message: format!("Too many: {}: must have at most 20 items", rules.len()),
        });
    }
    for (i, rule) in rules.iter().enumerate() {
        let here = format!("{at}.rules[{i}]");
        let action = rule
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(action, "Count" | "FailIndex" | "FailJob" | "Ignore") {
            causes.push(Cause::not_supported(
                format!("{here}.action"),
                action,
                &["Count", "FailIndex", "FailJob", "Ignore"],
            ));
        }
        let codes = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conds = rule.get("onPodConditions").filter(|v| !v.is_null());
        match (codes, conds) {
            (Some(_), Some(_)) => causes.push(Cause::invalid_raw(
                here.clone(),
                "specifying both OnExitCodes and OnPodConditions is not supported",
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (None, None) => causes.push(Cause::required_because(
                here.clone(),
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
        if let Some(codes) = codes {
            validate_on_exit_codes(codes, &format!("{here}.onExitCodes"), causes);
        }
        for (j, c) in conds
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let p = format!("{here}.onPodConditions[{j}]");
            let status = c.get("status").and_then(Value::as_str).unwrap_or_default();
            if !matches!(status, "True" | "False" | "Unknown") {
                causes.push(Cause::not_supported(
                    format!("{p}.status"),
                    status,
                    &["True", "False", "Unknown"],
                ));
            }
            if c.get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required(format!("{p}.type")));
            }
        }
    }
}

fn validate_on_exit_codes(codes: &Value, at: &str, causes: &mut Vec<Cause>) {
    let op = codes
        .get("operator")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !matches!(op, "In" | "NotIn") {
        causes.push(Cause::not_supported(
            format!("{at}.operator"),
            op,
            &["In", "NotIn"],
        ));
    }
    let values: Vec<i64> = codes
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let vat = format!("{at}.values");
    if values.is_empty() {
        causes.push(Cause::invalid_raw(
            vat.clone(),
            "[]",
            "at least one value is required",
        ));
    }
    if values.len() > 255 {
        causes.push(Cause {
            reason: "FieldValueTooMany",
            field: vat.clone(),
            message: format!("Too many: {}: must have at most 255 items", values.len()),
        });
    }
    let mut prev: Option<i64> = None;
    for (k, v) in values.iter().enumerate() {
        let p = format!("{vat}[{k}]");
        if op == "In" && *v == 0 {
            causes.push(Cause::invalid_raw(
                p.clone(),
                "0",
                "must not be 0 for the In operator",
            ));
        }
        match prev {
            Some(x) if x == *v => causes.push(Cause::duplicate(p.clone(), &v.to_string())),
            Some(x) if x > *v => causes.push(Cause::invalid_raw(
                p.clone(),
                &v.to_string(),
                "must be ordered",
            )),
            _ => {}
        }
        prev = Some(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob(spec: Value) -> Value {
        let mut obj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "cj", "namespace": "default"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        for (k, v) in spec.as_object().into_iter().flatten() {
            obj["spec"][k] = v.clone();
        }
        CronJob.default(&mut obj);
        obj
    }

    fn messages(obj: &Value) -> Vec<String> {
        let mut causes = Vec::new();
        CronJob.validate(obj, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn cron_schedules_and_zones_are_refused_with_kube_messages() {
        assert_eq!(
            messages(&cronjob(json!({"schedule": "*/5 * * * *"}))),
            Vec::<String>::new()
        );
        assert_eq!(
            messages(&cronjob(json!({"schedule": "* * *"}))),
            ["spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields, found 3: [* * *]"]
        );
        assert_eq!(
            messages(&cronjob(
                json!({"schedule": "* * * * *", "timeZone": "Mars/Phobos"})
            )),
            ["spec.timeZone: Invalid value: \"Mars/Phobos\": unknown time zone Mars/Phobos"]
        );
        assert!(messages(&cronjob(
            json!({"schedule": "@daily", "timeZone": "Europe/Paris"})
        ))
        .is_empty());
        assert_eq!(
            messages(&cronjob(json!({"schedule": "TZ=UTC * * * * *"}))),
            ["spec.schedule: Invalid value: \"TZ=UTC * * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
        assert_eq!(
            messages(&cronjob(json!({}))),
            ["spec.schedule: Required value"]
        );
        // Kept on update when the stored schedule already had it.
        let old = cronjob(json!({"schedule": "TZ=UTC * * * * *"}));
        let causes = crate::strategy::validate_update("CronJob", &old, &old);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn job_specs_are_checked() {
        let job = |spec: Value| {
            let mut obj = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
            for (k, v) in spec.as_object().into_iter().flatten() {
                obj["spec"][k] = v.clone();
            }
            Job.default(&mut obj);
            let mut causes = Vec::new();
            Job.validate(&obj, &mut causes);
            causes
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect::<Vec<_>>()
        };
        assert!(job(json!({})).is_empty());
        assert_eq!(
            job(json!({"parallelism": -1, "backoffLimit": -2})),
            [
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.backoffLimit: Invalid value: -2: must be greater than or equal to 0"
            ]
        );
        assert_eq!(
            job(json!({"completionMode": "Indexed", "parallelism": 2})),
            ["spec.completions: Required value: when completion mode is Indexed"]
        );
        assert!(job(json!({"completionMode": "Indexed"})).is_empty());
        assert_eq!(
            job(json!({"podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3, 1]}},
                {"action": "Explode", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "Ignore"},
            ]}})),
            [
                "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 1: must be ordered",
                "spec.podFailurePolicy.rules[1].action: Unsupported value: \"Explode\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                "spec.podFailurePolicy.rules[2]: Required value: specifying one of OnExitCodes and OnPodConditions is required",
            ]
        );
    }
}
