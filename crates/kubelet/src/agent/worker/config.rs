//! The container a pod worker asks the runtime for: command and arguments over the
//! image's, env and volume mounts, user and groups, cgroup values, the security context
//! and the CRI log path.

use k8s_openapi::api::core::v1::{Container, Pod};

use std::collections::BTreeMap;

use super::Worker;
use crate::agent::containers::{ContainerConfig, ContainerRecord};

impl Worker {
    pub(super) fn container_config(
        &self,
        pod: &Pod,
        c: &Container,
        init: bool,
        attempt: u32,
        img: &crate::agent::images::Resolved,
        env: Vec<(String, String)>,
    ) -> Result<ContainerConfig, String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let ic = &img.config;
        let mut all_env: Vec<String> = ic.env().clone().unwrap_or_default();
        if !all_env.iter().any(|e| e.starts_with("PATH=")) {
            all_env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        let hostname = crate::agent::security::pod_hostname(
            &spec,
            pod.metadata.name.as_deref().unwrap_or_default(),
        );
        skiff_container::spec::set_env(&mut all_env, format!("HOSTNAME={hostname}"));
        for (k, v) in &env {
            skiff_container::spec::set_env(&mut all_env, format!("{k}={v}"));
        }
        let map: BTreeMap<String, String> = env.iter().cloned().collect();
        let args = crate::agent::podspec::argv(
            c,
            &ic.entrypoint().clone().unwrap_or_default(),
            &ic.cmd().clone().unwrap_or_default(),
            &map,
        );
        if args.is_empty() {
            return Err(format!(
                "no command specified for container {:?}: the image has no ENTRYPOINT or CMD",
                c.name
            ));
        }
        let cwd = c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| ic.working_dir().clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        let psc = spec.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(psc.run_as_user);
        let gid = sc.run_as_group.or(psc.run_as_group);
        let user = match (uid, gid) {
            (Some(u), Some(g)) => format!("{u}:{g}"),
            (Some(u), None) => u.to_string(),
            (None, Some(g)) => format!(
                "{}:{g}",
                ic.user()
                    .clone()
                    .unwrap_or_else(|| "0".into())
                    .split(':')
                    .next()
                    .unwrap_or("0")
            ),
            (None, None) => ic.user().clone().unwrap_or_default(),
        };
        let mut groups: Vec<u32> = psc
            .supplemental_groups
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|g| *g as u32)
            .collect();
        if let Some(fs) = psc.fs_group {
            groups.push(fs as u32);
        }
        let pod_dir = self.sh.pod_dir(&self.uid);
        let mut mounts =
            crate::agent::volumes::container_mounts(c, &self.volume_paths, pod).map_err(|e| e.0)?;
        for (file, dest) in [
            ("etc-hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
            ("hostname", "/etc/hostname"),
        ] {
            if !mounts.iter().any(|m| m.destination == dest) {
                mounts.push(skiff_container::BindMount {
                    source: pod_dir.join(file),
                    destination: dest.into(),
                    read_only: false,
                });
            }
        }
        // terminationMessagePath: a file of the pod's the container writes its message to.
        let mut termination_log = None;
        let tpath = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        if tpath.starts_with('/') && !mounts.iter().any(|m| m.destination == tpath) {
            let dir = pod_dir.join("termination");
            let host = dir.join(format!("{}-{attempt}", c.name));
            let made = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&host, b""))
                .and_then(|()| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o666))
                });
            if made.is_ok() {
                mounts.push(skiff_container::BindMount {
                    source: host.clone(),
                    destination: tpath,
                    read_only: false,
                });
                termination_log = Some(host);
            }
        }
        let (shares, quota, memory) = crate::agent::podspec::cgroup_values(c);
        let log_dir = pod_dir.join("logs").join(&c.name);
        let log_path = skiff_container::log::instance_path(&log_dir, attempt);
        let record = ContainerRecord {
            id: String::new(),
            pod_uid: self.uid.clone(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            name: c.name.clone(),
            attempt,
            init,
            image: c.image.clone().unwrap_or_default(),
            image_id: img.store_ref.clone(),
            image_ref: img.image_id.clone(),
            created: String::new(),
            started: None,
            cgroup: crate::agent::podspec::pod_cgroup(&self.sh.cfg.cgroup_parent, pod),
            log_path,
            termination_log,
            stop_signal: ic.stop_signal().clone().unwrap_or_else(|| "SIGTERM".into()),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
        };
        Ok(ContainerConfig {
            record,
            args,
            env: all_env,
            cwd,
            user,
            supplemental_groups: groups,
            mounts,
            memory_limit: memory,
            cpu_quota: quota,
            cpu_shares: Some(shares),
            pids_limit: self.sh.cfg.pod_pids_limit,
            readonly_rootfs: sc.read_only_root_filesystem == Some(true),
            run_as_non_root: sc.run_as_non_root.or(psc.run_as_non_root) == Some(true),
            caps_add: sc
                .capabilities
                .as_ref()
                .and_then(|c| c.add.clone())
                .unwrap_or_default(),
            caps_drop: sc
                .capabilities
                .as_ref()
                .and_then(|c| c.drop.clone())
                .unwrap_or_default(),
            privileged: sc.privileged == Some(true),
            no_new_privileges: sc.allow_privilege_escalation == Some(false),
            security: crate::agent::security::container_security(&spec, c),
        })
    }
}
