//! The incremental diff: only what changed, in an order nft accepts.

use serde_json::{json, Value};

use super::*;
use crate::proxy::model::tests::{cfg, ready, service, slice};

fn tcp(port: u16) -> Value {
    json!([{"port": port, "protocol": "TCP"}])
}

/// `n` Services with `eps` endpoints each, fully synced.
pub(crate) fn populated(n: usize, eps: usize) -> Proxier {
    let mut p = Proxier::new(cfg());
    for i in 0..n {
        let name = format!("svc-{i}");
        let cip = format!("10.43.{}.{}", i / 250, i % 250 + 1);
        p.upsert_service(service(&name, &cip, json!({})));
        let ips: Vec<String> = (0..eps)
            .map(|e| format!("10.42.{}.{}", (i * eps + e) / 250, (i * eps + e) % 250 + 1))
            .collect();
        let endpoints: Vec<_> = ips.iter().map(|ip| ready(ip)).collect();
        p.upsert_slice(slice(&name, &format!("{name}-1"), tcp(8080), &endpoints));
    }
    let plan = p.plan();
    assert!(plan.full);
    p.commit(plan);
    p
}

fn ops(tx: &Transaction) -> Vec<String> {
    tx.commands
        .iter()
        .map(|c| {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            let (kind, _) = body.as_object().unwrap().iter().next().unwrap();
            format!("{verb} {kind}")
        })
        .collect()
}

#[test]
fn one_endpoint_change_at_10000_services_is_a_constant_size_transaction() {
    let mut p = populated(10_000, 10);
    assert!(!p.pending());

    // One Service loses one of its ten endpoints.
    let ips: Vec<String> = (0..9).map(|e| format!("10.42.200.{}", e + 1)).collect();
    let endpoints: Vec<_> = ips.iter().map(|ip| ready(ip)).collect();
    p.upsert_slice(slice("svc-5000", "svc-5000-1", tcp(8080), &endpoints));
    let plan = p.plan();
    assert!(!plan.full);
    let n = plan.transaction.len();
    // Only the Service's chain is rewritten (flush, masquerade off-cluster, a dnat rule
    // per endpoint: nine now) and the gone endpoint's hairpin element deleted.
    assert_eq!(n, 1 + 2 + 9, "{:?}", ops(&plan.transaction));
    p.commit(plan);

    // Moving one endpoint of a Service (same count) touches only that endpoint.
    let mut ips2 = ips.clone();
    // (An address no other Service uses: it gets its own hairpin element.)
    ips2[0] = "10.99.0.1".into();
    let endpoints: Vec<_> = ips2.iter().map(|ip| ready(ip)).collect();
    p.upsert_slice(slice("svc-5000", "svc-5000-1", tcp(8080), &endpoints));
    let plan = p.plan();
    let got = ops(&plan.transaction);
    // Old address's hairpin element out, chain rewritten, new address's element in.
    assert_eq!(got.len(), 1 + 2 + 9 + 1);
    assert_eq!(got[0], "delete element");
    assert_eq!(got[1], "flush chain");
    assert!(got[2..12].iter().all(|o| o == "add rule"), "{got:?}");
    assert_eq!(got[12], "add element");
    // The same change at 10 Services (svc-0 has 10.42.0.1-10.42.0.9 after dropping
    // 10.42.0.10 first): the size does not grow with the cluster.
    let mut small = populated(10, 10);
    let nine: Vec<String> = (0..9).map(|e| format!("10.42.0.{}", e + 1)).collect();
    let eps: Vec<_> = nine.iter().map(|ip| ready(ip)).collect();
    small.upsert_slice(slice("svc-0", "svc-0-1", tcp(8080), &eps));
    let first = small.plan();
    small.commit(first);
    let mut moved = nine.clone();
    moved[0] = "10.99.0.1".into();
    let eps: Vec<_> = moved.iter().map(|ip| ready(ip)).collect();
    small.upsert_slice(slice("svc-0", "svc-0-1", tcp(8080), &eps));
    let small_plan = small.plan();
    assert_eq!(small_plan.transaction.len(), plan.transaction.len());
}

#[test]
fn unchanged_objects_produce_no_commands() {
    let mut p = populated(3, 2);
    let svc = service("svc-1", "10.43.0.2", json!({}));
    p.upsert_service(svc);
    assert!(
        !p.pending(),
        "re-sending an identical Service is not a change"
    );
    // A no-op change in metadata only (a label): dirty, but nothing to write.
    let mut svc = service("svc-1", "10.43.0.2", json!({}));
    svc.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    p.upsert_service(svc);
    let plan = p.plan();
    assert!(plan.transaction.is_empty());
}

