//! cloud-init user data (`#cloud-config`) per node role.
//!
//! - every node: user `spectro` with the cluster's SSH keys, NTP servers, the HTTP(S) proxy
//!   ([`proxy_cloud_config`]: `/etc/environment`, apt, drop-ins for containerd and kubelet;
//!   NO_PROXY gets the pod and service CIDRs, the API endpoint and the cluster-local names),
//!   the Kubernetes install script on bring-your-own images with `skipK8sInstall: "false"`;
//! - control-plane nodes: the CA material (`0600`), kube-vip's static pod when the endpoint is
//!   a VIP ([`user_data_with_vip`]), then `kubeadm init` (first node: with the CNI/CSI/add-on
//!   manifests applied after it) or `kubeadm join --control-plane`;
//! - workers: `kubeadm join` with the bootstrap token and the CA public-key hash only.
//!
//! Secrets in user data: control-plane user data carries the CA keys (kubeadm needs them to
//! derive leaf certificates); worker user data carries only the join token. User data is
//! readable by anything that can query the instance metadata service on the node: providers
//! must restrict it (e.g. AWS IMDSv2 with hop limit 1).

use std::net::IpAddr;

use serde_json::{json, Value};

use super::kube_vip::{self, KubeVip};
use super::kubeadm::{init_config, join_config, KubernetesSettings};
use super::pki::ClusterPki;
use crate::error::Result;
use crate::model::{CloudPlacement, Cluster, ClusterProfile, PackLayer};
use crate::provider::BootstrapRole;

/// Everything needed to render one role's user data.
#[derive(Debug, Clone, Copy)]
pub struct NodeBootstrap<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// The profile it runs.
    pub profile: &'a ClusterProfile,
    /// Its PKI.
    pub pki: &'a ClusterPki,
    /// The API endpoint `host:port`.
    pub endpoint: &'a str,
    /// The node's role.
    pub role: BootstrapRole,
}

/// Where every node keeps the log collector ([`LOG_COLLECTOR`]).
pub const LOG_COLLECTOR_PATH: &str = "/usr/local/bin/spectro-collect-logs";

/// The node-side log collector (bash): archives cloud-init, kubelet, container runtime,
/// container and kernel logs and a few node facts into one tar.gz for a support ticket
/// (`spectro-collect-logs [DESTDIR]`, default `/tmp`; prints the archive's path). Shipped
/// to every node in its user data.
pub const LOG_COLLECTOR: &str = include_str!("collect-logs.sh");

fn file(path: &str, permissions: &str, content: &str) -> Value {
    json!({ "path": path, "owner": "root:root", "permissions": permissions, "content": content })
}

/// The SSH public keys a cluster's nodes (user `spectro`) accept.
#[must_use]
pub fn ssh_keys(c: &Cluster) -> Vec<String> {
    match &c.cloud {
        CloudPlacement::Vsphere(v) => v.ssh_keys.clone(),
        CloudPlacement::Azure(a) => vec![a.ssh_key.clone()],
        _ => Vec::new(),
    }
}

fn ntp_servers(c: &Cluster) -> Vec<String> {
    match &c.cloud {
        CloudPlacement::Vsphere(v) => v.ntp_servers.clone(),
        _ => Vec::new(),
    }
}

fn install_script(version: &str) -> String {
    // version is vMAJOR.MINOR.PATCH; the package repository is per minor version.
    let minor = version.rsplit_once('.').map_or(version, |(m, _)| m);
    format!(
        r#"#!/bin/bash
# Installs containerd and Kubernetes {version} on a bring-your-own image.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y apt-transport-https ca-certificates curl gpg containerd
mkdir -p /etc/apt/keyrings /etc/containerd
curl -fsSL https://pkgs.k8s.io/core:/stable:/{minor}/deb/Release.key | gpg --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/{minor}/deb/ /' > /etc/apt/sources.list.d/kubernetes.list
apt-get update
apt-get install -y kubelet kubeadm kubectl
apt-mark hold kubelet kubeadm kubectl
containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' > /etc/containerd/config.toml
systemctl restart containerd
modprobe br_netfilter
sysctl -w net.ipv4.ip_forward=1
"#
    )
}

/// The cluster's HTTP(S) proxy as cloud-config, shared by the nodes and by the VMs a
/// provider adds around them (e.g. a load balancer).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyCloudConfig {
    /// `NO_PROXY`: local names, the pod and service CIDRs, the API endpoint's host and the
    /// cluster's own entries.
    pub no_proxy: String,
    /// `write_files` entries: the proxy variables appended to `/etc/environment` (logins,
    /// scripts) and one systemd drop-in per unit asked for.
    pub write_files: Vec<Value>,
    /// The `apt` key: apt's `http_proxy`/`https_proxy` (packages installed by cloud-init and
    /// install scripts go through the proxy).
    pub apt: Value,
}

