//! ValidatingAdmissionPolicies: one server, policies and bindings applied with kubectl,
//! and kubectl 1.27 and 1.33 seeing what kube-apiserver answers — the documentation's
//! example denying `kubectl apply`, `Warn` and `Audit` bindings, params from a ConfigMap,
//! match conditions and namespace selectors that skip, `messageExpression`, `reason`,
//! failure policies on a runtime error, deletes, and a deleted binding ending enforcement.

use serde_json::Value;

use crate::common::{eventually, Out, Server, VERSIONS};

/// The example of kube's documentation (ValidatingAdmissionPolicy concepts page).
const DOCS_EXAMPLE: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: "demo-policy.example.com"
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups:   ["apps"]
      apiVersions: ["v1"]
      operations:  ["CREATE", "UPDATE"]
      resources:   ["deployments"]
  validations:
    - expression: "object.spec.replicas <= 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: "demo-binding-test.example.com"
spec:
  policyName: "demo-policy.example.com"
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        environment: test
"#;

fn namespace(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n---\n"
    )
}

fn deployment(ns: &str, name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: c
        image: kubia:1
"#
    )
}

fn configmap(ns: &str, name: &str, labels: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\ndata: {{{data}}}\n"
    )
}

fn apply(s: &Server, v: &str, yaml: &str, extra: &[&str]) -> Out {
    let args: Vec<&str> = ["apply", "-f", "-"].iter().chain(extra).copied().collect();
    s.kubectl_with(v, &args, Some(yaml), &[])
}

/// Polls (server-side dry runs of `yaml`) until `f` accepts the answer: a policy or
/// binding just written reaches the server's index through its watch.
fn until(s: &Server, what: &str, yaml: &str, f: impl Fn(&Out) -> bool) -> Out {
    eventually(what, || {
        let out = apply(s, VERSIONS[1], yaml, &["--dry-run=server"]);
        f(&out).then_some(out)
    })
}

fn audit_events(s: &Server) -> Vec<Value> {
    std::fs::read_to_string(s.dir.path().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn validating_admission_policies_are_enforced_as_kube() {
    let s = Server::start();
    apply(
        &s,
        VERSIONS[1],
        &[
            namespace("vap-test", "environment: test"),
            namespace("vap-prod", "environment: prod"),
            namespace("vap-params", "vap-case: params"),
            namespace("vap-selected", "vap-case: selected"),
            namespace("vap-errors", "vap-case: errors"),
        ]
        .concat(),
        &[],
    )
    .ok();

    // The documentation's example: `kubectl apply` of too many replicas is refused with
    // kube's status (reason Invalid, the cause kubectl prints after "is invalid: :").
    apply(&s, VERSIONS[1], DOCS_EXAMPLE, &[]).ok();
    until(
        &s,
        "the docs example in force",
        &deployment("vap-test", "probe", 6),
        |o| o.code != 0,
    );
    for v in VERSIONS {
        let name = format!("web-{}", v.replace('.', "-"));
        let denied = apply(&s, v, &deployment("vap-test", &name, 6), &[]).fails();
        assert!(
            denied.stderr.contains(&format!(
                "The deployments \"{name}\" is invalid: : ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
            )),
            "{denied:#?}"
        );
        s.kubectl(v, &["get", "deployment", "-n", "vap-test", &name])
            .fails();
        // Within the limit it is created; an update past it is refused too.
        apply(&s, v, &deployment("vap-test", &name, 5), &[]).ok();
        let update = apply(&s, v, &deployment("vap-test", &name, 7), &[]).fails();
        assert!(
            update
                .stderr
                .contains("denied request: failed expression: object.spec.replicas <= 5"),
            "{update:#?}"
        );
        // The namespace selector of the binding skips other namespaces.
        apply(&s, v, &deployment("vap-prod", &name, 6), &[]).ok();
    }
    // The message as the status carries it (what `kubectl create deployment` prints).
    let created = s
        .kubectl(
            VERSIONS[1],
            &[
                "create",
                "deployment",
                "nginx",
                "-n",
                "vap-test",
                "--image=nginx",
                "--replicas=6",
            ],
        )
        .fails();
    assert!(
        created.stderr.contains(
            "deployments.apps \"nginx\" is forbidden: ValidatingAdmissionPolicy 'demo-policy.example.com' with binding 'demo-binding-test.example.com' denied request: failed expression: object.spec.replicas <= 5"
        ),
        "{created:#?}"
    );
    let raw = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "raw", "namespace": "vap-test"},
        "spec": {"replicas": 9, "selector": {"matchLabels": {"app": "raw"}},
                 "template": {"metadata": {"labels": {"app": "raw"}},
                              "spec": {"containers": [{"name": "c", "image": "kubia:1"}]}}},
    });
    let (code, status) = s.send(
        "POST",
        "/apis/apps/v1/namespaces/vap-test/deployments",
        "application/json",
        &raw.to_string(),
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "deployments");
    assert_eq!(status["details"]["group"], "apps");

    // Warn and Audit: the request goes through with kubectl's warning and an audit
    // annotation; a policy with a reason answers with it.
    let labels_policy = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: team-label
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
    namespaceSelector:
      matchLabels:
        environment: prod
  validations:
  - expression: "has(object.metadata.labels) && 'team' in object.metadata.labels"
    message: "every ConfigMap needs a team label"
  - expression: "!object.metadata.name.startsWith('forbidden-')"
    reason: Forbidden
    messageExpression: "'the name ' + object.metadata.name + ' is reserved'"
  auditAnnotations:
  - key: team
    valueExpression: "has(object.metadata.labels) && 'team' in object.metadata.labels ? object.metadata.labels.team : null"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: team-label-warn
