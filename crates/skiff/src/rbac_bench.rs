//! `skiff bench rbac`: what authorization and custom resources cost, in one run on one
//! `skiff server`.
//!
//! - RBAC: 1,000 Roles and 1,000 RoleBindings (to 1,000 other service accounts) are
//!   created, plus one Role letting a user `bench` and the service account `bench` create
//!   ConfigMaps. Then rounds alternate N ConfigMap creates by: the user `bench` (a client
//!   certificate; every request authorized by RBAC), the user `bench-admin` (a client
//!   certificate in `system:masters`: RBAC is not consulted — "RBAC off"; the same
//!   authentication), and the service account (its token: a JWT verified, its service
//!   account looked up, then RBAC). Medians of the rounds.
//! - Custom resources: a CRD with a structural schema (defaults, a CEL rule, printer
//!   columns); rounds alternate N creates of custom objects and N of ConfigMaps (cluster
//!   token), then one LIST of each.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::api_bench::{start_server_named, Conn, ReadySend};

#[derive(Debug, clap::Args)]
pub struct RbacBenchArgs {
    /// Concurrent creating clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Creates per round and identity.
    #[arg(long, default_value_t = 2000)]
    creates: usize,
    /// Rounds of each (alternating).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Roles and RoleBindings in the policy.
    #[arg(long, default_value_t = 1000)]
    roles: usize,
}

