//! A container's environment and a pod's volumes, read from the API as the kubelet does:
//! env (value, valueFrom, envFrom) with Kubernetes' error messages, and the volume
//! plugins (emptyDir, configMap, secret, downwardAPI, projected, hostPath, and
//! persistentVolumeClaim through [`super::storage`]) whose files
//! are written with the atomic writer (`..data` symlink swapped), so updates reach
//! running pods.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Volume,
};
use kube::Api;
use skiff_container::BindMount;

/// Why env or a volume could not be made; the message is Kubernetes'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

async fn config_map(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<ConfigMap>, ConfigError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .map_err(|e| ConfigError(format!("reading configmap {name:?}: {e}")))
}

async fn secret(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<Secret>, ConfigError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    api.get_opt(name)
        .await
        .map_err(|e| ConfigError(format!("reading secret {name:?}: {e}")))
}

fn cm_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = cm
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.clone().unwrap_or_default() {
        m.insert(k, v.0);
    }
    m
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.clone().unwrap_or_default() {
        m.insert(k, v.into_bytes());
    }
    m
}

/// `metadata.name`, `metadata.labels['x']`, `status.hostIP` … of the pod.
pub fn field_value(
    pod: &Pod,
    f: &ObjectFieldSelector,
    host_ip: &str,
) -> Result<String, ConfigError> {
    let p = f.field_path.as_str();
    let md = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let bracket = |prefix: &str| -> Option<String> {
        p.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    let v = match p {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default(),
        "metadata.labels" | "metadata.annotations" => {
            let m = if p == "metadata.labels" {
                md.labels.clone()
            } else {
                md.annotations.clone()
            };
            m.unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v:?}\n"))
                .collect()
        }
        _ => {
            if let Some(k) = bracket("metadata.labels") {
                md.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = bracket("metadata.annotations") {
                md.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(ConfigError(format!("unsupported fieldRef {p:?}")));
            }
        }
    };
    Ok(v)
}

/// `limits.cpu` … of a container, in the divisor's units (rounded up, as Kubernetes).
pub fn resource_value(
    c: &Container,
    r: &ResourceFieldSelector,
    node_cpu_milli: i64,
    node_mem: i64,
) -> Result<String, ConfigError> {
    use skiff_api::quantity::Quantity;
    let res = c.resources.clone().unwrap_or_default();
    let (limits, name) = match r.resource.split_once('.') {
        Some(("limits", n)) => (true, n),
        Some(("requests", n)) => (false, n),
        _ => {
            return Err(ConfigError(format!(
                "unsupported resourceFieldRef {:?}",
                r.resource
            )))
        }
    };
    let map = if limits { res.limits } else { res.requests }.unwrap_or_default();
    let q = map.get(name).and_then(|q| Quantity::parse(&q.0).ok());
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| Quantity::parse(&d.0).ok())
        .filter(|d| !d.is_zero());
    let v = match name {
        "cpu" => {
            let milli =
                q.map(|q| q.milli_value())
                    .unwrap_or(if limits { node_cpu_milli } else { 0 });
            let div = divisor.map(|d| d.milli_value()).unwrap_or(1000).max(1);
            (milli + div - 1) / div
        }
        _ => {
            let v = q
                .map(|q| q.value())
                .unwrap_or(if limits { node_mem } else { 0 });
            let div = divisor.map(|d| d.value()).unwrap_or(1).max(1);
            (v + div - 1) / div
        }
    };
    Ok(v.to_string())
}