spec:
  policyName: team-label
  validationActions: [Warn, Audit]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: team-label-reserved
spec:
  policyName: team-label
  validationActions: [Deny]
  matchResources:
    objectSelector:
      matchLabels:
        reserved: "yes"
"#;
    apply(&s, VERSIONS[1], labels_policy, &[]).ok();
    until(
        &s,
        "the Warn binding in force",
        &configmap("vap-prod", "probe", "", "a: b"),
        |o| {
            o.stderr
                .contains("Validation failed for ValidatingAdmissionPolicy 'team-label'")
        },
    );
    for v in VERSIONS {
        let name = format!("unlabelled-{}", v.replace('.', "-"));
        let warned = apply(&s, v, &configmap("vap-prod", &name, "", "a: b"), &[]).ok();
        assert!(
            warned.stderr.contains(
                "Warning: Validation failed for ValidatingAdmissionPolicy 'team-label' with binding 'team-label-warn': every ConfigMap needs a team label"
            ),
            "{warned:#?}"
        );
        s.kubectl(v, &["get", "configmap", "-n", "vap-prod", &name])
            .ok();
    }
    let forbidden = apply(
        &s,
        VERSIONS[0],
        &configmap(
            "vap-prod",
            "forbidden-x",
            "team: a, reserved: \"yes\"",
            "a: b",
        ),
        &[],
    )
    .fails();
    assert!(
        forbidden.stderr.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": configmaps \"forbidden-x\" is forbidden: ValidatingAdmissionPolicy 'team-label' with binding 'team-label-reserved' denied request: the name forbidden-x is reserved"
        ),
        "{forbidden:#?}"
    );
    apply(
        &s,
        VERSIONS[1],
        &configmap("vap-prod", "labelled", "team: blue", "a: b"),
        &[],
    )
    .ok();
    let failure = eventually("the Audit annotation in the audit log", || {
        audit_events(&s)
            .into_iter()
            .find(|e| e["objectRef"]["name"] == "unlabelled-1-27" && e["verb"] == "create")
    });
    let recorded: Value = serde_json::from_str(
        failure["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .as_str()
            .unwrap_or_else(|| panic!("{failure:#}")),
    )
    .unwrap();
    assert_eq!(
        recorded,
        serde_json::json!([{"message": "every ConfigMap needs a team label", "policy": "team-label",
            "binding": "team-label-warn", "expressionIndex": 0, "validationActions": ["Warn", "Audit"]}])
    );
    let team = eventually("the policy's audit annotation", || {
        audit_events(&s)
            .into_iter()
            .find(|e| e["objectRef"]["name"] == "labelled" && e["verb"] == "create")
    });
    assert_eq!(team["annotations"]["team-label/team"], "blue", "{team:#}");

    // Params from a ConfigMap: each request reads the current one; none found is an
    // error under parameterNotFoundAction Deny; messageExpression and match conditions.
    let params_policy = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: replica-limit
spec:
  paramKind:
    apiVersion: v1
    kind: ConfigMap
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments"]
  matchConditions:
  - name: not-exempt
    expression: "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"
  variables:
  - name: limit
    expression: "int(params.data.maxReplicas)"
  validations:
  - expression: "object.spec.replicas <= variables.limit"
    messageExpression: "'replicas ' + string(object.spec.replicas) + ' exceed the limit of ' + string(variables.limit)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-limit-params
spec:
  policyName: replica-limit
  validationActions: [Deny]
  paramRef:
    name: limits
    namespace: vap-params
    parameterNotFoundAction: Deny
  matchResources:
    namespaceSelector:
      matchLabels:
        vap-case: params
"#;
    apply(
        &s,
        VERSIONS[1],
        &configmap("vap-params", "limits", "", "maxReplicas: \"3\""),
        &[],
    )
    .ok();
    apply(&s, VERSIONS[1], params_policy, &[]).ok();
    let denied = until(
        &s,
        "the params policy in force",
        &deployment("vap-params", "api", 4),
        |o| o.code != 0,
    );
    assert!(
        denied.stderr.contains(
            "ValidatingAdmissionPolicy 'replica-limit' with binding 'replica-limit-params' denied request: replicas 4 exceed the limit of 3"
        ),
        "{denied:#?}"
    );
    apply(&s, VERSIONS[0], &deployment("vap-params", "api", 3), &[]).ok();
    // A match condition excludes labelled objects.
    let exempt = deployment("vap-params", "exempt", 9).replace(
        "metadata:\n  name: exempt\n",
        "metadata:\n  name: exempt\n  labels: {exempt: \"yes\"}\n",
    );
    apply(&s, VERSIONS[0], &exempt, &[]).ok();
    // A new limit applies to the next request.
    apply(
        &s,
        VERSIONS[1],
        &configmap("vap-params", "limits", "", "maxReplicas: \"10\""),
        &[],
    )
    .ok();
    apply(&s, VERSIONS[0], &deployment("vap-params", "api", 8), &[]).ok();
    s.kubectl(
        VERSIONS[1],
        &["delete", "configmap", "-n", "vap-params", "limits"],
    )
    .ok();
    let missing = apply(&s, VERSIONS[1], &deployment("vap-params", "api2", 1), &[]).fails();
    assert!(
        missing.stderr.contains(
            "ValidatingAdmissionPolicy 'replica-limit' with binding 'replica-limit-params' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
        ),
        "{missing:#?}"
    );

    // Under parameterNotFoundAction Allow a missing param lets requests through.
    let allow = params_policy.split("---").nth(1).unwrap().replace(
        "parameterNotFoundAction: Deny",
        "parameterNotFoundAction: Allow",
    );
    apply(&s, VERSIONS[1], &allow, &[]).ok();
    until(
        &s,
        "parameterNotFoundAction Allow in force",
        &deployment("vap-params", "api2", 1),
        |o| o.code == 0,
    );
    // A selector picks several params: each is evaluated.
    let selected = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: replica-limit-selected
spec:
  policyName: replica-limit
  validationActions: [Deny]
  paramRef:
    selector:
      matchLabels:
        limit: "yes"
    parameterNotFoundAction: Deny
  matchResources:
    namespaceSelector:
      matchLabels:
        vap-case: selected
---
{}---
{}"#,
        configmap(
            "vap-selected",
            "high",
            "limit: \"yes\"",
            "maxReplicas: \"5\""
        ),
        configmap(
            "vap-selected",
            "low",
            "limit: \"yes\"",
            "maxReplicas: \"2\""
        ),
    );
    apply(&s, VERSIONS[1], &selected, &[]).ok();
    let low = until(
        &s,
        "the selector binding in force",
        &deployment("vap-selected", "sel", 3),
        |o| o.code != 0,
    );
    assert!(
        low.stderr.contains(
            "with binding 'replica-limit-selected' denied request: replicas 3 exceed the limit of 2"
        ),
        "{low:#?}"
    );
    apply(&s, VERSIONS[0], &deployment("vap-selected", "sel", 2), &[]).ok();

    // A runtime error: denied under failurePolicy Fail, let through under Ignore; deletes
    // see the old object.
    let errors_policy = |name: &str, fp: &str, label: &str| {
        format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {name}
spec:
  failurePolicy: {fp}
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
    objectSelector:
      matchLabels:
        policy: {label}
  validations:
  - expression: "object.data.required == 'yes'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {name}
spec:
  policyName: {name}
  validationActions: [Deny]
---
"#
        )
    };
    let protect = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: protect
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["DELETE"]
      resources: ["configmaps"]
  validations:
  - expression: "object == null && oldObject.metadata.?labels.?protect.orValue('no') != 'yes'"
    message: "this one is protected"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: protect