async fn call(conn: &Conn, method: &str, path: &str, body: Value) -> Result<(u16, Value)> {
    let mut send = conn.open().await?;
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let resp = send
        .ready_send(conn.req(method, path, body, "application/json")?)
        .await?;
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

async fn must(conn: &Conn, method: &str, path: &str, body: Value) -> Result<Value> {
    let (code, v) = call(conn, method, path, body).await?;
    if !(200..300).contains(&code) {
        bail!("{method} {path}: HTTP {code}: {}", v["message"]);
    }
    Ok(v)
}

/// `n` creates of `body(i)` at `path` by `clients` connections; creates per second.
async fn creates(
    conn: &Conn,
    clients: usize,
    path: &str,
    n: usize,
    body: impl Fn(usize) -> Value + Send + Sync + Clone + 'static,
) -> Result<f64> {
    let per = n.div_ceil(clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (conn, path, body) = (conn.clone(), path.to_string(), body.clone());
        let (from, to) = (c * per, ((c + 1) * per).min(n));
        tasks.push(tokio::spawn(async move {
            let mut send = conn.open().await?;
            for i in from..to {
                let resp = send
                    .ready_send(conn.req(
                        "POST",
                        &path,
                        body(i).to_string().into_bytes(),
                        "application/json",
                    )?)
                    .await?;
                let status = resp.status();
                let b = resp.into_body().collect().await?.to_bytes();
                if status.as_u16() != 201 {
                    bail!(
                        "create {path} #{i}: HTTP {status}: {}",
                        String::from_utf8_lossy(&b)
                    );
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("create task")??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn list_time(conn: &Conn, path: &str) -> Result<(Duration, usize)> {
    let t = Instant::now();
    let v = must(conn, "GET", path, Value::Null).await?;
    Ok((
        t.elapsed(),
        v["items"].as_array().map(Vec::len).unwrap_or(0),
    ))
}

pub fn main(args: RbacBenchArgs) -> Result<()> {
    crate::api_bench::raise_fd_limit();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(args))
}

async fn run(args: RbacBenchArgs) -> Result<()> {
    let (server, addr) = start_server_named("rbac", None, &[])?;
    let admin = Conn::new(&server.dir, &addr)?;
    let ns = "/api/v1/namespaces";
    must(
        &admin,
        "POST",
        ns,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )
    .await?;
    // The policy: 1,000 Roles bound to 1,000 other service accounts.
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/bench";
    let t = Instant::now();
    creates(&admin, args.clients, &format!("{rbac}/roles"), args.roles, |i| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": format!("r{i}")},
            "rules": [{"apiGroups": ["", "apps"], "resources": ["pods", "deployments", format!("things{i}")], "verbs": ["get", "list", "watch"]}]})
    })
    .await?;
    creates(&admin, args.clients, &format!("{rbac}/rolebindings"), args.roles, |i| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("b{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("r{i}")},
            "subjects": [{"kind": "ServiceAccount", "name": format!("sa{i}"), "namespace": "bench"}]})
    })
    .await?;
    must(
        &admin,
        "POST",
        &format!("{ns}/bench/serviceaccounts"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench"}}),
    )
    .await?;
    must(&admin, "POST", &format!("{rbac}/roles"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "writer"}, "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]})).await?;
    must(&admin, "POST", &format!("{rbac}/rolebindings"), json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "writer"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "writer"},
        "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": "bench"},
            {"kind": "User", "name": "bench", "apiGroup": "rbac.authorization.k8s.io"}]})).await?;
    let tr = must(&admin, "POST", &format!("{ns}/bench/serviceaccounts/bench/token"),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 86400}})).await?;
    let mut sa = admin.clone();
    sa.token = tr["status"]["token"]
        .as_str()
        .context("no token")?
        .to_string();
    let pki = server.dir.join("pki");
    let cert = |cn: &str, org: Option<&str>| -> Result<Conn> {
        let issued =
            skiff_apiserver::pki::issue(&pki, skiff_apiserver::pki::Role::Client, cn, org, &[])
                .context("issue a client certificate")?;
        Conn::with_client_cert(&server.dir, &addr, &issued.cert_pem, &issued.key_pem)
    };
    let user = cert("bench", None)?;
    let master = cert("bench-admin", Some("system:masters"))?;
    eprintln!(
        "policy of {} Roles and RoleBindings written in {:.1} s",
        args.roles,
        t.elapsed().as_secs_f64()
    );
    // The policy reaches the authorizer through the watch cache.
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(
        &sa,
        "POST",
        &format!("{ns}/bench/configmaps"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}),
    )
    .await?
    .0 != 201
    {
        if Instant::now() > deadline {
            bail!("the service account's Role never took effect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cm = |who: &'static str, round: usize| move |i: usize| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("{who}-{round}-{i}")}, "data": {"k": "v"}});
    let (mut on, mut off, mut token) = (Vec::new(), Vec::new(), Vec::new());
    let cms = format!("{ns}/bench/configmaps");
    for r in 0..args.rounds {
        on.push(creates(&user, args.clients, &cms, args.creates, cm("user", r)).await?);
        off.push(creates(&master, args.clients, &cms, args.creates, cm("master", r)).await?);
        token.push(creates(&sa, args.clients, &cms, args.creates, cm("sa", r)).await?);
        eprintln!(
            "round {r}: RBAC {:.0}/s, system:masters {:.0}/s, service-account token {:.0}/s",
            on[r], off[r], token[r]
        );
    }
    let (on, off, token) = (median(on), median(off), median(token));

    // Custom resources against ConfigMaps.
    must(&admin, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.bench.example.com"},
        "spec": {"group": "bench.example.com", "scope": "Namespaced",
            "names": {"kind": "Thing", "plural": "things"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"size": {"type": "integer", "minimum": 0}, "color": {"type": "string", "default": "blue"}},
                    "x-kubernetes-validations": [{"rule": "self.size < 1000000"}]}}}}}]}})).await?;
    let things = "/apis/bench.example.com/v1/namespaces/bench/things";
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&admin, "GET", things, Value::Null).await?.0 != 200 {
        if Instant::now() > deadline {
            bail!("the CRD was never served");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut cr, mut builtin) = (Vec::new(), Vec::new());
    for r in 0..args.rounds {
        cr.push(creates(&admin, args.clients, things, args.creates, move |i| {
            json!({"apiVersion": "bench.example.com/v1", "kind": "Thing", "metadata": {"name": format!("t-{r}-{i}")}, "spec": {"size": i}})
        }).await?);
        builtin.push(
            creates(
                &admin,
                args.clients,
                &format!("{ns}/bench/configmaps"),
                args.creates,
                cm("cr", r),
            )
            .await?,
        );
        eprintln!(
            "round {r}: custom {:.0}/s, ConfigMap {:.0}/s",
            cr[r], builtin[r]
        );
    }
    let (cr, builtin) = (median(cr), median(builtin));
    let (cr_list, cr_n) = list_time(&admin, things).await?;
    let (cm_list, cm_n) = list_time(&admin, &format!("{ns}/bench/configmaps")).await?;

    println!("RBAC ({} Roles + {} RoleBindings): creates/s by a user RBAC authorizes {on:.0}, by system:masters {off:.0} (client certificates both; medians of {}, {} clients): RBAC costs {:.1} %; by a service-account token {token:.0}/s ({:.1} % below system:masters)",
        args.roles, args.roles, args.rounds, args.clients, (1.0 - on / off) * 100.0, (1.0 - token / off) * 100.0);
    println!("custom resources: creates/s {cr:.0} vs ConfigMaps {builtin:.0} (ratio {:.2}); LIST of {cr_n} custom objects {} ms vs {cm_n} ConfigMaps {} ms",
        cr / builtin, cr_list.as_millis(), cm_list.as_millis());
    drop(server);
    Ok(())
}