/// The container's environment in Kubernetes' order: envFrom, then env (each `$(VAR)`
/// expanded against what came before, then the service links), then the service links
/// ([`super::service_env`]) the container did not set itself.
pub async fn environment(
    client: &kube::Client,
    services: &super::service_env::ServiceCache,
    pod: &Pod,
    c: &Container,
    host_ip: &str,
    node: (i64, i64),
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let links = services.env_for(pod).await?;
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    for from in c.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, &ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.clone().unwrap_or_default() {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, &ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in secret_data(&s) {
                        set(
                            &mut out,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into(),
                        );
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
            }
        }
    }
    for e in c.env.clone().unwrap_or_default() {
        let known: BTreeMap<String, String> = links.iter().chain(out.iter()).cloned().collect();
        let v = if let Some(from) = &e.value_from {
            if let Some(r) = &from.config_map_key_ref {
                match config_map(client, &ns, &r.name).await? {
                    Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("configmap {:?} not found", r.name))),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match secret(client, &ns, &r.name).await? {
                    Some(s) => match secret_data(&s).get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            )))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError(format!("secret {:?} not found", r.name))),
                }
            } else if let Some(f) = &from.field_ref {
                field_value(pod, f, host_ip)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match &r.container_name {
                    Some(n) if !n.is_empty() => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|c| &c.name == n))
                        .cloned()
                        .unwrap_or_else(|| c.clone()),
                    _ => c.clone(),
                };
                resource_value(&target, r, node.0, node.1)?
            } else {
                String::new()
            }
        } else {
            super::podspec::expand(e.value.as_deref().unwrap_or_default(), &known)
        };
        set(&mut out, e.name.clone(), v);
    }
    for (k, v) in links {
        if !out.iter().any(|(n, _)| *n == k) {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// Writes `files` into `dir` with the atomic writer: a new timestamped directory, then
/// the `..data` symlink swapped to it, and one symlink per top-level entry.
pub fn atomic_write(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    // Unchanged content: nothing to do (the common case on each resync).
    let data = dir.join("..data");
    if data.exists() {
        let same = files
            .iter()
            .all(|(k, (v, _))| std::fs::read(data.join(k)).ok().as_deref() == Some(v.as_slice()));
        let count = walk(&data).len();
        if same && count == files.len() {
            return Ok(false);
        }
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let new = dir.join(&stamp);
    std::fs::create_dir_all(&new)?;
    for (k, (v, mode)) in files {
        let p = new.join(k);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, v)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data)?;
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k).to_string())
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(t), &link)?;
        }
    }
    // Entries that are gone.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if !n.starts_with("..") && !tops.contains(&n) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Some(o) = old {
        if o != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(o));
        }
    }
    Ok(true)
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn items_or_all(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    mode: u32,
    what: &str,
    optional: bool,
) -> Result<BTreeMap<String, (Vec<u8>, u32)>, ConfigError> {
    let mut out = BTreeMap::new();
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(
                            it.path.clone(),
                            (v.clone(), it.mode.map(|m| m as u32).unwrap_or(mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(ConfigError(format!(
                            "configuration for {what} has no key {:?}",
                            it.key
                        )))
                    }
                }
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k, (v, mode));
            }
        }
    }
    Ok(out)
}

/// Where a volume's files live on the host.
pub fn volume_dir(pod_dir: &Path, v: &Volume) -> PathBuf {
    let plugin = if v.empty_dir.is_some() {
        "empty-dir"
    } else if v.config_map.is_some() {
        "configmap"
    } else if v.secret.is_some() {
        "secret"
    } else if v.downward_api.is_some() {
        "downward-api"
    } else {
        "projected"
    };
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(&v.name)
}

