//! The whole API (#14): ordinary multi-kind manifests apply with kubectl 1.27 and 1.33;
//! RBAC allows and denies exactly as `kubectl auth can-i` predicts, for a service account
//! (its token) and a user (a client certificate); service-account tokens are bound to
//! their pod; custom resources are validated, defaulted, pruned and printed by their CRD.

use std::process::Command;

use serde_json::{json, Value};

use crate::common::{eventually, run, write, Out, Server};

/// An application as people write one: every kind an ordinary chart brings.
const APP: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: web-reader}
rules:
- {apiGroups: [""], resources: [configmaps, pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: web-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web-reader}
subjects: [{kind: ServiceAccount, name: web}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: web}
stringData: {password: s3cret}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: registry.example/web:1
        ports: [{containerPort: 8080}]
        envFrom: [{configMapRef: {name: web}}]
        resources: {requests: {cpu: 100m}}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: APPNS-nginx}
spec: {controller: k8s.io/ingress-nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: APPNS-nginx
  tls: [{hosts: [web.example], secretName: web}]
  rules:
  - host: web.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {role: frontend}}}], ports: [{port: 8080}]}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 2
  maxReplicas: 5
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 0
  selector: {app: legacy}
  template: {metadata: {labels: {app: legacy}}, spec: {containers: [{name: c, image: busybox}]}}
---
apiVersion: v1
kind: PodTemplate
metadata: {name: tmpl}
template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}
"#;

/// Cluster-scoped kinds an operator or a platform team applies.
const PLATFORM: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: VER-local}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: VER-gvisor}
handler: runsc
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: VER-monitoring}
aggregationRule:
  clusterRoleSelectors: [{matchLabels: {rbac.example.com/aggregate-to-VER-monitoring: "true"}}]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: VER-monitoring-endpoints
  labels:
    rbac.example.com/aggregate-to-VER-monitoring: "true"
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- {apiGroups: [""], resources: [endpoints, services], verbs: [get, list, watch]}
- {apiGroups: [VER.example.com], resources: [things], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: VER-monitoring}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: VER-monitoring}
subjects: [{kind: Group, name: monitoring}]
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: VER-high}
value: 1000
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: VER-policy}
webhooks: []
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: VER.csi.example.com}
spec: {attachRequired: false}
"#;

