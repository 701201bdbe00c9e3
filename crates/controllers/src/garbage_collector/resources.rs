//! API discovery as the garbage collector and the namespace controller use it: every
//! group's preferred version and its resources, with the groups that failed reported
//! beside the ones that answered (one broken group never hides the others).

use kube::discovery::{verbs, ApiCapabilities, ApiGroup, Scope};
use kube::Client;

pub(crate) use super::graph::Resource;

/// The resources the server serves, and the groups whose discovery failed.
#[derive(Default)]
pub(crate) struct Discovered {
    pub resources: Vec<(Resource, ApiCapabilities)>,
    /// `group/version` (or the group) and why it failed.
    pub failed: Vec<(String, kube::Error)>,
}

impl Discovered {
    /// kube's `ErrGroupDiscoveryFailed` text, when some groups failed.
    pub fn failure_message(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = self
            .failed
            .iter()
            .map(|(gv, e)| format!("{gv}: {e}"))
            .collect();
        parts.sort();
        Some(format!(
            "unable to retrieve the complete list of server APIs: {}",
            parts.join(", ")
        ))
    }
}

/// Whether `caps` allows every verb of `needed`.
pub(crate) fn supports(caps: &ApiCapabilities, needed: &[&str]) -> bool {
    needed.iter().all(|v| caps.supports_operation(v))
}

/// The verbs the garbage collector needs to follow a kind.
pub(crate) const GC_VERBS: &[&str] = &[verbs::LIST, verbs::WATCH, verbs::DELETE];

/// Discovers the preferred version of every group. Fails only when even the list of
/// groups cannot be read.
pub(crate) async fn discover(client: &Client) -> Result<Discovered, kube::Error> {
    let mut out = Discovered::default();
    let groups = client.list_api_groups().await?;
    let core = kube::discovery::group(client, ApiGroup::CORE_GROUP).await;
    match core {
        Ok(g) => add(&mut out, &g),
        Err(e) => out.failed.push(("v1".into(), e)),
    }
    for g in groups.groups {
        let Some(version) = g
            .preferred_version
            .as_ref()
            .map(|v| v.version.clone())
            .or_else(|| g.versions.first().map(|v| v.version.clone()))
        else {
            continue;
        };
        let gv = kube::core::GroupVersion::gv(&g.name, &version);
        match kube::discovery::pinned_group(client, &gv).await {
            Ok(group) => add(&mut out, &group),
            Err(e) => out.failed.push((format!("{}/{version}", g.name), e)),
        }
    }
    Ok(out)
}

fn add(out: &mut Discovered, group: &ApiGroup) {
    for (ar, caps) in group.recommended_resources() {
        let namespaced = caps.scope == Scope::Namespaced;
        out.resources.push((Resource { ar, namespaced }, caps));
    }
}
