use serde_json::{json, Value};

use super::escalation::{
    default_binding, validate_binding, validate_binding_update, validate_role,
};
use super::*;

fn role(ns: &str, name: &str, rules: Value) -> Value {
    json!({"kind": "Role", "metadata": {"namespace": ns, "name": name}, "rules": rules})
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules})
}

fn role_binding(ns: &str, name: &str, role_kind: &str, role: &str, subjects: Value) -> Value {
    json!({
        "kind": "RoleBinding",
        "metadata": {"namespace": ns, "name": name},
        "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role},
        "subjects": subjects,
    })
}

fn cluster_role_binding(name: &str, role: &str, subjects: Value) -> Value {
    json!({
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

const APP: &str = "system:serviceaccount:default:app";

fn app_groups() -> Vec<&'static str> {
    vec![
        "system:serviceaccounts",
        "system:serviceaccounts:default",
        "system:authenticated",
    ]
}

/// The issue's acceptance policy: Role `reader` (get/list pods in default) bound to
/// ServiceAccount default/app, plus a few more objects the cases below use.
fn policy() -> Policy {
    Policy::new(
        vec![
            role(
                "default",
                "reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
            ),
            role(
                "default",
                "one-secret",
                json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["x"], "verbs": ["get", "update"]}]),
            ),
            role(
                "default",
                "subresources",
                json!([
                    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                    {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]},
                ]),
            ),
        ],
        vec![
            cluster_role(
                "deploy-reader",
                json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]}]),
            ),
            cluster_role(
                "everything",
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
            ),
            cluster_role(
                "health",
                json!([{"nonResourceURLs": ["/healthz", "/apis/*"], "verbs": ["get"]}]),
            ),
        ],
        vec![
            role_binding(
                "default",
                "app-reads-pods",
                "Role",
                "reader",
                json!([{"kind": "ServiceAccount", "name": "app", "namespace": "default"}]),
            ),
            role_binding(
                "team",
                "app-reads-deployments",
                "ClusterRole",
                "deploy-reader",
                json!([{"kind": "ServiceAccount", "name": "app", "namespace": "default"}]),
            ),
            role_binding(
                "default",
                "alice-one-secret",
                "Role",
                "one-secret",
                json!([{"kind": "User", "name": "alice"}]),
            ),
            role_binding(
                "default",
                "alice-subresources",
                "Role",
                "subresources",
                json!([{"kind": "User", "name": "alice"}]),
            ),
            role_binding(
                "default",
                "dangling",
                "Role",
                "missing",
                json!([{"kind": "User", "name": "bob"}]),
            ),
        ],
        vec![
            cluster_role_binding(
                "ops",
                "everything",
                json!([{"kind": "Group", "name": "ops"}]),
            ),
            cluster_role_binding(
                "health",
                "health",
                json!([{"kind": "Group", "name": "system:authenticated"}]),
            ),
        ],
    )
}