#[test]
fn ordinary_manifests_of_every_kind_apply_with_kubectl_127_and_133() {
    let s = Server::start();
    for v in ["1.27", "1.33"] {
        let ns = format!("app{}", v.replace('.', ""));
        s.kubectl(v, &["create", "namespace", &ns]).ok();
        let app = APP.replace("APPNS", &ns);
        let f = write(s.dir.path(), &format!("app-{ns}.yaml"), &app);
        let f = f.to_str().unwrap();
        let out = s.kubectl(v, &["apply", "-n", &ns, "-f", f]).ok();
        assert_eq!(out.stdout.matches(" created").count(), 14, "{}", out.stdout);
        // Applying again changes nothing (kubectl 1.27 re-sends a PDB's selector, whose
        // patch strategy is `replace`, and every kubectl re-sends a Secret's write-only
        // stringData, as they do against kube-apiserver: kubernetes#87736).
        let again = s.kubectl(v, &["apply", "-n", &ns, "-f", f]).ok();
        let changed: Vec<&str> = again
            .stdout
            .lines()
            .filter(|l| {
                l.ends_with(" configured")
                    && !l.starts_with("poddisruptionbudget")
                    && !l.starts_with("secret/")
            })
            .collect();
        assert!(changed.is_empty(), "{}", again.stdout);
        let plat = PLATFORM.replace("VER", &ns);
        let pf = write(s.dir.path(), &format!("platform-{ns}.yaml"), &plat);
        s.kubectl(v, &["apply", "-f", pf.to_str().unwrap()]).ok();
        let got = s
            .kubectl(
                v,
                &["get", "-n", &ns, "-o", "name", "sa,role,rolebinding,cm,secret,deploy,svc,ingress,netpol,pdb,hpa,rc,podtemplate"],
            )
            .ok()
            .stdout;
        for want in [
            "serviceaccount/web",
            "role.rbac.authorization.k8s.io/web-reader",
            "rolebinding.rbac.authorization.k8s.io/web-reader",
            "ingress.networking.k8s.io/web",
            "networkpolicy.networking.k8s.io/web",
            "poddisruptionbudget.policy/web",
            "horizontalpodautoscaler.autoscaling/web",
            "replicationcontroller/legacy",
            "podtemplate/tmpl",
        ] {
            assert!(got.contains(want), "{want} missing from {got}");
        }
        // kubectl's columns for the new kinds.
        let ing = s.kubectl(v, &["get", "ingress", "-n", &ns]).ok().stdout;
        assert!(ing.starts_with("NAME   CLASS"), "{ing}");
        assert!(
            ing.contains("web.example") && ing.contains("80, 443"),
            "{ing}"
        );
        let rb = s
            .kubectl(v, &["get", "rolebinding", "-n", &ns, "-o", "wide"])
            .ok()
            .stdout;
        // A RoleBinding's service account without a namespace is in the binding's; kubectl
        // prints it as written.
        assert!(
            rb.contains("Role/web-reader") && rb.contains(" /web"),
            "{rb}"
        );
        // The aggregated ClusterRole gains the labelled role's rules, and so does view.
        let role = format!("{ns}-monitoring");
        eventually("the aggregated ClusterRole", || {
            let r = s
                .kubectl(
                    v,
                    &[
                        "get",
                        "clusterrole",
                        &role,
                        "-o",
                        "jsonpath={.rules[*].resources}",
                    ],
                )
                .stdout;
            r.contains("endpoints").then_some(())
        });
        eventually("view aggregating the labelled role", || {
            let r = s
                .kubectl(
                    v,
                    &[
                        "get",
                        "clusterrole",
                        "view",
                        "-o",
                        "jsonpath={.rules[*].apiGroups}",
                    ],
                )
                .stdout;
            r.contains(&format!("{ns}.example.com")).then_some(())
        });
        let can = s
            .kubectl(
                v,
                &[
                    "auth",
                    "can-i",
                    "list",
                    "endpoints",
                    "--as=u",
                    "--as-group=monitoring",
                ],
            )
            .ok()
            .stdout;
        assert_eq!(can.trim(), "yes");
    }
    // Discovery and explain know the new groups.
    let res = s
        .kubectl("1.33", &["api-resources", "-o", "name"])
        .ok()
        .stdout;
    for r in [
        "roles.rbac.authorization.k8s.io",
        "ingresses.networking.k8s.io",
        "networkpolicies.networking.k8s.io",
        "customresourcedefinitions.apiextensions.k8s.io",
        "runtimeclasses.node.k8s.io",
        "flowschemas.flowcontrol.apiserver.k8s.io",
        "csidrivers.storage.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
    ] {
        assert!(res.lines().any(|l| l == r), "{r} not in api-resources");
    }
    let explain = s
        .kubectl("1.33", &["explain", "ingress.spec.rules.host"])
        .ok()
        .stdout;
    assert!(explain.contains("host"), "{explain}");
}

