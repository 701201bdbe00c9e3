use std::os::unix::fs::PermissionsExt;

use crate::cluster::Cluster;

/// The service proxy's nft transactions fail while a marker file exists (an `nft` on the
/// agent's PATH that refuses `-f` while it does, and runs the real one otherwise): the
/// rules before it stay in force, the Node gets a SyncProxyRulesFailed Event saying why,
/// nothing of the failed change is half-applied, and once nft works again the change
/// lands.
#[test]
fn an_nft_failure_keeps_the_previous_rules_and_says_why() {
    let tools = tempfile::tempdir().unwrap();
    let marker = tools.path().join("fail");
    let wrapper = tools.path().join("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e {} ] && [ \"$2\" = -f ]; then echo 'Error: injected by the test' >&2; exit 1; fi\nexec /usr/sbin/nft \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let c = Cluster::start_env(1, &[], &[("PATH", &path)]);
    c.kubia("kubia", 1);
    c.client("client", "default", None);
    c.wait("kubia ready", 90, || {
        (c.ready_replicas("kubia") == Some(1)).then_some(())
    });
    let svc = |name: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: kubia}}\n  ports: [{{port: 80, targetPort: 8080}}]\n")
    };
    c.apply(&svc("before"));
    c.wait("Service before answering", 30, || {
        (!c.hits("default", "client", "http://before", 1).is_empty()).then_some(())
    });
    let table = || {
        c.in_node(1, &["nft", "list", "table", "ip", "skiff-proxy"])
            .ok()
            .stdout
    };

    std::fs::write(&marker, "").unwrap();
    c.apply(&svc("after"));
    let events = c.wait("a SyncProxyRulesFailed Event", 60, || {
        let o = c
            .k(&[
                "get",
                "events",
                "--field-selector",
                "reason=SyncProxyRulesFailed",
                "-o",
                "jsonpath={range .items[*]}{.involvedObject.kind}/{.involvedObject.name}: {.message}{\"\\n\"}{end}",
            ])
            .stdout;
        (!o.trim().is_empty()).then_some(o)
    });
    assert!(
        events.contains("Node/skiff-node-1")
            && events.contains("the previous rules stay in force")
            && events.contains("injected by the test"),
        "{events}"
    );
    let after_ip = c
        .k(&["get", "svc", "after", "-o", "jsonpath={.spec.clusterIP}"])
        .ok()
        .stdout;
    assert!(
        !table().contains(after_ip.trim()),
        "a failed change left rules behind"
    );
    assert!(
        !c.hits("default", "client", "http://before", 1).is_empty(),
        "the rules before the failure are gone"
    );

    std::fs::remove_file(&marker).unwrap();
    c.wait("Service after answering once nft works again", 60, || {
        (!c.hits("default", "client", "http://after", 1).is_empty()).then_some(())
    });
    assert!(table().contains(after_ip.trim()));
}