#[test]
fn authorize_table() {
    let p = policy();
    let a = app_groups();
    #[rustfmt::skip]
    let cases: Vec<(&str, Attributes, bool)> = vec![
        ("acceptance: list pods", Attributes::resource(APP, &a, "list", "default", "", "pods", "", ""), true),
        ("acceptance: get pod", Attributes::resource(APP, &a, "get", "default", "", "pods", "", "web"), true),
        ("acceptance: list secrets", Attributes::resource(APP, &a, "list", "default", "", "secrets", "", ""), false),
        ("role only in its namespace", Attributes::resource(APP, &a, "list", "other", "", "pods", "", ""), false),
        ("role not cluster-wide", Attributes::resource(APP, &a, "list", "", "", "pods", "", ""), false),
        ("verb not granted", Attributes::resource(APP, &a, "delete", "default", "", "pods", "", "web"), false),
        ("other user", Attributes::resource("system:serviceaccount:default:other", &a, "list", "default", "", "pods", "", ""), false),
        ("clusterrole via rolebinding", Attributes::resource(APP, &a, "list", "team", "apps", "deployments", "", ""), true),
        ("clusterrole via rolebinding: namespace only", Attributes::resource(APP, &a, "list", "default", "apps", "deployments", "", ""), false),
        ("clusterrole via rolebinding: group matters", Attributes::resource(APP, &a, "list", "team", "extensions", "deployments", "", ""), false),
        ("resourceNames: named", Attributes::resource("alice", &[], "get", "default", "", "secrets", "", "x"), true),
        ("resourceNames: other name", Attributes::resource("alice", &[], "get", "default", "", "secrets", "", "y"), false),
        ("resourceNames: no name", Attributes::resource("alice", &[], "get", "default", "", "secrets", "", ""), false),
        ("subresource exact", Attributes::resource("alice", &[], "get", "default", "", "pods", "log", "web"), true),
        ("subresource is not the resource", Attributes::resource("alice", &[], "get", "default", "", "pods", "", "web"), false),
        ("*/scale", Attributes::resource("alice", &[], "update", "default", "apps", "deployments", "scale", "web"), true),
        ("*/scale is not status", Attributes::resource("alice", &[], "update", "default", "apps", "deployments", "status", "web"), false),
        ("wildcard group", Attributes::resource("carol", &["ops"], "delete", "", "apps", "deployments", "", "x"), true),
        ("wildcard any namespace", Attributes::resource("carol", &["ops"], "create", "kube-system", "", "secrets", "", ""), true),
        ("wildcard subresource", Attributes::resource("carol", &["ops"], "get", "x", "", "pods", "exec", "p"), true),
        ("wildcard is resources, not URLs", Attributes::non_resource("carol", &["ops"], "get", "/metrics"), false),
        ("url exact", Attributes::non_resource("dave", &["system:authenticated"], "get", "/healthz"), true),
        ("url prefix", Attributes::non_resource("dave", &["system:authenticated"], "get", "/apis/apps/v1"), true),
        ("url prefix needs the prefix", Attributes::non_resource("dave", &["system:authenticated"], "get", "/apis"), false),
        ("url verb", Attributes::non_resource("dave", &["system:authenticated"], "post", "/healthz"), false),
        ("url other", Attributes::non_resource("dave", &["system:authenticated"], "get", "/healthz/etcd"), false),
        ("system:masters", Attributes::resource("root", &["system:masters"], "delete", "", "", "nodes", "", "n1"), true),
    ];
    for (what, attrs, want) in cases {
        assert_eq!(p.authorize(&attrs).is_allowed(), want, "{what}: {attrs:?}");
    }
}

#[test]
fn acceptance_messages() {
    let p = policy();
    let a = app_groups();
    let list_secrets = Attributes::resource(APP, &a, "list", "default", "", "secrets", "", "");
    let d = p.authorize(&list_secrets);
    assert_eq!(
        d,
        Decision::NoOpinion {
            reason: String::new()
        }
    );
    assert_eq!(
        d.forbidden_message(&list_secrets),
        r#"secrets is forbidden: User "system:serviceaccount:default:app" cannot list resource "secrets" in API group "" in the namespace "default""#
    );
    let list_pods = Attributes::resource(APP, &a, "list", "default", "", "pods", "", "");
    assert_eq!(
        p.authorize(&list_pods).reason(),
        r#"RBAC: allowed by RoleBinding "app-reads-pods/default" of Role "reader" to ServiceAccount "app/default""#
    );
    assert_eq!(
        forbidden_message(&list_pods),
        r#"pods is forbidden: User "system:serviceaccount:default:app" cannot list resource "pods" in API group "" in the namespace "default""#
    );
    let cases = [
        (
            Attributes::resource("u", &[], "get", "default", "", "pods", "log", "web"),
            r#"pods "web" is forbidden: User "u" cannot get resource "pods/log" in API group "" in the namespace "default""#,
        ),
        (
            Attributes::resource("u", &[], "get", "default", "", "secrets", "", "x"),
            r#"secrets "x" is forbidden: User "u" cannot get resource "secrets" in API group "" in the namespace "default""#,
        ),
        (
            Attributes::resource("u", &[], "list", "", "apps", "deployments", "", ""),
            r#"deployments.apps is forbidden: User "u" cannot list resource "deployments" in API group "apps" at the cluster scope"#,
        ),
        (
            Attributes::non_resource("x", &[], "get", "/foo"),
            r#"forbidden: User "x" cannot get path "/foo""#,
        ),
    ];
    for (attrs, want) in cases {
        assert_eq!(forbidden_message(&attrs), want);
    }
    assert_eq!(
        forbidden_status(
            &Attributes::resource("u", &[], "get", "", "apps", "deployments", "", "web"),
            ""
        ),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": r#"deployments.apps "web" is forbidden: User "u" cannot get resource "deployments" in API group "apps" at the cluster scope"#,
            "reason": "Forbidden",
            "details": {"name": "web", "group": "apps", "kind": "deployments"},
            "code": 403,
        })
    );
    let anonymous = forbidden_status(
        &Attributes::non_resource("system:anonymous", &[], "get", "/"),
        "",
    );
    assert_eq!(
        anonymous["message"],
        json!(r#"forbidden: User "system:anonymous" cannot get path "/""#)
    );
    assert_eq!(anonymous["details"], json!({}));
    // kube escapes HTML metacharacters in the text.
    assert_eq!(
        forbidden_message(&Attributes::non_resource("<b>", &[], "get", "/a&b")),
        r#"forbidden: User "&lt;b&gt;" cannot get path "/a&amp;b""#
    );
    // A binding to a missing role shows in the reason, as kube appends it.
    let bob = Attributes::resource("bob", &[], "get", "default", "", "pods", "", "p");
    assert_eq!(
        p.authorize(&bob).forbidden_message(&bob),
        r#"pods "p" is forbidden: User "bob" cannot get resource "pods" in API group "" in the namespace "default": RBAC: role.rbac.authorization.k8s.io "missing" not found"#
    );
    // Cluster-wide grants name the ClusterRoleBinding.
    let carol = Attributes::resource("carol", &["ops"], "get", "", "", "nodes", "", "n");
    assert_eq!(
        p.authorize(&carol).reason(),
        r#"RBAC: allowed by ClusterRoleBinding "ops" of ClusterRole "everything" to Group "ops""#
    );
}

