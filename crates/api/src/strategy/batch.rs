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
        validate_pod_spec(
            obj.pointer("/spec/template/spec"),
            "spec.template.spec",
            causes,
        );
        let rp = obj
            .pointer("/spec/template/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if rp != "Never" && rp != "OnFailure" {
            causes.push(Cause::not_supported(
                "spec.template.spec.restartPolicy",
                rp,
                &["OnFailure", "Never"],
            ));
        }
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
    default_at(js, &["parallelism"], json!(1));
    default_at(js, &["completions"], json!(1));
    default_at(js, &["backoffLimit"], json!(6));
    default_at(js, &["completionMode"], json!("NonIndexed"));
    default_at(js, &["suspend"], json!(false));
    default_at(js, &["podReplacementPolicy"], json!("TerminatingOrFailed"));
    if let Some(spec) = js.pointer_mut("/template/spec") {
        pod_spec_defaults(spec);
    }
}