/// A kubeconfig for user `name` in `groups`, from a client certificate the cluster CA signed.
pub(crate) fn user_kubeconfig(s: &Server, name: &str, groups: &[&str]) -> std::path::PathBuf {
    let dir = s.dir.path();
    // Files named without colons: KUBECONFIG is a colon-separated list, and curl reads a
    // colon in --cert as the start of a password.
    let file = name.replace(':', "_");
    let key = dir.join(format!("{file}.key"));
    let csr = dir.join(format!("{file}.csr"));
    let crt = dir.join(format!("{file}.crt"));
    let mut subj = format!("/CN={name}");
    for g in groups {
        subj.push_str(&format!("/O={g}"));
    }
    let mut c = Command::new("openssl");
    c.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&csr)
    .args(["-subj", &subj]);
    run(c, None).ok();
    // A v3 client certificate, as a CA signs one for a user.
    let ext = write(
        dir,
        "client-ext.cnf",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    let mut c = Command::new("openssl");
    c.args(["x509", "-req", "-days", "1"])
        .arg("-extfile")
        .arg(&ext)
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(s.pki("ca.crt"))
        .arg("-CAkey")
        .arg(s.pki("ca.key"))
        .args(["-CAcreateserial", "-out"])
        .arg(&crt);
    run(c, None).ok();
    let kc = dir.join(format!("{file}.kubeconfig"));
    std::fs::copy(s.kubeconfig(), &kc).unwrap();
    let cfg = |args: &[&str]| {
        let mut c = s.kubectl_command("1.33", args);
        c.env("KUBECONFIG", &kc);
        run(c, None).ok();
    };
    cfg(&[
        "config",
        "set-credentials",
        name,
        &format!("--client-certificate={}", crt.display()),
        &format!("--client-key={}", key.display()),
        "--embed-certs",
    ]);
    let cluster = {
        let mut c = s.kubectl_command(
            "1.33",
            &["config", "view", "-o", "jsonpath={.clusters[0].name}"],
        );
        c.env("KUBECONFIG", &kc);
        run(c, None).ok().stdout
    };
    cfg(&[
        "config",
        "set-context",
        name,
        &format!("--cluster={cluster}"),
        &format!("--user={name}"),
    ]);
    cfg(&["config", "use-context", name]);
    kc
}

pub(crate) fn as_kubeconfig(s: &Server, v: &str, kc: &std::path::Path, args: &[&str]) -> Out {
    let mut c = s.kubectl_command(v, args);
    c.env("KUBECONFIG", kc);
    run(c, None)
}

pub(crate) fn with_token(s: &Server, v: &str, token: &str, args: &[&str]) -> Out {
    let mut full = vec!["--token", token, "--user=nobody"];
    full.extend_from_slice(args);
    // A kubeconfig without the admin's client certificate: only the token speaks.
    let kc = s.dir.path().join("token.kubeconfig");
    if !kc.exists() {
        let server = s.url.clone();
        let ca = s.pki("ca.crt");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: {server}, certificate-authority: {}}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: nobody}}}}]\ncurrent-context: c\nusers: [{{name: nobody, user: {{}}}}]\n",
                ca.display()
            ),
        )
        .unwrap();
    }
    as_kubeconfig(s, v, &kc, &full)
}

#[test]
fn rbac_allows_and_denies_exactly_as_can_i_predicts() {
    let s = Server::start();
    let setup = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: default}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}, {apiGroups: [""], resources: [configmaps], resourceNames: [allowed], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: app, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: devs-view, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: role-writer, namespace: default}