#[test]
fn upsert_and_remove_follow_watch_events() {
    let mut p = policy();
    let a = app_groups();
    let list_secrets = Attributes::resource(APP, &a, "list", "default", "", "secrets", "", "");
    assert!(!p.authorize(&list_secrets).is_allowed());
    // Widening the role takes effect at once.
    p.upsert(
        "Role",
        &role(
            "default",
            "reader",
            json!([{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["list"]}]),
        ),
    );
    assert!(p.authorize(&list_secrets).is_allowed());
    // Replacing the binding's subjects drops the old subject from the index.
    p.upsert(
        "RoleBinding",
        &role_binding(
            "default",
            "app-reads-pods",
            "Role",
            "reader",
            json!([{"kind": "User", "name": "someone"}]),
        ),
    );
    assert!(!p.authorize(&list_secrets).is_allowed());
    let someone = Attributes::resource("someone", &[], "list", "default", "", "secrets", "", "");
    assert!(p.authorize(&someone).is_allowed());
    p.remove("Role", Some("default"), "reader");
    assert!(!p.authorize(&someone).is_allowed());
    p.remove("RoleBinding", Some("default"), "app-reads-pods");
    assert!(p
        .namespace_index
        .get("default")
        .is_some_and(|i| !i.users.contains_key("someone")));
    p.remove("ClusterRoleBinding", None, "ops");
    let carol = Attributes::resource("carol", &["ops"], "get", "", "", "nodes", "", "n");
    assert!(!p.authorize(&carol).is_allowed());
}

#[test]
fn service_account_subject_defaults_to_binding_namespace() {
    let p = Policy::new(
        vec![role(
            "ns1",
            "r",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
        )],
        vec![],
        vec![role_binding(
            "ns1",
            "b",
            "Role",
            "r",
            json!([{"kind": "ServiceAccount", "name": "sa"}]),
        )],
        vec![],
    );
    let ok = Attributes::resource(
        "system:serviceaccount:ns1:sa",
        &[],
        "get",
        "ns1",
        "",
        "pods",
        "",
        "p",
    );
    assert!(p.authorize(&ok).is_allowed());
    let other = Attributes::resource(
        "system:serviceaccount:ns2:sa",
        &[],
        "get",
        "ns1",
        "",
        "pods",
        "",
        "p",
    );
    assert!(!p.authorize(&other).is_allowed());
}

