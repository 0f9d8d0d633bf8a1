//! cloud-init user data (`#cloud-config`) per node role.
//!
//! - every node: user `spectro` with the cluster's SSH keys, NTP servers, HTTP(S) proxy
//!   drop-ins for containerd and kubelet (NO_PROXY gets the pod and service CIDRs, the API
//!   endpoint and the cluster-local names), the Kubernetes install script on bring-your-own
//!   images with `skipK8sInstall: "false"`;
//! - control-plane nodes: the CA material (`0600`), then `kubeadm init` (first node: with the
//!   CNI/CSI/add-on manifests applied after it) or `kubeadm join --control-plane`;
//! - workers: `kubeadm join` with the bootstrap token and the CA public-key hash only.
//!
//! Secrets in user data: control-plane user data carries the CA keys (kubeadm needs them to
//! derive leaf certificates); worker user data carries only the join token. User data is
//! readable by anything that can query the instance metadata service on the node: providers
//! must restrict it (e.g. AWS IMDSv2 with hop limit 1).

use serde_json::{json, Value};

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

fn file(path: &str, permissions: &str, content: &str) -> Value {
    json!({ "path": path, "owner": "root:root", "permissions": permissions, "content": content })
}

/// The SSH public keys a cluster's nodes (user `spectro`) accept.
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

/// Renders the `#cloud-config` user data of one role.
pub fn user_data(nb: &NodeBootstrap<'_>) -> Result<String> {
    let c = nb.cluster;
    let k8s = KubernetesSettings::from_cluster(c, nb.profile)?;
    let token = nb.pki.bootstrap_token.expose();
    let cp = c.control_plane();
    let allow_workloads = cp.is_some_and(|p| p.allow_worker_capability);
    let mut files = Vec::new();
    let mut runcmd: Vec<Value> = Vec::new();

    if let Some(proxy) = &c.proxy {
        let host = nb.endpoint.rsplit_once(':').map_or(nb.endpoint, |(h, _)| h);
        let mut no_proxy: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            ".svc".into(),
            ".cluster.local".into(),
            k8s.pod_cidr.to_string(),
            k8s.service_cidr.to_string(),
            host.to_string(),
        ];
        no_proxy.extend(proxy.no_proxy.iter().cloned());
        no_proxy.dedup();
        let env = format!(
            "[Service]\nEnvironment=\"HTTP_PROXY={}\"\nEnvironment=\"HTTPS_PROXY={}\"\nEnvironment=\"NO_PROXY={}\"\n",
            proxy.http_proxy,
            proxy.https_proxy,
            no_proxy.join(",")
        );
        files.push(file(
            "/etc/systemd/system/containerd.service.d/http-proxy.conf",
            "0644",
            &env,
        ));
        files.push(file(
            "/etc/systemd/system/kubelet.service.d/http-proxy.conf",
            "0644",
            &env,
        ));
        runcmd.push(json!(["systemctl", "daemon-reload"]));
        runcmd.push(json!(["systemctl", "restart", "containerd"]));
    }

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