spec:
  policyName: protect
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        vap-case: errors
"#;
    apply(
        &s,
        VERSIONS[1],
        // In this order: once the last binding is in force, so are the others.
        &[
            format!("{protect}---\n"),
            errors_policy("error-fail", "Fail", "fail"),
            errors_policy("error-ignore", "Ignore", "ignore"),
        ]
        .concat(),
        &[],
    )
    .ok();
    let fail = until(
        &s,
        "the Fail policy in force",
        &configmap("vap-errors", "probe", "policy: fail", "other: x"),
        |o| o.code != 0,
    );
    assert!(
        fail.stderr.contains(
            "ValidatingAdmissionPolicy 'error-fail' with binding 'error-fail' denied request: expression 'object.data.required == 'yes'' resulted in error: no such key: required"
        ),
        "{fail:#?}"
    );
    // Under Ignore the error lets the request through (a wrong value is still a plain
    // denial, which tells when the policy is in force).
    until(
        &s,
        "the Ignore policy in force",
        &configmap("vap-errors", "probe", "policy: ignore", "required: \"no\""),
        |o| o.code != 0,
    );
    for v in VERSIONS {
        let name = format!("ignored-{}", v.replace('.', "-"));
        apply(
            &s,
            v,
            &configmap(
                "vap-errors",
                &name,
                "policy: ignore, protect: \"yes\"",
                "other: x",
            ),
            &[],
        )
        .ok();
        let del = s
            .kubectl(v, &["delete", "configmap", "-n", "vap-errors", &name])
            .fails();
        assert!(
            del.stderr.contains(&format!(
                "configmaps \"{name}\" is invalid: : ValidatingAdmissionPolicy 'protect' with binding 'protect' denied request: this one is protected"
            )) || del.stderr.contains(
                "ValidatingAdmissionPolicy 'protect' with binding 'protect' denied request: this one is protected"
            ),
            "{del:#?}"
        );
    }

    // A deleted binding ends enforcement.
    s.kubectl(
        VERSIONS[1],
        &[
            "delete",
            "validatingadmissionpolicybinding",
            "demo-binding-test.example.com",
        ],
    )
    .ok();
    until(
        &s,
        "the docs example out of force",
        &deployment("vap-test", "free", 6),
        |o| o.code == 0,
    );
    apply(&s, VERSIONS[0], &deployment("vap-test", "free", 6), &[]).ok();

    // A policy whose expression does not compile is refused when it is written.
    let bad = DOCS_EXAMPLE
        .split("---")
        .next()
        .unwrap()
        .replace("object.spec.replicas <= 5", "object.spec.replicas <=")
        .replace("demo-policy.example.com", "broken");
    let refused = apply(&s, VERSIONS[1], &bad, &[]).fails();
    assert!(
        refused.stderr.contains(
            "spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": compilation failed: ERROR: <input>:"
        ),
        "{refused:#?}"
    );
}