rules: [{apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings], verbs: [create, get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: jane-role-writer, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: role-writer}
subjects: [{kind: User, name: jane, apiGroup: rbac.authorization.k8s.io}]
"#;
    let f = write(s.dir.path(), "rbac.yaml", setup);
    s.kubectl("1.33", &["apply", "-f", f.to_str().unwrap()])
        .ok();
    s.kubectl(
        "1.33",
        &["create", "configmap", "allowed", "--from-literal=a=1"],
    )
    .ok();
    s.kubectl(
        "1.33",
        &["create", "configmap", "other", "--from-literal=a=1"],
    )
    .ok();
    let token = s
        .kubectl("1.33", &["create", "token", "app"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let jane = user_kubeconfig(&s, "jane", &["devs"]);
    // (verb, resource[/name]) pairs; each identity's can-i answer must match the request.
    let cases: &[(&str, &str, &str)] = &[
        ("list", "pods", ""),
        ("get", "pods", "nope"),
        ("list", "secrets", ""),
        ("get", "configmaps", "allowed"),
        ("get", "configmaps", "other"),
        ("list", "configmaps", ""),
        ("create", "configmaps", ""),
        ("list", "deployments.apps", ""),
        ("delete", "pods", "nope"),
        ("list", "nodes", ""),
    ];
    for v in ["1.27", "1.33"] {
        let mut allowed_somewhere = 0;
        let mut denied_somewhere = 0;
        for (who, run_as) in [
            (
                "sa",
                &(|args: &[&str]| with_token(&s, v, &token, args)) as &dyn Fn(&[&str]) -> Out,
            ),
            ("jane", &|args: &[&str]| as_kubeconfig(&s, v, &jane, args)),
        ] {
            for (verb, res, name) in cases {
                let target = if name.is_empty() {
                    res.to_string()
                } else {
                    format!("{res}/{name}")
                };
                let q = ["auth", "can-i", verb, target.as_str()];
                let said = run_as(&q).stdout.trim().to_string();
                let mut args: Vec<String> = match *verb {
                    "create" => vec![
                        "create".into(),
                        "configmap".into(),
                        format!("new-{who}-{}", v.replace('.', "")),
                        "--from-literal=x=1".into(),
                    ],
                    "delete" => vec!["delete".into(), res.to_string(), name.to_string()],
                    _ => vec!["get".into(), res.to_string()],
                };
                if *verb == "get" {
                    args.push(name.to_string());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let did = run_as(&args);
                let forbidden =
                    did.stderr.contains("Forbidden") || did.stderr.contains("forbidden");
                match said.as_str() {
                    "yes" => {
                        allowed_somewhere += 1;
                        assert!(
                            !forbidden,
                            "{who} {v}: can-i {verb} {res} {name} said yes, the request: {did:?}"
                        );
                    }
                    "no" => {
                        denied_somewhere += 1;
                        assert!(
                            forbidden,
                            "{who} {v}: can-i {verb} {res} {name} said no, the request: {did:?}"
                        );
                    }
                    other => panic!("{who} {v}: can-i {verb} {res}: {other:?}"),
                }
            }
        }
        assert!(
            allowed_somewhere >= 6 && denied_somewhere >= 6,
            "{allowed_somewhere} {denied_somewhere}"
        );
    }
    // kube-apiserver's 403, word for word, for the service account's token.
    let mut c = Command::new("curl");
    c.args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(s.pki("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{}/api/v1/namespaces/default/secrets", s.url));
    let (code, body) = run(c, None).http();
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "secrets is forbidden: User \"system:serviceaccount:default:app\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    // can-i --list names what the Role grants.
    let list = with_token(&s, "1.33", &token, &["auth", "can-i", "--list"])
        .ok()
        .stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list]")),
        "{list}"
    );
    // Impersonation: the admin may, jane may not.
    let out = s
        .kubectl(
            "1.33",
            &["get", "secrets", "--as=system:serviceaccount:default:app"],
        )
        .fails();
    assert!(
        out.stderr.contains("cannot list resource \"secrets\""),
        "{out:?}"
    );
    let out = as_kubeconfig(&s, "1.33", &jane, &["get", "pods", "--as=admin"]).fails();
    assert!(
        out.stderr.contains(
            "users \"admin\" is forbidden: User \"jane\" cannot impersonate resource \"users\""
        ),
        "{out:?}"
    );
    // Escalation: jane may create Roles but not grant what she does not hold …
    let grant = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"secrets","namespace":"default"},"rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}]}"#;
    let mut c = s.kubectl_command("1.33", &["create", "-f", "-"]);
    c.env("KUBECONFIG", &jane);
    let out = run(c, Some(grant)).fails();
    assert!(
        out.stderr
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{out:?}"
    );
    // … while what view gives her she may grant.
    let ok = grant
        .replace("\"secrets\"]", "\"pods\"]")
        .replace("\"name\":\"secrets\"", "\"name\":\"pods\"");
    let mut c = s.kubectl_command("1.33", &["create", "-f", "-"]);
    c.env("KUBECONFIG", &jane);
    run(c, Some(&ok)).ok();
    // An invalid binding gets kube-apiserver's validation error.
    let bad = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"bad","namespace":"default"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Thing","name":"x"},"subjects":[{"kind":"User","name":"u"}]}"#;
    let mut c = s.kubectl_command("1.33", &["create", "-f", "-"]);
    c.env("KUBECONFIG", s.kubeconfig());
    let out = run(c, Some(bad)).fails();
    assert!(
        out.stderr
            .contains("roleRef.kind: Unsupported value: \"Thing\""),
        "{out:?}"
    );
    // The default roles are there, reconciled at start.
    let roles = s
        .kubectl("1.33", &["get", "clusterrole", "-o", "name"])
        .ok()
        .stdout;
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:node",
        "system:kube-scheduler",
    ] {
        assert!(
            roles.contains(&format!("clusterrole.rbac.authorization.k8s.io/{r}\n")),
            "{r}"
        );
    }
}