#[test]
fn thousand_roles_and_bindings() {
    let n = 1000;
    let roles: Vec<Value> = (0..n)
        .map(|i| {
            role(
                &format!("ns{}", i % 10),
                &format!("role{i}"),
                json!([{"apiGroups": [""], "resources": [format!("res{i}")], "verbs": ["get", "create"]}]),
            )
        })
        .collect();
    let bindings: Vec<Value> = (0..n)
        .map(|i| {
            role_binding(
                &format!("ns{}", i % 10),
                &format!("bind{i}"),
                "Role",
                &format!("role{i}"),
                json!([{"kind": "User", "name": format!("user{i}")}, {"kind": "Group", "name": format!("group{}", i % 7)}]),
            )
        })
        .collect();
    let cluster_roles: Vec<Value> = (0..n)
        .map(|i| {
            cluster_role(
                &format!("croles{i}"),
                json!([{"apiGroups": ["g"], "resources": [format!("cres{i}")], "verbs": ["list"]}]),
            )
        })
        .collect();
    let cluster_bindings: Vec<Value> = (0..n)
        .map(|i| {
            cluster_role_binding(
                &format!("cbind{i}"),
                &format!("croles{i}"),
                json!([{"kind": "User", "name": format!("user{i}")}]),
            )
        })
        .collect();
    let p = Policy::new(roles, cluster_roles, bindings, cluster_bindings);
    for i in (0..n).step_by(37) {
        let user = format!("user{i}");
        let ns = format!("ns{}", i % 10);
        let res = format!("res{i}");
        let create = Attributes::resource(&user, &[], "create", &ns, "", &res, "", "");
        assert!(p.authorize(&create).is_allowed(), "{user} create {res}");
        // The neighbour's resource, the wrong namespace, the wrong verb.
        let other = format!("res{}", (i + 1) % n);
        assert!(!p
            .authorize(&Attributes::resource(
                &user,
                &[],
                "create",
                &ns,
                "",
                &other,
                "",
                ""
            ))
            .is_allowed());
        let wrong_ns = format!("ns{}", (i + 1) % 10);
        assert!(!p
            .authorize(&Attributes::resource(
                &user,
                &[],
                "create",
                &wrong_ns,
                "",
                &res,
                "",
                ""
            ))
            .is_allowed());
        assert!(!p
            .authorize(&Attributes::resource(
                &user,
                &[],
                "delete",
                &ns,
                "",
                &res,
                "",
                "x"
            ))
            .is_allowed());
        // Cluster-wide grants hold in every namespace.
        let cres = format!("cres{i}");
        assert!(p
            .authorize(&Attributes::resource(
                &user,
                &[],
                "list",
                "anywhere",
                "g",
                &cres,
                "",
                ""
            ))
            .is_allowed());
        assert!(p
            .authorize(&Attributes::resource(
                &user,
                &[],
                "list",
                "",
                "g",
                &cres,
                "",
                ""
            ))
            .is_allowed());
        // Group members get every role bound to the group in that namespace.
        let g = format!("group{}", i % 7);
        assert!(p
            .authorize(&Attributes::resource(
                "nobody",
                &[g.as_str()],
                "get",
                &ns,
                "",
                &res,
                "",
                "n"
            ))
            .is_allowed());
    }
    // The index, not a scan: a user sees only its own bindings.
    assert_eq!(p.cluster_index.candidates("user5", &[]).len(), 1);
    assert_eq!(p.namespace_index["ns5"].candidates("user5", &[]).len(), 1);
}

#[test]
fn rules_review() {
    let p = policy();
    let groups: Vec<String> = app_groups().iter().map(|s| s.to_string()).collect();
    let (resource_rules, non_resource_rules) = p.rules_for(APP, &groups, "default");
    assert_eq!(
        resource_rules,
        vec![json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]})]
    );
    assert_eq!(
        non_resource_rules,
        vec![json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]})]
    );
    let status = p.rules_review_status("bob", &[], "default");
    assert_eq!(status["incomplete"], json!(true));
    assert_eq!(
        status["evaluationError"],
        json!(r#"role.rbac.authorization.k8s.io "missing" not found"#)
    );
    assert_eq!(
        p.rules_review_status(APP, &groups, "team")["resourceRules"][0]["resources"],
        json!(["deployments"])
    );
}