#[test]
fn deleting_a_service_removes_its_elements_then_its_chains() {
    let mut p = populated(2, 2);
    p.delete_service(&ServiceRef::new("default", "svc-0"));
    let plan = p.plan();
    let got = ops(&plan.transaction);
    assert!(got[..3].iter().all(|o| o == "delete element"), "{got:?}");
    let first_delete_chain = got.iter().position(|o| o == "delete chain").unwrap();
    let last_flush = got.iter().rposition(|o| o == "flush chain").unwrap();
    assert!(last_flush < first_delete_chain, "{got:?}");
    assert_eq!(got.iter().filter(|o| *o == "delete chain").count(), 1);
    p.commit(plan);
    assert_eq!(p.expected_elements(), (1, 0));
}

#[test]
fn endpoints_going_away_switch_to_reject() {
    let mut p = populated(1, 1);
    p.delete_slice(&slice("svc-0", "svc-0-1", tcp(8080), &[]));
    let plan = p.plan();
    let got = ops(&plan.transaction);
    assert!(got.contains(&"delete element".to_string()));
    assert!(got.contains(&"add element".to_string()));
    let add = plan
        .transaction
        .commands
        .iter()
        .find(|c| c.get("add").and_then(|a| a.get("element")).is_some())
        .unwrap();
    assert_eq!(add["add"]["element"]["name"], "no-endpoint-services");
}

#[test]
fn a_failed_apply_keeps_the_changes_and_forces_a_full_resync() {
    let mut p = populated(2, 1);
    p.delete_service(&ServiceRef::new("default", "svc-0"));
    let plan = p.plan();
    assert!(!p.pending());
    p.abort(plan);
    assert!(p.pending());
    let plan = p.plan();
    assert!(plan.full);
    // The full plan recreates the table with only the surviving Service.
    let adds = plan
        .transaction
        .commands
        .iter()
        .filter(|c| c["add"]["element"]["name"] == "service-ips")
        .count();
    assert_eq!(adds, 1);
    p.commit(plan);
    assert_eq!(p.expected_elements(), (1, 0));
}

#[test]
fn stale_udp_endpoints_are_reported() {
    let mut p = Proxier::new(cfg());
    p.upsert_service(service(
        "dns",
        "10.43.0.10",
        json!({"ports": [{"port": 53, "protocol": "UDP"}]}),
    ));
    let udp = json!([{"port": 53, "protocol": "UDP"}]);
    p.upsert_slice(slice(
        "dns",
        "dns-1",
        udp.clone(),
        &[ready("10.42.0.5"), ready("10.42.0.6")],
    ));
    let plan = p.plan();
    p.commit(plan);
    p.upsert_slice(slice("dns", "dns-1", udp, &[ready("10.42.0.6")]));
    let plan = p.plan();
    assert_eq!(plan.stale_udp.len(), 1);
    assert_eq!(
        plan.stale_udp[0].1,
        "10.42.0.5".parse::<std::net::Ipv4Addr>().unwrap()
    );
}

#[test]
fn a_slice_relabelled_to_another_service_leaves_the_first() {
    let mut p = populated(2, 1);
    // svc-0's slice now says it belongs to svc-1.
    let mut moved = slice("svc-1", "svc-0-1", tcp(8080), &[ready("10.42.9.9")]);
    moved.metadata.name = Some("svc-0-1".into());
    p.upsert_slice(moved);
    let plan = p.plan();
    p.commit(plan);
    // svc-0 has no endpoints (reject), svc-1 has two.
    assert_eq!(p.expected_elements(), (1, 1));
}

#[test]
fn hairpin_elements_follow_the_services_using_an_address() {
    let mut p = Proxier::new(cfg());
    p.upsert_service(service("a", "10.43.0.1", json!({})));
    p.upsert_service(service("b", "10.43.0.2", json!({})));
    p.upsert_slice(slice("a", "a-1", tcp(8080), &[ready("10.42.0.5")]));
    p.upsert_slice(slice("b", "b-1", tcp(8080), &[ready("10.42.0.5")]));
    let plan = p.plan();
    let adds = |t: &Transaction| {
        t.commands
            .iter()
            .filter(|c| c["add"]["element"]["name"] == "hairpin")
            .count()
    };
    let dels = |t: &Transaction| {
        t.commands
            .iter()
            .filter(|c| c["delete"]["element"]["name"] == "hairpin")
            .count()
    };
    assert_eq!(adds(&plan.transaction), 1, "one element for two users");
    p.commit(plan);
    p.delete_service(&ServiceRef::new("default", "a"));
    let plan = p.plan();
    assert_eq!(dels(&plan.transaction), 0, "b still uses it");
    p.commit(plan);
    p.delete_service(&ServiceRef::new("default", "b"));
    let plan = p.plan();
    assert_eq!(dels(&plan.transaction), 1);
}