/// Sets up (or refreshes) every volume of the pod; returns each volume's host path.
pub async fn setup(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
    host_ip: &str,
) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    let spec = pod.spec.clone().unwrap_or_default();
    fn werr(v: &str) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
        move |e| ConfigError(format!("MountVolume.SetUp failed for volume {v:?}: {e}"))
    }
    // The pod is bound to this node, and its directory is `<data dir>/pods/<uid>`.
    let local = super::storage::Local {
        client,
        node: spec.node_name.as_deref().unwrap_or_default(),
        data_dir: pod_dir.parent().and_then(Path::parent).unwrap_or(pod_dir),
    };
    for v in spec.volumes.clone().unwrap_or_default() {
        if let Some(c) = &v.persistent_volume_claim {
            let path = super::storage::claim_path(&local, &ns, &v.name, &c.claim_name).await?;
            out.insert(v.name.clone(), path);
            continue;
        }
        let dir = volume_dir(pod_dir, &v);
        if let Some(h) = &v.host_path {
            let p = PathBuf::from(&h.path);
            match h.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(werr(&v.name))?,
                "FileOrCreate" if !p.exists() => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(werr(&v.name))?;
                    }
                    std::fs::write(&p, b"").map_err(werr(&v.name))?;
                }
                "Directory" if !p.is_dir() => {
                    return Err(ConfigError(format!(
                        "MountVolume.SetUp failed for volume {:?} : hostPath type check failed: {} is not a directory",
                        v.name, h.path
                    )))
                }
                "File" if !p.is_file() => {
                    return Err(ConfigError(format!(
                        "MountVolume.SetUp failed for volume {:?} : hostPath type check failed: {} is not a file",
                        v.name, h.path
                    )))
                }
                _ => {}
            }
            out.insert(v.name.clone(), p);
            continue;
        }
        if let Some(e) = &v.empty_dir {
            let fresh = !dir.exists();
            std::fs::create_dir_all(&dir).map_err(werr(&v.name))?;
            if fresh {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(werr(&v.name))?;
            }
            if e.medium.as_deref() == Some("Memory") && !super::containers::is_mounted(&dir) {
                let size = e
                    .size_limit
                    .as_ref()
                    .and_then(|q| skiff_api::quantity::Quantity::parse(&q.0).ok())
                    .map(|q| format!("size={}", q.value()))
                    .unwrap_or_default();
                nix::mount::mount(
                    Some("tmpfs"),
                    &dir,
                    Some("tmpfs"),
                    nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                    Some(size.as_str()),
                )
                .map_err(|e| {
                    ConfigError(format!(
                        "MountVolume.SetUp failed for volume {:?}: tmpfs: {e}",
                        v.name
                    ))
                })?;
            }
            out.insert(v.name.clone(), dir);
            continue;
        }
        let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
        if let Some(c) = &v.config_map {
            let mode = c.default_mode.unwrap_or(0o644) as u32;
            let optional = c.optional == Some(true);
            match config_map(client, &ns, &c.name).await? {
                Some(cm) => {
                    files = items_or_all(
                        cm_data(&cm),
                        c.items.as_ref(),
                        mode,
                        &format!("configmap {:?}", c.name),
                        optional,
                    )?
                }
                None if optional => {}
                None => {
                    return Err(ConfigError(format!(
                        "MountVolume.SetUp failed for volume {:?} : configmap {:?} not found",
                        v.name, c.name
                    )))
                }
            }
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(0o644) as u32;
            let optional = s.optional == Some(true);
            match secret(client, &ns, &name).await? {
                Some(sec) => {
                    files = items_or_all(
                        secret_data(&sec),
                        s.items.as_ref(),
                        mode,
                        &format!("secret {name:?}"),
                        optional,
                    )?
                }
                None if optional => {}
                None => {
                    return Err(ConfigError(format!(
                        "MountVolume.SetUp failed for volume {:?} : secret {name:?} not found",
                        v.name
                    )))
                }
            }
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.unwrap_or(0o644) as u32;
            for it in d.items.clone().unwrap_or_default() {
                if let Some(f) = &it.field_ref {
                    files.insert(
                        it.path.clone(),
                        (
                            field_value(pod, f, host_ip)?.into_bytes(),
                            it.mode.map(|m| m as u32).unwrap_or(mode),
                        ),
                    );
                }
            }
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.unwrap_or(0o644) as u32;
            for src in p.sources.clone().unwrap_or_default() {
                if let Some(c) = &src.config_map {
                    let optional = c.optional == Some(true);
                    match config_map(client, &ns, &c.name).await? {
                        Some(cm) => files.extend(items_or_all(
                            cm_data(&cm),
                            c.items.as_ref(),
                            mode,
                            &format!("configmap {:?}", c.name),
                            optional,
                        )?),
                        None if optional => {}
                        None => {
                            return Err(ConfigError(format!(
                            "MountVolume.SetUp failed for volume {:?} : configmap {:?} not found",
                            v.name, c.name
                        )))
                        }
                    }
                }
                if let Some(s) = &src.secret {
                    let optional = s.optional == Some(true);
                    match secret(client, &ns, &s.name).await? {
                        Some(sec) => files.extend(items_or_all(
                            secret_data(&sec),
                            s.items.as_ref(),
                            mode,
                            &format!("secret {:?}", s.name),
                            optional,
                        )?),
                        None if optional => {}
                        None => {
                            return Err(ConfigError(format!(
                                "MountVolume.SetUp failed for volume {:?} : secret {:?} not found",
                                v.name, s.name
                            )))
                        }
                    }
                }
                if let Some(d) = &src.downward_api {
                    for it in d.items.clone().unwrap_or_default() {
                        if let Some(f) = &it.field_ref {
                            files.insert(
                                it.path.clone(),
                                (
                                    field_value(pod, f, host_ip)?.into_bytes(),
                                    it.mode.map(|m| m as u32).unwrap_or(mode),
                                ),
                            );
                        }
                    }
                }
                if let Some(t) = &src.service_account_token {
                    // Keep the token while it is fresh; ask for a new one at 80 % of
                    // its life, as the kubelet's token manager.
                    let path = dir.join(&t.path);
                    let fresh = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .map(|age| {
                            age.as_secs() < (t.expiration_seconds.unwrap_or(3600) as u64) * 8 / 10
                        })
                        .unwrap_or(false);
                    let token = if fresh {
                        std::fs::read(&path).map_err(werr(&v.name))?
                    } else {
                        request_token(
                            client,
                            pod,
                            t.audience.as_deref(),
                            t.expiration_seconds.unwrap_or(3600),
                        )
                        .await?
                        .into_bytes()
                    };
                    files.insert(t.path.clone(), (token, mode));
                }
            }
        } else {
            // Other volume types are not served by this agent.
            return Err(ConfigError(format!(
                "MountVolume.SetUp failed for volume {:?} : this node has no plugin for the volume type",
                v.name
            )));
        }
        atomic_write(&dir, &files).map_err(werr(&v.name))?;
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