#[test]
fn aggregation_picks_up_labelled_roles() {
    let mut roles = bootstrap_cluster_roles();
    roles.push(json!({
        "kind": "ClusterRole",
        "metadata": {"name": "crontabs-reader", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["stable.example.com"], "resources": ["crontabs"], "verbs": ["get", "list", "watch"]}],
    }));
    // Run the controller until nothing changes (view feeds edit, edit feeds admin).
    loop {
        let mut changed = false;
        for i in 0..roles.len() {
            if let Some(updated) = aggregate(&roles, &roles[i]) {
                roles[i] = updated;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let by_name = |n: &str| {
        roles
            .iter()
            .find(|r| r["metadata"]["name"] == n)
            .unwrap()
            .clone()
    };
    let crontabs = Rule::new(&["get", "list", "watch"])
        .groups(&["stable.example.com"])
        .resources(&["crontabs"]);
    for name in ["view", "edit", "admin"] {
        assert!(
            rules_of(&by_name(name)).contains(&crontabs),
            "{name} aggregates crontabs-reader"
        );
    }
    let secrets_get = Rule::new(&["get"]).groups(&[""]).resources(&["secrets"]);
    assert!(covers(
        &rules_of(&by_name("admin")),
        std::slice::from_ref(&secrets_get)
    )
    .is_ok());
    assert!(covers(
        &rules_of(&by_name("edit")),
        std::slice::from_ref(&secrets_get)
    )
    .is_ok());
    assert!(covers(&rules_of(&by_name("view")), &[secrets_get]).is_err());
    let roles_write = Rule::new(&["create"])
        .groups(&[GROUP])
        .resources(&["rolebindings"]);
    assert!(covers(
        &rules_of(&by_name("admin")),
        std::slice::from_ref(&roles_write)
    )
    .is_ok());
    assert!(covers(&rules_of(&by_name("edit")), &[roles_write]).is_err());
    // Stable: aggregating again changes nothing; a role without aggregationRule is left be.
    assert_eq!(aggregate(&roles, &by_name("admin")), None);
    assert_eq!(aggregate(&roles, &by_name("cluster-admin")), None);
}

#[test]
fn escalation() {
    let p = policy();
    let a: Vec<String> = app_groups().iter().map(|s| s.to_string()).collect();
    // Granting what one holds is fine.
    let same = role(
        "default",
        "copy",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    );
    assert_eq!(p.check_role_grant(APP, &a, "Role", &same, None), Ok(()));
    // Granting more is refused with kube's message.
    let more = role(
        "default",
        "x",
        json!([{"apiGroups": [""], "resources": ["secrets", "pods"], "verbs": ["get", "list"]}]),
    );
    let err = p
        .check_role_grant("u", &["g".to_string()], "Role", &more, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "roles.rbac.authorization.k8s.io \"x\" is forbidden: user \"u\" (groups=[\"g\"]) is attempting to grant RBAC permissions not currently held:\n\
         {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\" \"list\"]}\n\
         {APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}"
    );
    let err = p
        .check_role_grant(APP, &a, "Role", &more, None)
        .unwrap_err();
    assert!(err.to_string().ends_with(
        "not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}"
    ));
    // Superusers, holders of everything, and `escalate` bypass.
    assert_eq!(
        p.check_role_grant("root", &["system:masters".into()], "Role", &more, None),
        Ok(())
    );
    assert_eq!(
        p.check_role_grant("c", &["ops".into()], "ClusterRole", &more, None),
        Ok(())
    );
    let mut p2 = p.clone();
    p2.upsert(
        "ClusterRole",
        &cluster_role(
            "escalator",
            json!([{"apiGroups": [GROUP], "resources": ["roles"], "verbs": ["escalate"]}]),
        ),
    );
    p2.upsert(
        "RoleBinding",
        &role_binding(
            "default",
            "esc",
            "ClusterRole",
            "escalator",
            json!([{"kind": "User", "name": "u"}]),
        ),
    );
    assert_eq!(p2.check_role_grant("u", &[], "Role", &more, None), Ok(()));

    // Bindings: the writer must hold the role's rules, or have `bind` on it.
    let bind_reader = role_binding(
        "default",
        "b",
        "Role",
        "reader",
        json!([{"kind": "User", "name": "x"}]),
    );
    assert_eq!(
        p.check_binding_grant(APP, &a, "RoleBinding", &bind_reader, None),
        Ok(())
    );
    let bind_everything = role_binding(
        "default",
        "b2",
        "ClusterRole",
        "everything",
        json!([{"kind": "User", "name": "x"}]),
    );
    let err = p
        .check_binding_grant(APP, &a, "RoleBinding", &bind_everything, None)
        .unwrap_err();
    assert!(err.to_string().starts_with(
        "rolebindings.rbac.authorization.k8s.io \"b2\" is forbidden: user \"system:serviceaccount:default:app\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:default\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"
    ), "{err}");
    p2.upsert("ClusterRole", &cluster_role("binder", json!([{"apiGroups": [GROUP], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["everything"]}])));
    p2.upsert(
        "RoleBinding",
        &role_binding(
            "default",
            "binder",
            "ClusterRole",
            "binder",
            json!([{"kind": "User", "name": APP}]),
        ),
    );
    assert_eq!(
        p2.check_binding_grant(APP, &a, "RoleBinding", &bind_everything, None),
        Ok(())
    );
    // …in that namespace only.
    let elsewhere = role_binding("other", "b3", "ClusterRole", "everything", json!([]));
    assert!(p2
        .check_binding_grant(APP, &a, "RoleBinding", &elsewhere, None)
        .is_err());
    // An aggregationRule gathers anything: it takes holding everything.
    let mut aggregated = cluster_role("agg", json!([]));
    aggregated["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]});
    assert_eq!(
        p.check_role_grant(APP, &a, "ClusterRole", &aggregated, None)
            .unwrap_err()
            .to_string(),
        r#"clusterroles.rbac.authorization.k8s.io "agg" is forbidden: must have cluster-admin privileges to use the aggregationRule"#
    );
    // An update by the garbage collector (finalizers, ownerReferences only) passes.
    let mut gc = more.clone();
    gc["metadata"]["finalizers"] = json!(["x"]);
    assert_eq!(
        p.check_role_grant("u", &[], "Role", &gc, Some(&more)),
        Ok(())
    );
    let mut gc = bind_everything.clone();
    gc["metadata"]["ownerReferences"] = json!([{"name": "o"}]);
    assert_eq!(
        p.check_binding_grant("u", &[], "RoleBinding", &gc, Some(&bind_everything)),
        Ok(())
    );
    let missing = role_binding("default", "b4", "ClusterRole", "nope", json!([]));
    assert_eq!(
        p.check_binding_grant(APP, &a, "RoleBinding", &missing, None)
            .unwrap_err()
            .to_string(),
        r#"clusterroles.rbac.authorization.k8s.io "nope" not found"#
    );
}

#[test]
fn covers_table() {
    let rule = |v: Value| Rule::from_value(&v);
    #[rustfmt::skip]
    let cases: Vec<(Value, Value, bool)> = vec![
        (json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}), json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]}), true),
        (json!({"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]}), json!({"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]}), true),
        (json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}), json!({"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]}), false),
        (json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]}), true),
        (json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]}), json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), false),
        (json!({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}), json!({"nonResourceURLs": ["/apis/apps"], "verbs": ["get"]}), true),
        (json!({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}), json!({"nonResourceURLs": ["/api"], "verbs": ["get"]}), false),
    ];
    for (owner, wanted, ok) in cases {
        assert_eq!(
            covers(&[rule(owner.clone())], &[rule(wanted.clone())]).is_ok(),
            ok,
            "{owner} covers {wanted}"
        );
    }
}

