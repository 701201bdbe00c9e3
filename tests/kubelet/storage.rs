//! Persistent volumes from the built-in local-path provisioner: the default class, a
//! claim provisioned on the node of its first consumer and bound, its data outliving the
//! pod, reclaimed with the claim (or kept, Released, under `Retain`); a claim of an
//! unknown class keeps its pod waiting.

use crate::node::{assert_clean, wait, wait_or, Node};

#[test]
fn local_path_claims_provision_bind_persist_and_reclaim() {
    let (dir, cgroups);
    {
        let n = Node::start();
        dir = n.data().to_path_buf();
        cgroups = n.cgroup_dirs(n.server.agent_cgroup().unwrap());
        let img = &n.image;
        // The server's default class, as k3s's.
        let sc = wait("the local-path StorageClass", 30, || {
            let o = n.k(&["get", "storageclass", "--no-headers"]);
            o.stdout.contains("local-path").then_some(o.stdout)
        });
        let cols: Vec<&str> = sc.split_whitespace().collect();
        assert_eq!(
            cols[..6],
            [
                "local-path",
                "(default)",
                "rancher.io/local-path",
                "Delete",
                "WaitForFirstConsumer",
                "false"
            ],
            "{sc}"
        );

        // A claim without a class gets the default; its first consumer provisions it.
        n.apply(&format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 64Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  containers:
  - name: c
    image: {img}
    command: ["sh", "-c", "echo persisted > /data/file && sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
"#
        ));
        let class = n
            .k(&[
                "get",
                "pvc",
                "data",
                "-o",
                "jsonpath={.spec.storageClassName}",
            ])
            .ok()
            .stdout;
        assert_eq!(class, "local-path");
        n.k(&[
            "wait",
            "--for=condition=Ready",
            "pod/writer",
            "--timeout=60s",
        ])
        .ok();
        let uid = n
            .k(&["get", "pvc", "data", "-o", "jsonpath={.metadata.uid}"])
            .ok()
            .stdout;
        let pv = format!("pvc-{uid}");
        let pvc_row = n.k(&["get", "pvc", "data", "--no-headers"]).ok().stdout;
        let cols: Vec<&str> = pvc_row.split_whitespace().collect();
        assert_eq!(
            cols[..6],
            ["data", "Bound", pv.as_str(), "64Mi", "RWO", "local-path"],
            "{pvc_row}"
        );
        let pv_row = n.k(&["get", "pv", "--no-headers"]).ok().stdout;
        let cols: Vec<&str> = pv_row.split_whitespace().collect();
        assert_eq!(
            cols[..7],
            [
                pv.as_str(),
                "64Mi",
                "RWO",
                "Delete",
                "Bound",
                "default/data",
                "local-path"
            ],
            "{pv_row}"
        );
        let affinity = n
            .k(&[
                "get",
                "pv",
                &pv,
                "-o",
                "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]} {.metadata.annotations.pv\\.kubernetes\\.io/provisioned-by}",
            ])
            .ok()
            .stdout;
        let node = n
            .k(&["get", "pod", "writer", "-o", "jsonpath={.spec.nodeName}"])
            .ok()
            .stdout;
        assert_eq!(affinity, format!("{node} rancher.io/local-path"));
        let volume_dir = dir
            .join("agent/storage")
            .join(format!("pvc-{uid}_default_data"));
        assert_eq!(
            std::fs::read_to_string(volume_dir.join("file")).unwrap(),
            "persisted\n"
        );

        // The data outlives the pod: a new pod (mounting it read-only) reads it.
        n.k(&["delete", "pod", "writer", "--grace-period=1"]).ok();
        n.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  containers:
  - name: c
    image: {img}
    command: ["sh", "-c", "cat /data/file; sleep 3600"]
    volumeMounts: [{{name: data, mountPath: /data, readOnly: true}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data}}}}
