//! The official Python `kubernetes` client (installed by scripts/setup.sh into
//! /opt/skiff-venv) against `skiff server`: CRUD, list with selectors, watch.

use crate::common::{run, write, Server};

const VENV_PYTHON: &str = "/opt/skiff-venv/bin/python";

const SCRIPT: &str = r#"
import sys, threading
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
apps = client.AppsV1Api()

ns = client.V1Namespace(metadata=client.V1ObjectMeta(name="py"))
v1.create_namespace(ns)
assert v1.read_namespace("py").status.phase == "Active"

for i in range(4):
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm{i}", labels={"parity": str(i % 2)}), data={"i": str(i)})
    v1.create_namespaced_config_map("py", cm)
try:
    v1.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm0")))
    raise SystemExit("duplicate create succeeded")
except ApiException as e:
    assert e.status == 409, e

odd = v1.list_namespaced_config_map("py", label_selector="parity=1")
assert sorted(c.metadata.name for c in odd.items) == ["cm1", "cm3"], odd.items
by_name = v1.list_namespaced_config_map("py", field_selector="metadata.name=cm2")
assert [c.metadata.name for c in by_name.items] == ["cm2"]
page = v1.list_namespaced_config_map("py", limit=3)
assert len(page.items) == 3 and page.metadata._continue
rest = v1.list_namespaced_config_map("py", limit=3, _continue=page.metadata._continue)
assert [c.metadata.name for c in rest.items] == ["cm3"]

cm = v1.read_namespaced_config_map("cm1", "py")
cm.data["i"] = "changed"
v1.replace_namespaced_config_map("cm1", "py", cm)
try:
    v1.replace_namespaced_config_map("cm1", "py", cm)
    raise SystemExit("stale update succeeded")
except ApiException as e:
    assert e.status == 409, e
v1.patch_namespaced_config_map("cm1", "py", {"metadata": {"labels": {"patched": "yes"}}})
assert v1.read_namespaced_config_map("cm1", "py").metadata.labels["patched"] == "yes"

dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]))))
created = apps.create_namespaced_deployment("py", dep)
assert created.spec.strategy.type == "RollingUpdate"
apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 5}})
assert apps.read_namespaced_deployment("web", "py").spec.replicas == 5

# Watch: start from the list's resourceVersion, then change things.
rv = v1.list_namespaced_config_map("py").metadata.resource_version
seen = []
def changes():
    v1.patch_namespaced_config_map("cm2", "py", {"data": {"i": "w"}})
    v1.delete_namespaced_config_map("cm3", "py")
    v1.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm9")))
threading.Thread(target=changes).start()
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_config_map, "py", resource_version=rv, timeout_seconds=20):
    seen.append((ev["type"], ev["object"].metadata.name))
    if len(seen) == 3:
        w.stop()
assert seen == [("MODIFIED", "cm2"), ("DELETED", "cm3"), ("ADDED", "cm9")], seen

v1.delete_namespaced_config_map("cm0", "py")
try:
    v1.read_namespaced_config_map("cm0", "py")
    raise SystemExit("deleted object still readable")
except ApiException as e:
    assert e.status == 404
print("python client ok")
"#;

#[test]
fn official_python_client() {
    let s = Server::start();
    let script = write(s.dir.path(), "client.py", SCRIPT);
    let mut c = std::process::Command::new(VENV_PYTHON);
    c.arg(&script).arg(s.kubeconfig());
    let out = run(c, None);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "python client ok");
}