#[test]
fn validation() {
    let mut b = role_binding(
        "default",
        "b",
        "Role",
        "r",
        json!([{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "sa"}]),
    );
    b["roleRef"].as_object_mut().unwrap().remove("apiGroup");
    default_binding(&mut b);
    assert_eq!(b["roleRef"]["apiGroup"], json!(GROUP));
    assert_eq!(b["subjects"][0]["apiGroup"], json!(GROUP));
    assert_eq!(b["subjects"][1].get("apiGroup"), None);
    assert_eq!(validate_binding("RoleBinding", &b), vec![]);

    let bad = json!({
        "metadata": {"name": "c"},
        "roleRef": {"apiGroup": "rbac", "kind": "Role", "name": ""},
        "subjects": [{"kind": "ServiceAccount", "name": "sa"}, {"kind": "Robot", "name": "r"}],
    });
    let causes: Vec<(String, String)> = validate_binding("ClusterRoleBinding", &bad)
        .into_iter()
        .map(|c| (c.field, c.message))
        .collect();
    assert_eq!(
        causes,
        vec![
            ("roleRef.apiGroup".into(), r#"Unsupported value: "rbac": supported values: "rbac.authorization.k8s.io""#.into()),
            ("roleRef.kind".into(), r#"Unsupported value: "Role": supported values: "ClusterRole""#.into()),
            ("roleRef.name".into(), "Required value".into()),
            ("subjects[0].namespace".into(), "Required value".into()),
            ("subjects[1].kind".into(), r#"Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#.into()),
        ]
    );

    let mut changed = b.clone();
    changed["roleRef"]["kind"] = json!("ClusterRole");
    changed["roleRef"]["name"] = json!("view");
    let causes = validate_binding_update(&b, &changed);
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, "roleRef");
    assert_eq!(
        causes[0].message,
        r#"Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"ClusterRole", Name:"view"}: cannot change roleRef"#
    );
    assert!(validate_binding_update(&b, &b).is_empty());

    let r = role(
        "default",
        "r",
        json!([{"nonResourceURLs": ["/healthz"], "verbs": []}, {"verbs": ["get"]}]),
    );
    let causes: Vec<(String, String)> = validate_role("Role", &r)
        .into_iter()
        .map(|c| (c.field, c.message))
        .collect();
    assert_eq!(
        causes,
        vec![
            ("rules[0].verbs".into(), "Required value: verbs must contain at least one value".into()),
            ("rules[0].nonResourceURLs".into(), r#"Invalid value: []string{"/healthz"}: namespaced rules cannot apply to non-resource URLs"#.into()),
            ("rules[1].apiGroups".into(), "Required value: resource rules must supply at least one api group".into()),
            ("rules[1].resources".into(), "Required value: resource rules must supply at least one resource".into()),
        ]
    );
    for role in bootstrap_cluster_roles() {
        assert_eq!(
            validate_role("ClusterRole", &role),
            vec![],
            "{}",
            role["metadata"]["name"]
        );
    }
    for role in bootstrap_roles() {
        assert_eq!(
            validate_role("Role", &role),
            vec![],
            "{}",
            role["metadata"]["name"]
        );
    }
    for (kind, bindings) in [
        ("ClusterRoleBinding", bootstrap_cluster_role_bindings()),
        ("RoleBinding", bootstrap_role_bindings()),
    ] {
        for b in bindings {
            assert_eq!(
                validate_binding(kind, &b),
                vec![],
                "{}",
                b["metadata"]["name"]
            );
        }
    }
}

fn bootstrap_policy() -> Policy {
    Policy::new(
        bootstrap_roles(),
        bootstrap_cluster_roles(),
        bootstrap_role_bindings(),
        bootstrap_cluster_role_bindings(),
    )
}

#[test]
fn bootstrap_policy_grants() {
    let p = bootstrap_policy();
    // Every bootstrap binding refers to a bootstrap role.
    for b in bootstrap_cluster_role_bindings()
        .iter()
        .chain(&bootstrap_role_bindings())
    {
        let ns = b["metadata"]["namespace"].as_str().unwrap_or("");
        let (kind, name) = (
            b["roleRef"]["kind"].as_str().unwrap(),
            b["roleRef"]["name"].as_str().unwrap(),
        );
        assert!(
            p.role_ref_rules(kind, ns, name).is_some(),
            "{kind} {ns}/{name}"
        );
    }
    let crb = bootstrap_cluster_role_bindings();
    let admin = crb
        .iter()
        .find(|b| b["metadata"]["name"] == "cluster-admin")
        .unwrap();
    assert_eq!(
        admin["subjects"],
        json!([{"kind": "Group", "apiGroup": GROUP, "name": "system:masters"}])
    );
    assert_eq!(admin["roleRef"]["name"], json!("cluster-admin"));
    for obj in bootstrap_cluster_roles()
        .iter()
        .chain(&crb)
        .chain(&bootstrap_roles())
        .chain(&bootstrap_role_bindings())
    {
        assert_eq!(
            obj["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            json!("rbac-defaults")
        );
        assert_eq!(
            obj["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
            json!("true")
        );
    }
    // cluster-admin's rules, reached through its binding, allow everything (rules_for shows
    // them even though system:masters short-circuits authorize).
    let masters = vec!["system:masters".to_string()];
    let (rr, nr) = p.rules_for("root", &masters, "default");
    assert!(rr.contains(&json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})));
    assert!(nr.contains(&json!({"verbs": ["*"], "nonResourceURLs": ["*"]})));

    #[rustfmt::skip]
    let cases: Vec<(Attributes, bool)> = vec![
        (Attributes::non_resource("u", &["system:authenticated"], "get", "/apis/apps/v1"), true),
        (Attributes::non_resource("anon", &["system:unauthenticated"], "get", "/healthz"), true),
        (Attributes::non_resource("anon", &["system:unauthenticated"], "get", "/apis"), false),
        (Attributes::resource("u", &["system:authenticated"], "create", "", "authorization.k8s.io", "selfsubjectaccessreviews", "", ""), true),
        (Attributes::resource("u", &["system:authenticated"], "list", "default", "", "pods", "", ""), false),
        (Attributes::resource("system:kube-scheduler", &["system:authenticated"], "create", "default", "", "pods", "binding", "p"), true),
        (Attributes::resource("system:kube-scheduler", &["system:authenticated"], "delete", "default", "", "secrets", "", "s"), false),
        (Attributes::resource("system:kube-controller-manager", &["system:authenticated"], "watch", "", "apps", "deployments", "", ""), true),
        (Attributes::resource("system:kube-proxy", &["system:authenticated"], "list", "", "discovery.k8s.io", "endpointslices", "", ""), true),
        // Nodes get system:node's rules from the Node authorizer, not from a binding; RBAC
        // gives them only skiff's proxier, DNS and local-path bindings.
        (Attributes::resource("system:node:n1", &["system:nodes", "system:authenticated"], "patch", "", "", "nodes", "status", "n1"), false),
        (Attributes::resource("system:node:n1", &["system:nodes", "system:authenticated"], "get", "default", "", "secrets", "", "s"), false),
        (Attributes::resource("system:node:n1", &["system:nodes", "system:authenticated"], "list", "", "", "nodes", "", ""), true),
        (Attributes::resource("system:node:n1", &["system:nodes", "system:authenticated"], "create", "", "", "persistentvolumes", "", ""), true),
        (Attributes::resource("system:node:n1", &["system:nodes", "system:authenticated"], "delete", "", "", "nodes", "", "n1"), false),
        (Attributes::resource("system:serviceaccount:kube-system:deployment-controller", &[], "create", "ns", "apps", "replicasets", "", ""), true),
        (Attributes::resource("system:serviceaccount:kube-system:job-controller", &[], "update", "ns", "batch", "jobs", "status", "j"), true),
        (Attributes::resource("system:serviceaccount:kube-system:job-controller", &[], "create", "ns", "apps", "replicasets", "", ""), false),
    ];
    for (attrs, want) in cases {
        assert_eq!(p.authorize(&attrs).is_allowed(), want, "{attrs:?}");
    }
}

#[test]
fn reconcile_adds_and_keeps() {
    let wanted = bootstrap_cluster_roles()
        .into_iter()
        .find(|r| r["metadata"]["name"] == "system:basic-user")
        .unwrap();
    assert_eq!(reconcile(None, &wanted), Some(wanted.clone()));
    assert_eq!(reconcile(Some(&wanted), &wanted), None);

    // A user removed a rule and added one: the missing one comes back, theirs stays.
    let mut existing = wanted.clone();
    existing["rules"] = json!([{"apiGroups": ["x"], "resources": ["y"], "verbs": ["get"]}]);
    existing["metadata"]["labels"] = json!({"mine": "yes"});
    let out = reconcile(Some(&existing), &wanted).unwrap();
    assert!(covers(&rules_of(&out), &rules_of(&wanted)).is_ok());
    assert!(rules_of(&out).contains(&Rule::new(&["get"]).groups(&["x"]).resources(&["y"])));
    assert_eq!(out["metadata"]["labels"]["mine"], json!("yes"));
    assert_eq!(
        out["metadata"]["labels"]["kubernetes.io/bootstrapping"],
        json!("rbac-defaults")
    );

    // autoupdate: "false" freezes the object.
    existing["metadata"]["annotations"] =
        json!({"rbac.authorization.kubernetes.io/autoupdate": "false"});
    assert_eq!(reconcile(Some(&existing), &wanted), None);

    // Bindings: missing subjects are added, extra ones kept.
    let wanted = bootstrap_cluster_role_bindings()
        .into_iter()
        .find(|b| b["metadata"]["name"] == "system:public-info-viewer")
        .unwrap();
    let mut existing = wanted.clone();
    existing["subjects"] = json!([{"kind": "User", "apiGroup": GROUP, "name": "extra"}]);
    let out = reconcile(Some(&existing), &wanted).unwrap();
    assert_eq!(out["subjects"].as_array().unwrap().len(), 3);
    assert_eq!(out["subjects"][0]["name"], json!("extra"));

    // The system:node binding skiff made before its Node authorizer loses its group;
    // other subjects an administrator added stay.
    let wanted = bootstrap_cluster_role_bindings()
        .into_iter()
        .find(|b| b["metadata"]["name"] == "system:node")
        .unwrap();
    assert!(wanted.get("subjects").is_none());
    assert_eq!(reconcile(Some(&wanted), &wanted), None);
    let mut old = wanted.clone();
    old["subjects"] = json!([{"kind": "Group", "apiGroup": GROUP, "name": "system:nodes"}]);
    let out = reconcile(Some(&old), &wanted).unwrap();
    assert!(out.get("subjects").is_none(), "{out}");
    old["subjects"] = json!([{"kind": "Group", "apiGroup": GROUP, "name": "system:nodes"},
                             {"kind": "User", "apiGroup": GROUP, "name": "legacy-kubelet"}]);
    let out = reconcile(Some(&old), &wanted).unwrap();
    assert_eq!(
        out["subjects"],
        json!([{"kind": "User", "apiGroup": GROUP, "name": "legacy-kubelet"}])
    );
    old["metadata"]["annotations"] =
        json!({"rbac.authorization.kubernetes.io/autoupdate": "false"});
    assert_eq!(reconcile(Some(&old), &wanted), None);
}