#[test]
fn service_account_tokens_are_signed_bound_and_revoked_with_their_pod() {
    let s = Server::start();
    s.kubectl("1.33", &["create", "serviceaccount", "bot"]).ok();
    s.kubectl(
        "1.33",
        &[
            "create",
            "rolebinding",
            "bot-view",
            "--clusterrole=view",
            "--serviceaccount=default:bot",
        ],
    )
    .ok();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "bot", "containers": [{"name": "c", "image": "busybox"}]}});
    let mut c = s.kubectl_command("1.33", &["create", "-f", "-"]);
    c.env("KUBECONFIG", s.kubeconfig());
    run(c, Some(&pod.to_string())).ok();
    let token = s
        .kubectl(
            "1.33",
            &[
                "create",
                "token",
                "bot",
                "--bound-object-kind=Pod",
                "--bound-object-name=p",
            ],
        )
        .ok()
        .stdout
        .trim()
        .to_string();
    let whoami = |t: &str| with_token(&s, "1.33", t, &["auth", "whoami", "-o", "json"]);
    let me: Value = serde_json::from_str(&whoami(&token).ok().stdout).unwrap();
    let info = &me["status"]["userInfo"];
    assert_eq!(info["username"], "system:serviceaccount:default:bot");
    assert!(info["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:serviceaccounts:default")));
    assert_eq!(
        info["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["p"])
    );
    with_token(&s, "1.33", &token, &["get", "pods"]).ok();
    // The JWKS publishes the key the token names; the discovery document points at it.
    let header: Value = {
        use base64::Engine;
        let h = token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    let jwks: Value = serde_json::from_str(
        &s.kubectl("1.33", &["get", "--raw", "/openid/v1/jwks"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    let oidc: Value = serde_json::from_str(
        &s.kubectl(
            "1.33",
            &["get", "--raw", "/.well-known/openid-configuration"],
        )
        .ok()
        .stdout,
    )
    .unwrap();
    assert!(oidc["jwks_uri"]
        .as_str()
        .unwrap()
        .ends_with("/openid/v1/jwks"));
    // A TokenReview says who the token is.
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    let mut c = s.kubectl_command("1.33", &["create", "-o", "json", "-f", "-"]);
    c.env("KUBECONFIG", s.kubeconfig());
    let r: Value = serde_json::from_str(&run(c, Some(&review.to_string())).ok().stdout).unwrap();
    assert_eq!(r["status"]["authenticated"], true);
    assert_eq!(
        r["status"]["user"]["username"],
        "system:serviceaccount:default:bot"
    );
    // Deleting the pod revokes the token; a forged or expired-looking token never worked.
    s.kubectl(
        "1.33",
        &["delete", "pod", "p", "--grace-period=0", "--force"],
    )
    .ok();
    let out = with_token(&s, "1.33", &token, &["get", "pods"]).fails();
    assert!(out.stderr.contains("Unauthorized"), "{out:?}");
    let mut forged: Vec<&str> = token.split('.').collect();
    forged[2] = "AAAA";
    with_token(&s, "1.33", &forged.join("."), &["get", "pods"]).fails();
    // A token of a deleted service account stops working too.
    let plain = s
        .kubectl("1.33", &["create", "token", "bot"])
        .ok()
        .stdout
        .trim()
        .to_string();
    with_token(&s, "1.33", &plain, &["get", "pods"]).ok();
    s.kubectl("1.33", &["delete", "serviceaccount", "bot"]).ok();
    with_token(&s, "1.33", &plain, &["get", "pods"]).fails();
    // Too short a lifetime is refused as kube-apiserver does.
    s.kubectl("1.33", &["create", "serviceaccount", "bot2"])
        .ok();
    let out = s
        .kubectl("1.33", &["create", "token", "bot2", "--duration=5m"])
        .fails();
    assert!(
        out.stderr
            .contains("may not specify a duration less than 10 minutes"),
        "{out:?}"
    );
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.example.com}
spec:
  group: test.example.com
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd], categories: [all]}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Ready, type: boolean, jsonPath: .status.ready}
    schema: &schema
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              color: {type: string, default: blue, enum: [blue, red]}
              replicas: {type: integer}
            x-kubernetes-validations:
            - {rule: "self.size >= 2 || self.color == 'blue'", message: "small widgets are blue"}
          status:
            type: object
            properties:
              ready: {type: boolean}
              replicas: {type: integer}
  - name: v1beta1
    served: true
    storage: false
    schema: *schema
"#;

#[test]
fn custom_resources_are_validated_defaulted_pruned_printed_and_deleted_with_their_crd() {
    let s = Server::start();
    let f = write(s.dir.path(), "crd.yaml", CRD);
    s.kubectl("1.33", &["apply", "-f", f.to_str().unwrap()])
        .ok();
    s.kubectl(
        "1.33",
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.test.example.com",
            "--timeout=30s",
        ],
    )
    .ok();
    for v in ["1.27", "1.33"] {
        let n = format!("w{}", v.replace('.', ""));
        let obj = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
            "metadata": {"name": n}, "spec": {"size": 3, "junk": 1, "replicas": 1}});
        let mut c = s.kubectl_command(v, &["apply", "-f", "-"]);
        c.env("KUBECONFIG", s.kubeconfig());
        run(c, Some(&obj.to_string())).ok();
        let spec: Value = serde_json::from_str(
            &s.kubectl(v, &["get", "wd", &n, "-o", "jsonpath={.spec}"])
                .ok()
                .stdout,
        )
        .unwrap();
        assert_eq!(spec, json!({"size": 3, "color": "blue", "replicas": 1}));
        // Invalid objects get kube-apiserver's messages.
        for (bad, msg) in [
            (json!({"size": 99}), "spec.size: Invalid value: 99: spec.size in body should be less than or equal to 10"),
            (json!({"color": "blue"}), "spec.size: Required value"),
            (json!({"size": 1, "color": "red"}), "small widgets are blue"),
            (json!({"size": "big"}), "spec.size in body must be of type integer"),
        ] {
            let o = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
                "metadata": {"name": format!("bad{n}")}, "spec": bad});
            let mut c = s.kubectl_command(v, &["apply", "-f", "-"]);
            c.env("KUBECONFIG", s.kubeconfig());
            let out = run(c, Some(&o.to_string())).fails();
            assert!(out.stderr.contains(msg), "{v} {bad}: {out:?}");
        }
        // Printer columns, the status and scale subresources.
        s.kubectl(
            v,
            &[
                "patch",
                "wd",
                &n,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"ready":true}}"#,
            ],
        )
        .ok();
        let table = s.kubectl(v, &["get", "widgets", &n]).ok().stdout;
        let mut lines = table.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["NAME", "SIZE", "READY"]
        );
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [n.as_str(), "3", "true"]
        );
        s.kubectl(v, &["scale", "widget", &n, "--replicas=4"]).ok();
        assert_eq!(
            s.kubectl(v, &["get", "wd", &n, "-o", "jsonpath={.spec.replicas}"])
                .ok()
                .stdout,
            "4"
        );
        // The other served version reads the same object.
        let beta = s
            .kubectl(
                v,
                &[
                    "get",
                    "widgets.v1beta1.test.example.com",
                    &n,
                    "-o",
                    "jsonpath={.apiVersion} {.spec.size}",
                ],
            )
            .ok()
            .stdout;
        assert_eq!(beta, "test.example.com/v1beta1 3");
    }
    // `kubectl get all` includes the category.
    let all = s.kubectl("1.33", &["get", "all", "-o", "name"]).ok().stdout;
    assert!(all.contains("widget.test.example.com/w133"), "{all}");
    // A non-structural schema is refused with kube's message.
    let bad = CRD
        .replace("widgets.test.example.com", "gadgets.test.example.com")
        .replace(
            "kind: Widget, plural: widgets, singular: widget, shortNames: [wd]",
            "kind: Gadget, plural: gadgets",
        )
        .replace(
            "replicas: {type: integer}\n            x-kubernetes",
            "replicas: {}\n            x-kubernetes",
        );
    let f = write(s.dir.path(), "bad-crd.yaml", &bad);
    let out = s
        .kubectl("1.33", &["apply", "-f", f.to_str().unwrap()])
        .fails();
    assert!(
        out.stderr
            .contains("Required value: must not be empty for specified object fields"),
        "{out:?}"
    );
    // Deleting the CRD deletes its objects, then stops serving the kind.
    s.kubectl(
        "1.33",
        &["delete", "crd", "widgets.test.example.com", "--timeout=60s"],
    )
    .ok();
    eventually("the kind no longer served", || {
        let (code, _) = s
            .curl("GET", "/apis/test.example.com/v1/widgets", &[])
            .http();
        (code == 404).then_some(())
    });
    s.kubectl(
        "1.33",
        &[
            "apply",
            "-f",
            write(s.dir.path(), "crd.yaml", CRD).to_str().unwrap(),
        ],
    )
    .ok();
    s.kubectl(
        "1.33",
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.test.example.com",
        ],
    )
    .ok();
    let left = s
        .kubectl("1.33", &["get", "widgets", "-A", "-o", "name"])
        .ok()
        .stdout;
    assert!(left.trim().is_empty(), "objects outlived their CRD: {left}");
}

