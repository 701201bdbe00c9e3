//! The serviceaccount controller and the root-ca-cert-publisher against the real API
//! server: a new namespace gets its `default` ServiceAccount and its `kube-root-ca.crt`
//! ConfigMap, and both come back when deleted or edited; the serviceaccount-token
//! controller fills legacy token Secrets the API server then accepts, and deletes them
//! with their account.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, Cluster};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff_controllers::{Config, ServiceAccountKey};

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

fn holds_the_ca(cm: &ConfigMap) -> bool {
    cm.data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .map(String::as_str)
        == Some(CA)
        && cm.data.as_ref().map(|d| d.len()) == Some(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_namespace_gets_its_default_service_account_and_root_ca() {
    let c = Cluster::start_with(Config {
        controllers: vec!["serviceaccount".into(), "root-ca-cert-publisher".into()],
        root_ca_pem: Some(CA.into()),
        ..Default::default()
    })
    .await;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    c.cluster_api::<Namespace>()
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = c.api("team-a");
    let cms: Api<ConfigMap> = c.api("team-a");
    let sa = eventually("the default ServiceAccount", || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    let cm = eventually("kube-root-ca.crt", || async {
        cms.get_opt("kube-root-ca.crt").await.unwrap()
    })
    .await;
    assert!(holds_the_ca(&cm), "{cm:?}");
    assert!(
        cm.metadata.annotations.unwrap()["kubernetes.io/description"]
            .starts_with("Contains a CA bundle that can be used to verify the kube-apiserver")
    );

    // Deleted: both come back (as new objects).
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    let old_sa = sa.metadata.uid.clone();
    let old_cm = cm.metadata.uid.clone();
    eventually("a new default ServiceAccount", || async {
        let sa = sas.get_opt("default").await.unwrap()?;
        (sa.metadata.uid != old_sa).then_some(())
    })
    .await;
    eventually("a new kube-root-ca.crt", || async {
        let cm = cms.get_opt("kube-root-ca.crt").await.unwrap()?;
        (cm.metadata.uid != old_cm && holds_the_ca(&cm)).then_some(())
    })
    .await;

    // Edited: the data is restored.
    let patch = json!({"data": {"ca.crt": "forged", "extra": "x"}});
    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually("the CA restored", || async {
        let cm = cms.get_opt("kube-root-ca.crt").await.unwrap()?;
        holds_the_ca(&cm).then_some(())
    })
    .await;

    // The built-in namespaces have them too.
    let default_sas: Api<ServiceAccount> = c.api("kube-system");
    eventually("kube-system's default ServiceAccount", || async {
        default_sas.get_opt("default").await.unwrap()
    })
    .await;
    c.shutdown().await;
}

fn token_secret(name: &str, account: &str, uid: Option<&str>) -> Secret {
    let mut annotations = json!({"kubernetes.io/service-account.name": account});
    if let Some(u) = uid {
        annotations["kubernetes.io/service-account.uid"] = json!(u);
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "annotations": annotations},
        "type": "kubernetes.io/service-account-token"}),
    )
    .unwrap()
}

async fn review(c: &Cluster, token: &str) -> serde_json::Value {
    let r: TokenReview = serde_json::from_value(json!({"spec": {"token": token}})).unwrap();
    let r = c
        .cluster_api::<TokenReview>()
        .create(&PostParams::default(), &r)
        .await
        .unwrap();
    serde_json::to_value(r.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_secrets_are_filled_and_go_with_their_service_account() {
    let c = Cluster::server_only().await;
    let key = std::fs::read_to_string(&c.server.pki.ca_key).unwrap();
    let config = Config {
        controllers: vec!["serviceaccount-token".into()],
        root_ca_pem: Some(CA.into()),
        service_account_private_key: Some(ServiceAccountKey { pem: key }),
        ..Default::default()
    };
    let (client, stop) = (c.controller_client(), c.stop.clone());
    tokio::spawn(async move {
        skiff_controllers::run(client, config, stop)
            .await
            .expect("controller manager");
    });
    let sas: Api<ServiceAccount> = c.api("default");
    let secrets: Api<Secret> = c.api("default");
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "bot"}})).unwrap();
    let sa = sas.create(&PostParams::default(), &sa).await.unwrap();
    let uid = sa.metadata.uid.clone().unwrap();
    secrets
        .create(
            &PostParams::default(),
            &token_secret("bot-token", "bot", None),
        )
        .await
        .unwrap();
    let filled = eventually("the token", || async {
        let s = secrets.get("bot-token").await.unwrap();
        s.data.as_ref()?.get("token")?;
        Some(s)
    })
    .await;
    let data = filled.data.unwrap();
    assert_eq!(data["ca.crt"].0, CA.as_bytes());
    assert_eq!(data["namespace"].0, b"default");
    assert_eq!(
        filled.metadata.annotations.unwrap()["kubernetes.io/service-account.uid"],
        uid
    );
    let token = String::from_utf8(data["token"].0.clone()).unwrap();
    let status = review(&c, &token).await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:default:bot"
    );

    // A Secret naming another account of that name (a uid it does not have), or no
    // account at all, is deleted.
    for (name, account, uid) in [
        ("stale", "bot", Some("not-the-uid")),
        ("orphan", "nobody", None),
    ] {
        secrets
            .create(&PostParams::default(), &token_secret(name, account, uid))
            .await
            .unwrap();
        eventually(&format!("{name} deleted"), || async {
            secrets.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }
    // Deleting the account deletes its token Secret; the token no longer authenticates.
    sas.delete("bot", &DeleteParams::default()).await.unwrap();
    eventually("bot-token deleted", || async {
        secrets
            .get_opt("bot-token")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let status = review(&c, &token).await;
    assert_eq!(status["authenticated"], false, "{status}");
    c.shutdown().await;
}