/// The cluster's proxy settings as cloud-config, or `None` without a proxy: NO_PROXY built
/// from `k8s`'s CIDRs and `endpoint`'s host (when known), and an
/// `/etc/systemd/system/<unit>.service.d/http-proxy.conf` drop-in for each of `units`. The
/// caller runs `systemctl daemon-reload` (and restarts) when it asked for drop-ins.
#[must_use]
pub fn proxy_cloud_config(
    c: &Cluster,
    k8s: &KubernetesSettings,
    endpoint: Option<&str>,
    units: &[&str],
) -> Option<ProxyCloudConfig> {
    let proxy = c.proxy.as_ref()?;
    let mut no_proxy: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        ".svc".into(),
        ".cluster.local".into(),
        k8s.pod_cidr.to_string(),
        k8s.service_cidr.to_string(),
    ];
    if let Some(e) = endpoint {
        no_proxy.push(e.rsplit_once(':').map_or(e, |(h, _)| h).to_string());
    }
    for n in &proxy.no_proxy {
        if !no_proxy.contains(n) {
            no_proxy.push(n.clone());
        }
    }
    let no_proxy = no_proxy.join(",");
    let vars = [
        ("HTTP_PROXY", proxy.http_proxy.as_str()),
        ("HTTPS_PROXY", proxy.https_proxy.as_str()),
        ("NO_PROXY", no_proxy.as_str()),
    ];
    let vars: Vec<(&str, &str)> = vars.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    // Appended after whatever the image has (a leading newline in case its last line has none).
    let mut environment = String::from("\n# the cluster's proxy (spectro)\n");
    for (k, v) in &vars {
        environment.push_str(&format!("{k}={v}\n{}={v}\n", k.to_lowercase()));
    }
    let mut env_file = file("/etc/environment", "0644", &environment);
    env_file["append"] = json!(true);
    let mut write_files = vec![env_file];
    let mut dropin = String::from("[Service]\n");
    for (k, v) in &vars {
        dropin.push_str(&format!("Environment=\"{k}={v}\"\n"));
    }
    for unit in units {
        write_files.push(file(
            &format!("/etc/systemd/system/{unit}.service.d/http-proxy.conf"),
            "0644",
            &dropin,
        ));
    }
    let mut apt = json!({});
    if !proxy.http_proxy.is_empty() {
        apt["http_proxy"] = json!(proxy.http_proxy);
    }
    if !proxy.https_proxy.is_empty() {
        apt["https_proxy"] = json!(proxy.https_proxy);
    }
    Some(ProxyCloudConfig {
        no_proxy,
        write_files,
        apt,
    })
}

/// Renders the `#cloud-config` user data of one role.
pub fn user_data(nb: &NodeBootstrap<'_>) -> Result<String> {
    user_data_with_vip(nb, None)
}