/// A CRD whose schema describes its fields, as `kubectl explain` shows them.
const EXPLAINED_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gizmos.explain.example.com}
spec:
  group: explain.example.com
  names: {kind: Gizmo, plural: gizmos, singular: gizmo}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        description: A Gizmo is a small machine.
        properties:
          spec:
            type: object
            description: What the gizmo should do.
            required: [speed]
            properties:
              speed: {type: integer, description: "How fast it turns, in turns a second."}
              label: {type: string, description: What is written on it.}
              EXTRA
          status:
            type: object
            properties:
              turning: {type: boolean, description: Whether it turns now.}
"#;

/// `kubectl explain` of a custom kind: its description, a nested field, `--recursive`.
fn explain_shows_the_gizmo(s: &Server, v: &str) {
    let top = s.kubectl(v, &["explain", "gizmos"]).ok().stdout;
    for want in [
        "KIND:       Gizmo",
        "GROUP:      explain.example.com",
        "A Gizmo is a small machine.",
        "What the gizmo should do.",
        "metadata\t<ObjectMeta>",
        "spec\t<Object>",
    ] {
        assert!(top.contains(want), "kubectl {v}: {want:?} not in\n{top}");
    }
    let field = s.kubectl(v, &["explain", "gizmos.spec.speed"]).ok().stdout;
    assert!(
        field.contains("FIELD: speed <integer>")
            && field.contains("How fast it turns, in turns a second."),
        "kubectl {v}:\n{field}"
    );
    let all = s
        .kubectl(v, &["explain", "gizmo", "--recursive"])
        .ok()
        .stdout;
    for want in [
        "speed\t<integer> -required-",
        "label\t<string>",
        "turning\t<boolean>",
        // ObjectMeta as the built-in documents describe it.
        "ownerReferences\t<[]OwnerReference>",
    ] {
        assert!(all.contains(want), "kubectl {v}: {want:?} not in\n{all}");
    }
}

