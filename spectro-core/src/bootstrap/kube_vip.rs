//! kube-vip: serves a control-plane VIP (static-IP clusters, whose API endpoint is an address
//! of the control-plane pool's IP pool and no cloud load balancer) from the control-plane
//! nodes themselves, as Cluster API's vSphere provider does.
//!
//! A static pod in `/etc/kubernetes/manifests/kube-vip.yaml`, written by the control-plane
//! user data before kubeadm runs: ARP mode (`vip_arp`), control-plane load balancing
//! (`cp_enable`) on the API port, leader election through a lease, so exactly one
//! control-plane node answers ARP for the VIP and another takes over when it goes.
//!
//! kubeadm ≥ 1.29 gives `admin.conf` its RBAC rights only once the API server runs, through
//! the VIP kube-vip has not yet announced (kube-vip issue 684): on the first node kube-vip
//! therefore mounts `super-admin.conf` while `kubeadm init` runs, and the user data switches
//! it back to `admin.conf` right after (the kubelet restarts the static pod). Cluster API
//! swaps the path with a preKubeadm command that checks kubeadm's version on the node;
//! spectro knows the version when it renders, so the manifest is written with the right path
//! at once and only the switch back is a command.
//!
//! Settings (Kubernetes pack values, overridable per cluster like the other values):
//! `kubeVip.image` (default [`DEFAULT_IMAGE`]) and `kubeVip.interface` (default
//! [`DEFAULT_INTERFACE`], the name providers that serve a VIP give the node's NIC in its
//! network configuration).

use std::net::IpAddr;

use serde_json::{json, Value};

use super::kubeadm::{bad, kubernetes_values};
use crate::error::Result;
use crate::model::{Cluster, ClusterProfile};
use crate::validate::parse_k8s_version;

/// kube-vip's image unless the Kubernetes pack's `kubeVip.image` names another.
pub const DEFAULT_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v0.8.9";
/// The interface kube-vip announces the VIP on unless `kubeVip.interface` names another:
/// providers that serve a VIP name the node's NIC so (vSphere: netplan `set-name: eth0`).
pub const DEFAULT_INTERFACE: &str = "eth0";
/// Where the static pod manifest goes.
pub const MANIFEST_PATH: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
/// The kubeconfig kube-vip uses on joined control-plane nodes (and after init).
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// The kubeconfig kube-vip uses while `kubeadm init` runs with kubeadm ≥ 1.29.
pub const SUPER_ADMIN_CONF: &str = "/etc/kubernetes/super-admin.conf";

/// kube-vip's settings for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVip {
    /// The VIP (the API endpoint's address).
    pub address: IpAddr,
    /// The API server port behind it.
    pub port: u16,
    /// The interface the VIP is announced on (ARP).
    pub interface: String,
    /// kube-vip's container image.
    pub image: String,
    /// Whether the first control-plane node needs `super-admin.conf` during `kubeadm init`
    /// (Kubernetes ≥ 1.29).
    pub super_admin_on_init: bool,
}

fn setting(pack: &str, values: &Value, field: &str, default: &str) -> Result<String> {
    match values.get("kubeVip").and_then(|v| v.get(field)) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains(char::is_whitespace) => {
            Ok(s.clone())
        }
        Some(_) => Err(bad(
            pack,
            &format!("kubeVip.{field}"),
            "must be a non-empty string without spaces",
        )),
    }
}

impl KubeVip {
    /// kube-vip for `cluster` serving `address`, the API endpoint `address:port`: image and
    /// interface from the Kubernetes pack's values (with the cluster's overrides).
    pub fn from_cluster(
        cluster: &Cluster,
        profile: &ClusterProfile,
        address: IpAddr,
        port: u16,
    ) -> Result<Self> {
        let (pack, values) = kubernetes_values(cluster, profile)?;
        let (major, minor, _) = parse_k8s_version(&pack.version).ok_or_else(|| {
            bad(
                &pack.name,
                "version",
                format!("`{}` is not a Kubernetes version", pack.version),
            )
        })?;
        Ok(KubeVip {
            address,
            port,
            interface: setting(&pack.name, &values, "interface", DEFAULT_INTERFACE)?,
            image: setting(&pack.name, &values, "image", DEFAULT_IMAGE)?,
            super_admin_on_init: (major, minor) >= (1, 29),
        })
    }