async fn request_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration: i64,
) -> Result<String, ConfigError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            "expirationSeconds": expiration,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
        }
    });
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"
    ))
    .header("content-type", "application/json")
    .body(body.to_string().into_bytes())
    .map_err(|e| ConfigError(format!("building the token request: {e}")))?;
    let v: serde_json::Value = client.request(req).await.map_err(|e| {
        ConfigError(format!(
            "failed to fetch token for service account {sa:?}: {e}"
        ))
    })?;
    Ok(v["status"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// The container's bind mounts for its volumeMounts.
pub fn container_mounts(
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    pod: &Pod,
) -> Result<Vec<BindMount>, ConfigError> {
    let mut out = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let Some(src) = volumes.get(&m.name) else {
            return Err(ConfigError(format!(
                "cannot find volume {:?} to mount into container {:?}",
                m.name, c.name
            )));
        };
        let mut source = src.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(ConfigError(format!(
                    "subPath {sub:?} must be a relative path without '..'"
                )));
            }
            source = source.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)
                    .map_err(|e| ConfigError(format!("creating subPath {sub:?}: {e}")))?;
            }
        }
        let vol = spec
            .volumes
            .as_ref()
            .and_then(|vs| vs.iter().find(|v| v.name == m.name));
        let forced_ro = vol.is_some_and(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.read_only == Some(true))
                || v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some()
        });
        out.push(BindMount {
            source,
            destination: m.mount_path.clone(),
            read_only: m.read_only == Some(true) || forced_ro,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn atomic_writer_swaps_data_and_drops_removed_keys() {
        let d = tempfile::tempdir().unwrap();
        let mut files = BTreeMap::new();
        files.insert("a".to_string(), (b"1".to_vec(), 0o644));
        files.insert("b".to_string(), (b"2".to_vec(), 0o644));
        assert!(atomic_write(d.path(), &files).unwrap());
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"1");
        assert!(
            !atomic_write(d.path(), &files).unwrap(),
            "unchanged content is not rewritten"
        );
        files.remove("b");
        files.insert("a".to_string(), (b"3".to_vec(), 0o644));
        assert!(atomic_write(d.path(), &files).unwrap());
        assert_eq!(std::fs::read(d.path().join("a")).unwrap(), b"3");
        assert!(!d.path().join("b").exists());
        // Only one data directory is left.
        let dirs = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("..") && e.file_name() != "..data"
            })
            .count();
        assert_eq!(dirs, 1);
    }
}