/// Renders the `#cloud-config` user data of one role for a cluster whose API endpoint is
/// `vip` (an address no cloud load balancer serves, e.g. from a static IP pool): the
/// control-plane roles also run kube-vip as a static pod announcing it (see
/// [`super::kube_vip`]). With `None`, the same as [`user_data`].
pub fn user_data_with_vip(nb: &NodeBootstrap<'_>, vip: Option<IpAddr>) -> Result<String> {
    let c = nb.cluster;
    let k8s = KubernetesSettings::from_cluster(c, nb.profile)?;
    let token = nb.pki.bootstrap_token.expose();
    let cp = c.control_plane();
    let allow_workloads = cp.is_some_and(|p| p.allow_worker_capability);
    let mut files = Vec::new();
    let mut runcmd: Vec<Value> = Vec::new();

    let mut apt = None;
    if let Some(proxy) = proxy_cloud_config(c, &k8s, Some(nb.endpoint), &["containerd", "kubelet"])
    {
        files.extend(proxy.write_files);
        apt = Some(proxy.apt);
        runcmd.push(json!(["systemctl", "daemon-reload"]));
        runcmd.push(json!(["systemctl", "restart", "containerd"]));
    }

    files.push(file(LOG_COLLECTOR_PATH, "0755", LOG_COLLECTOR));

    let os = nb.profile.pack(PackLayer::Os);
    if os.is_some_and(|o| o.image_ref().is_some() && o.skip_k8s_install() == Some("false")) {
        files.push(file(
            "/usr/local/bin/spectro-install-kubernetes.sh",
            "0755",
            &install_script(&k8s.version),
        ));
        runcmd.push(json!(["/usr/local/bin/spectro-install-kubernetes.sh"]));
    }

    let control_plane = !matches!(nb.role, BootstrapRole::JoinWorker);
    if control_plane {
        let pki = nb.pki;
        // Certificates and public keys 0644, private keys 0600.
        for (name, cert, key) in [
            ("ca", pki.ca.cert_pem.as_str(), pki.ca.key_pem.expose()),
            (
                "etcd/ca",
                pki.etcd_ca.cert_pem.as_str(),
                pki.etcd_ca.key_pem.expose(),
            ),
            (
                "front-proxy-ca",
                pki.front_proxy_ca.cert_pem.as_str(),
                pki.front_proxy_ca.key_pem.expose(),
            ),
        ] {
            files.push(file(
                &format!("/etc/kubernetes/pki/{name}.crt"),
                "0644",
                cert,
            ));
            files.push(file(
                &format!("/etc/kubernetes/pki/{name}.key"),
                "0600",
                key,
            ));
        }
        for (path, mode, content) in [
            (
                "/etc/kubernetes/pki/sa.pub",
                "0644",
                pki.service_account_pub.as_str(),
            ),
            (
                "/etc/kubernetes/pki/sa.key",
                "0600",
                pki.service_account_key.expose(),
            ),
        ] {
            files.push(file(path, mode, content));
        }
    }
    let kube_vip = match vip {
        Some(address) if control_plane => {
            let port = nb
                .endpoint
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(6443);
            let kv = KubeVip::from_cluster(c, nb.profile, address, port)?;
            let init = matches!(nb.role, BootstrapRole::Init);
            // Written before kubeadm runs: the kubelet starts it with the other static pods.
            files.push(file(
                kube_vip::MANIFEST_PATH,
                "0600",
                &kv.manifest(kv.kubeconfig(init)),
            ));
            Some(kv)
        }
        _ => None,
    };
    let kubeadm_yaml = match nb.role {
        BootstrapRole::Init => init_config(&c.name, &k8s, nb.endpoint, token, allow_workloads),
        BootstrapRole::JoinControlPlane => join_config(
            &k8s,
            nb.endpoint,
            token,
            &nb.pki.ca_cert_hash()?,
            true,
            allow_workloads,
        ),
        BootstrapRole::JoinWorker => join_config(
            &k8s,
            nb.endpoint,
            token,
            &nb.pki.ca_cert_hash()?,
            false,
            false,
        ),
    };
    files.push(file("/run/kubeadm/kubeadm.yaml", "0600", &kubeadm_yaml));
    match nb.role {
        BootstrapRole::Init => {
            runcmd.push(json!([
                "kubeadm",
                "init",
                "--config",
                "/run/kubeadm/kubeadm.yaml"
            ]));
            if kube_vip
                .as_ref()
                .is_some_and(|kv| kv.kubeconfig(true) != kube_vip::ADMIN_CONF)
            {
                runcmd.push(KubeVip::restore_admin_conf());
            }
            let mut n = 0;
            for pack in &nb.profile.packs {
                if pack.manifests.trim().is_empty() {
                    continue;
                }
                n += 1;
                let path = format!("/etc/spectro/manifests/{n:02}-{}.yaml", pack.name);
                files.push(file(&path, "0644", &pack.manifests));
            }
            if n > 0 {
                runcmd.push(json!([
                    "kubectl",
                    "--kubeconfig",
                    "/etc/kubernetes/admin.conf",
                    "apply",
                    "-f",
                    "/etc/spectro/manifests/"
                ]));
            }
        }
        BootstrapRole::JoinControlPlane | BootstrapRole::JoinWorker => {
            runcmd.push(json!([
                "kubeadm",
                "join",
                "--config",
                "/run/kubeadm/kubeadm.yaml"
            ]));
        }
    }

    let mut doc = json!({});
    let keys = ssh_keys(c);
    let mut user = json!({
        "name": "spectro",
        "sudo": "ALL=(ALL) NOPASSWD:ALL",
        "shell": "/bin/bash",
        "lock_passwd": true,
    });
    if !keys.is_empty() {
        user["ssh_authorized_keys"] = json!(keys);
    }
    doc["users"] = json!(["default", user]);
    let ntp = ntp_servers(c);
    if !ntp.is_empty() {
        doc["ntp"] = json!({ "enabled": true, "servers": ntp });
    }
    if let Some(apt) = apt {
        doc["apt"] = apt;
    }
    doc["write_files"] = Value::Array(files);
    doc["runcmd"] = Value::Array(runcmd);
    let body = serde_norway::to_string(&doc).unwrap_or_default();
    Ok(format!("#cloud-config\n{body}"))
}

/// Encodes user data for a cloud with an optional size limit: plain when it fits, gzip
/// (which cloud-init detects) when it does not, an error when even that is too large.
pub fn encode_user_data(text: &str, role: BootstrapRole, limit: Option<usize>) -> Result<Vec<u8>> {
    let Some(limit) = limit else {
        return Ok(text.as_bytes().to_vec());
    };
    if text.len() <= limit {
        return Ok(text.as_bytes().to_vec());
    }
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gz.write_all(text.as_bytes());
    let out = gz.finish().unwrap_or_default();
    if out.len() > limit {
        return Err(crate::error::CoreError::UserDataTooLarge {
            role: format!("{role:?}"),
            size: out.len(),
            limit,
        });
    }
    Ok(out)
}
