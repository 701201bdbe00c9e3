//! The serviceaccount controller and the root-ca-cert-publisher against the real API
//! server: a new namespace gets its `default` ServiceAccount and its `kube-root-ca.crt`
//! ConfigMap, and both come back when deleted or edited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{eventually, Cluster};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use skiff_controllers::Config;

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
