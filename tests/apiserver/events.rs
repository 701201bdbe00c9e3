//! Events through both API groups: one storage, two shapes, as in Kubernetes. What a
//! recorder writes through `events.k8s.io/v1` (kube-rs does) shows in `kubectl get events`
//! and `kubectl describe`, and the reverse.

use serde_json::{json, Value};

use crate::common::{Server, VERSIONS};

fn send(s: &Server, method: &str, path: &str, ct: &str, body: &Value) -> (u16, Value) {
    s.send(method, path, ct, &body.to_string())
}

const V1: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const CORE: &str = "/api/v1/namespaces/default/events";

#[test]
fn events_recorded_through_either_group_are_seen_through_both() {
    let s = Server::start();
    s.kubectl(
        "1.33",
        &["create", "configmap", "watched", "--from-literal=a=b"],
    )
    .ok();
    let (_, cm) = s
        .curl("GET", "/api/v1/namespaces/default/configmaps/watched", &[])
        .http();
    let uid = cm["metadata"]["uid"].as_str().unwrap().to_string();

    // Recorded through events.k8s.io/v1, as kube-rs' recorder does.
    let (code, created) = send(
        &s,
        "POST",
        V1,
        "application/json",
        &json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "watched.1", "namespace": "default"},
            "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "watched",
                          "namespace": "default", "uid": uid},
            "reason": "Synced", "note": "configuration synced", "type": "Normal",
            "action": "Sync", "reportingController": "skiff.dev/test",
            "reportingInstance": "test-1", "eventTime": "2026-01-01T00:00:00.000000Z",
        }),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["apiVersion"], "events.k8s.io/v1");
    assert_eq!(created["note"], "configuration synced");
    assert!(created.get("message").is_none(), "{created}");

    // The core view.
    let (_, core) = s.curl("GET", &format!("{CORE}/watched.1"), &[]).http();
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "configuration synced");
    assert_eq!(core["involvedObject"]["uid"], uid.as_str());
    assert_eq!(core["reportingComponent"], "skiff.dev/test");
    for v in VERSIONS {
        let out = s.kubectl(v, &["get", "events"]).ok().stdout;
        assert!(
            out.contains("Synced") && out.contains("configmap/watched"),
            "{v}: {out}"
        );
        let out = s
            .kubectl(v, &["describe", "configmap", "watched"])
            .ok()
            .stdout;
        let events = out.split("Events:").nth(1).unwrap_or_default();
        assert!(
            events.contains("Synced") && events.contains("configuration synced"),
            "{v}: {out}"
        );
    }

    // A merge patch against the v1 shape (a recorder counting a series).
    let (code, patched) = send(
        &s,
        "PATCH",
        &format!("{V1}/watched.1"),
        "application/merge-patch+json",
        &json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"},
                "note": "synced again"}),
    );
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["series"]["count"], 2);
    assert_eq!(patched["note"], "synced again");
    let (_, core) = s.curl("GET", &format!("{CORE}/watched.1"), &[]).http();
    assert_eq!(core["message"], "synced again");
    assert_eq!(core["series"]["count"], 2);

    // Recorded through core/v1 (client-go's recorder), read through events.k8s.io/v1.
    let (code, _) = send(
        &s,
        "POST",
        CORE,
        "application/json",
        &json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "watched.2", "namespace": "default"},
            "involvedObject": {"kind": "ConfigMap", "name": "watched", "namespace": "default"},
            "reason": "Old", "message": "from client-go", "type": "Warning",
            "source": {"component": "legacy"}, "count": 4,
        }),
    );
    assert_eq!(code, 201);
    let (code, list) = s
        .curl(
            "GET",
            &format!("{V1}?fieldSelector=regarding.name%3Dwatched"),
            &[],
        )
        .http();
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "EventList");
    assert_eq!(list["apiVersion"], "events.k8s.io/v1");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    let old = items.iter().find(|e| e["reason"] == "Old").unwrap();
    assert_eq!(old["note"], "from client-go");
    assert_eq!(old["deprecatedSource"]["component"], "legacy");
    assert_eq!(old["deprecatedCount"], 4);
    assert_eq!(old["regarding"]["name"], "watched");
    let (_, none) = s
        .curl(
            "GET",
            &format!("{V1}?fieldSelector=regarding.name%3Dother"),
            &[],
        )
        .http();
    assert_eq!(none["items"], json!([]));

    // A watch through events.k8s.io/v1 sends the v1 shape.
    let out = s
        .curl("GET", &format!("{V1}?watch=true&timeoutSeconds=1"), &[])
        .ok()
        .stdout;
    let lines: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert_eq!(l["type"], "ADDED");
        assert_eq!(l["object"]["apiVersion"], "events.k8s.io/v1");
        assert!(l["object"].get("note").is_some(), "{l}");
    }

    // Deleting through one view removes it from the other.
    let (code, _) = s.curl("DELETE", &format!("{V1}/watched.2"), &[]).http();
    assert_eq!(code, 200);
    let (code, _) = s.curl("GET", &format!("{CORE}/watched.2"), &[]).http();
    assert_eq!(code, 404);

    // A core-shaped body sent to events.k8s.io is refused with a clear error.
    let (code, st) = send(
        &s,
        "POST",
        V1,
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x"}}),
    );
    assert_eq!(code, 400, "{st}");
    assert!(
        st["message"].as_str().unwrap().contains("events.k8s.io/v1"),
        "{st}"
    );
}

#[test]
fn events_expire_after_the_event_ttl() {
    let s = Server::start_with(&["--event-ttl", "2s"]);
    s.kubectl("1.33", &["create", "configmap", "kept"]).ok();
    let event = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "ConfigMap", "name": "kept", "namespace": "default"},
            "reason": "Short", "message": "lives two seconds", "type": "Normal",
        })
    };
    assert_eq!(
        send(&s, "POST", CORE, "application/json", &event("short.1")).0,
        201
    );
    assert_eq!(
        send(
            &s,
            "POST",
            V1,
            "application/json",
            &json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "short.2", "namespace": "default"},
                "regarding": {"kind": "ConfigMap", "name": "kept", "namespace": "default"},
                "reason": "Short", "note": "also", "type": "Normal", "action": "A",
                "reportingController": "t", "reportingInstance": "t",
                "eventTime": "2026-01-01T00:00:00.000000Z",
            })
        )
        .0,
        201
    );
    crate::common::eventually("the events to expire", || {
        let (_, list) = s.curl("GET", CORE, &[]).http();
        list["items"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    // Other objects are not touched by the events' leases.
    s.kubectl("1.33", &["get", "configmap", "kept"]).ok();
    // Events written after the first lease ran out still get a fresh one.
    assert_eq!(
        send(&s, "POST", CORE, "application/json", &event("short.3")).0,
        201
    );
    let (code, _) = s.curl("GET", &format!("{CORE}/short.3"), &[]).http();
    assert_eq!(code, 200);
}