    /// The kubeconfig the manifest mounts for a node: `super-admin.conf` on the first
    /// control-plane node with Kubernetes ≥ 1.29, `admin.conf` otherwise.
    #[must_use]
    pub fn kubeconfig(&self, init: bool) -> &'static str {
        if init && self.super_admin_on_init {
            SUPER_ADMIN_CONF
        } else {
            ADMIN_CONF
        }
    }

    /// The static pod manifest (YAML) with `kubeconfig` mounted as kube-vip's
    /// `/etc/kubernetes/admin.conf`.
    #[must_use]
    pub fn manifest(&self, kubeconfig: &str) -> String {
        let env: Vec<Value> = [
            ("vip_arp", "true".to_string()),
            ("port", self.port.to_string()),
            ("vip_interface", self.interface.clone()),
            (
                "vip_subnet",
                if self.address.is_ipv4() { "32" } else { "128" }.into(),
            ),
            ("cp_enable", "true".into()),
            ("cp_namespace", "kube-system".into()),
            ("vip_ddns", "false".into()),
            ("svc_enable", "false".into()),
            ("vip_leaderelection", "true".into()),
            ("vip_leasename", "plndr-cp-lock".into()),
            ("vip_leaseduration", "15".into()),
            ("vip_renewdeadline", "10".into()),
            ("vip_retryperiod", "2".into()),
            ("address", self.address.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .chain([json!({
            "name": "vip_nodename",
            "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } },
        })])
        .collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": "kube-vip", "namespace": "kube-system" },
            "spec": {
                "containers": [{
                    "name": "kube-vip",
                    "image": self.image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["manager"],
                    "env": env,
                    "securityContext": {
                        "capabilities": { "add": ["NET_ADMIN", "NET_RAW"] }
                    },
                    "volumeMounts": [{ "name": "kubeconfig", "mountPath": ADMIN_CONF }],
                }],
                // kube-vip reaches the API server as `kubernetes:<port>`: the local one, as
                // the VIP is not up before kube-vip announces it.
                "hostAliases": [{ "ip": "127.0.0.1", "hostnames": ["kubernetes"] }],
                "hostNetwork": true,
                "volumes": [{
                    "name": "kubeconfig",
                    "hostPath": { "path": kubeconfig, "type": "FileOrCreate" },
                }],
            },
        });
        serde_norway::to_string(&pod).unwrap_or_default()
    }

    /// The command run after `kubeadm init` when the manifest mounted `super-admin.conf`:
    /// back to `admin.conf` (the kubelet restarts the static pod).
    #[must_use]
    pub fn restore_admin_conf() -> Value {
        json!([
            "sed",
            "-i",
            format!("s#path: {SUPER_ADMIN_CONF}#path: {ADMIN_CONF}#"),
            MANIFEST_PATH
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(super_admin: bool) -> KubeVip {
        KubeVip {
            address: "10.10.0.10".parse().unwrap(),
            port: 6443,
            interface: DEFAULT_INTERFACE.into(),
            image: DEFAULT_IMAGE.into(),
            super_admin_on_init: super_admin,
        }
    }

    fn env(pod: &Value, name: &str) -> String {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no env {name}"))
    }

    #[test]
    fn manifest_is_a_static_pod_in_arp_mode_with_leader_election() {
        let v = vip(true);
        let pod: Value = serde_norway::from_str(&v.manifest(ADMIN_CONF)).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["namespace"], "kube-system");
        assert_eq!(pod["spec"]["hostNetwork"], true);
        assert_eq!(pod["spec"]["containers"][0]["image"], DEFAULT_IMAGE);
        assert_eq!(env(&pod, "address"), "10.10.0.10");
        assert_eq!(env(&pod, "port"), "6443");
        assert_eq!(env(&pod, "vip_interface"), "eth0");
        assert_eq!(env(&pod, "vip_arp"), "true");
        assert_eq!(env(&pod, "cp_enable"), "true");
        assert_eq!(env(&pod, "vip_leaderelection"), "true");
        assert_eq!(
            pod["spec"]["volumes"][0]["hostPath"]["path"],
            "/etc/kubernetes/admin.conf"
        );
    }

    #[test]
    fn init_node_uses_super_admin_from_1_29_and_the_switch_back_restores_admin_conf() {
        assert_eq!(vip(true).kubeconfig(true), SUPER_ADMIN_CONF);
        assert_eq!(vip(true).kubeconfig(false), ADMIN_CONF);
        assert_eq!(vip(false).kubeconfig(true), ADMIN_CONF);
        // The sed expression of the switch back turns the init manifest into the join one.
        let v = vip(true);
        let cmd = KubeVip::restore_admin_conf();
        let expr = cmd[2].as_str().unwrap();
        let (from, to) = expr
            .trim_start_matches('s')
            .trim_matches('#')
            .split_once('#')
            .unwrap();
        let switched = v.manifest(SUPER_ADMIN_CONF).replace(from, to);
        assert_eq!(switched, v.manifest(ADMIN_CONF));
        assert_eq!(cmd[3], MANIFEST_PATH);
    }
}