#[test]
fn kubectl_explain_reads_custom_kinds_and_follows_their_crd() {
    let s = Server::start();
    let crd = |extra: &str| {
        let f = write(
            s.dir.path(),
            "gizmo-crd.yaml",
            &EXPLAINED_CRD.replace("EXTRA", extra),
        );
        s.kubectl("1.33", &["apply", "-f", f.to_str().unwrap()])
            .ok();
        s.kubectl(
            "1.33",
            &[
                "wait",
                "--for=condition=Established",
                "crd/gizmos.explain.example.com",
            ],
        )
        .ok();
    };
    crd("");
    let gv = "apis/explain.example.com/v1";
    let index_url = |s: &Server| -> Option<String> {
        let index: Value = serde_json::from_str(
            &s.kubectl("1.33", &["get", "--raw", "/openapi/v3"])
                .ok()
                .stdout,
        )
        .unwrap();
        index["paths"][gv]["serverRelativeURL"]
            .as_str()
            .map(String::from)
    };
    let first = eventually("the group/version in the /openapi/v3 index", || {
        index_url(&s)
    });
    for v in ["1.27", "1.33"] {
        explain_shows_the_gizmo(&s, v);
    }
    // The group/version document, as kube-apiserver serves it: cacheable by its hash,
    // with the built-in definitions it references.
    let (code, doc) = s.curl("GET", &first, &[]).http();
    assert_eq!(code, 200);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["com.example.explain.v1.Gizmo"]["x-kubernetes-group-version-kind"],
        json!([{"group": "explain.example.com", "kind": "Gizmo", "version": "v1"}])
    );
    for name in [
        "com.example.explain.v1.GizmoList",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
    ] {
        assert!(schemas.get(name).is_some(), "{name} not in the document");
    }
    let headers = s
        .curl("GET", &first, &["-o", "/dev/null", "-D", "-"])
        .stdout;
    assert!(
        headers
            .to_lowercase()
            .contains("cache-control: public, immutable"),
        "{headers}"
    );
    // /openapi/v2 has the kind's definition and paths too.
    let (code, v2) = s.curl("GET", "/openapi/v2", &[]).http();
    assert_eq!(code, 200);
    assert_eq!(
        v2["definitions"]["com.example.explain.v1.Gizmo"]["x-kubernetes-group-version-kind"][0]
            ["kind"],
        "Gizmo"
    );
    assert!(
        v2["paths"]["/apis/explain.example.com/v1/namespaces/{namespace}/gizmos/{name}"]["patch"]
            .is_object()
    );

    // A new field: the hash changes, and kubectl (with its cache of the old document)
    // explains it.
    crd("shape: {type: string, description: The outline of the gizmo.}");
    let second = eventually("a new hash after the CRD changed", || {
        index_url(&s).filter(|u| *u != first)
    });
    let (code, _) = s.curl("GET", &first, &["-o", "/dev/null", "-L"]).http();
    assert_eq!(code, 200, "an outdated hash is redirected to {second}");
    for v in ["1.27", "1.33"] {
        let out = s.kubectl(v, &["explain", "gizmos.spec.shape"]).ok().stdout;
        assert!(
            out.contains("FIELD: shape <string>") && out.contains("The outline of the gizmo."),
            "kubectl {v}:\n{out}"
        );
    }

    // Deleted: the documents no longer have it, and explain fails as against
    // kube-apiserver (kubectl's discovery cache still names the kind at first).
    s.kubectl(
        "1.33",
        &[
            "delete",
            "crd",
            "gizmos.explain.example.com",
            "--timeout=60s",
        ],
    )
    .ok();
    eventually("the group/version gone from the index", || {
        index_url(&s).is_none().then_some(())
    });
    let (code, _) = s.curl("GET", &format!("/openapi/v3/{gv}"), &[]).http();
    assert_eq!(code, 404);
    for v in ["1.27", "1.33"] {
        let fresh = s.dir.path().join(format!("cache-{v}"));
        let out = s
            .kubectl(
                v,
                &["explain", "gizmos", "--cache-dir", fresh.to_str().unwrap()],
            )
            .fails();
        assert!(
            out.stderr
                .contains("the server doesn't have a resource type \"gizmos\""),
            "kubectl {v}: {out:?}"
        );
        let out = s.kubectl(v, &["explain", "gizmos.spec"]).fails();
        assert!(
            out.stderr.contains("gizmos") || out.stderr.contains("Gizmo"),
            "kubectl {v}: {out:?}"
        );
    }
}