"#
        ));
        n.k(&[
            "wait",
            "--for=condition=Ready",
            "pod/reader",
            "--timeout=60s",
        ])
        .ok();
        wait("the reader's log", 30, || {
            let o = n.k(&["logs", "reader"]);
            (o.stdout == "persisted\n").then_some(())
        });
        let w = n.k(&["exec", "reader", "--", "touch", "/data/other"]);
        assert_ne!(w.code, 0, "a readOnly mount refuses writes: {w:?}");

        // A claim in use is kept (pvc-protection) until its pod is gone; then the volume
        // is reclaimed (reclaim policy Delete).
        n.k(&["delete", "pvc", "data", "--wait=false"]).ok();
        let row = n.k(&["get", "pvc", "data", "--no-headers"]).ok().stdout;
        assert!(row.contains("Terminating"), "{row}");
        assert_eq!(n.jp("reader", "{.status.phase}"), "Running");
        n.k(&["delete", "pod", "reader", "--grace-period=1"]).ok();
        wait_or(
            "the released volume deleted",
            60,
            || {
                let o = n.k(&["get", "pv", "--no-headers"]);
                (!o.stdout.contains(&pv) && !volume_dir.exists()).then_some(())
            },
            || n.k(&["get", "pv", "-o", "yaml"]).stdout,
        );

        // Reclaim Retain: the claim goes, the volume stays Released with its data.
        n.apply(&format!(
            r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: keep}}
provisioner: rancher.io/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: kept}}
spec:
  storageClassName: keep
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: keeper}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {img}
    command: ["sh", "-c", "echo kept > /data/file"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: kept}}}}
"#
        ));
        wait("the keeper pod to finish", 60, || {
            (n.jp("keeper", "{.status.phase}") == "Succeeded").then_some(())
        });
        let kept_uid = n
            .k(&["get", "pvc", "kept", "-o", "jsonpath={.metadata.uid}"])
            .ok()
            .stdout;
        let kept_pv = format!("pvc-{kept_uid}");
        n.k(&["delete", "pod", "keeper"]).ok();
        n.k(&["delete", "pvc", "kept", "--timeout=60s"]).ok();
        wait("the retained volume Released", 30, || {
            let o = n.k(&["get", "pv", &kept_pv, "-o", "jsonpath={.status.phase}"]);
            (o.stdout == "Released").then_some(())
        });
        let kept_dir = dir
            .join("agent/storage")
            .join(format!("pvc-{kept_uid}_default_kept"));
        assert_eq!(
            std::fs::read_to_string(kept_dir.join("file")).unwrap(),
            "kept\n"
        );
        n.k(&["delete", "pv", &kept_pv]).ok();

        // A claim of a class that does not exist stays Pending; its pod waits in
        // ContainerCreating with an event saying why.
        n.apply(&format!(
            r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: lost}}
spec:
  storageClassName: nope
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: stuck}}
spec:
  containers:
  - name: c
    image: {img}
    command: ["sleep", "3600"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: lost}}}}
"#
        ));
        let events = wait("a FailedMount event of the stuck pod", 60, || {
            let o = n.k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=stuck",
            ]);
            o.stdout.contains("FailedMount").then_some(o.stdout)
        });
        assert!(
            events.contains("storageclass.storage.k8s.io \"nope\" not found"),
            "{events}"
        );
        let row = n.k(&["get", "pod", "stuck", "--no-headers"]).ok().stdout;
        assert!(row.contains("ContainerCreating"), "{row}");
        assert_eq!(n.jp("stuck", "{.status.phase}"), "Pending");
        let claim = n.k(&["get", "pvc", "lost", "--no-headers"]).ok().stdout;
        assert!(
            claim.contains("Pending") && claim.contains("nope"),
            "{claim}"
        );
        let claim_events = wait("the claim's ProvisioningFailed event", 30, || {
            let o = n.k(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=lost",
            ]);
            o.stdout.contains("ProvisioningFailed").then_some(o.stdout)
        });
        assert!(
            claim_events.contains("\"nope\" not found"),
            "{claim_events}"
        );
        n.k(&["delete", "pod", "stuck", "--grace-period=1"]).ok();
        n.k(&["delete", "pvc", "lost", "--timeout=60s"]).ok();
        // The provisioner runs as the node: claims of its pods, volumes it made.
        assert_eq!(n.node_refusals(), Vec::<String>::new());
    }
    assert_clean(&dir, &cgroups);
}
