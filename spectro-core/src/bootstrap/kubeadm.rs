//! kubeadm configuration: `InitConfiguration` + `ClusterConfiguration` for the first
//! control-plane node, `JoinConfiguration` for the others and for workers.
//!
//! The API version follows the Kubernetes pack: `kubeadm.k8s.io/v1beta3` below 1.31,
//! `v1beta4` from 1.31 (where `extraArgs` became a list of `{name, value}`).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::error::{CoreError, Result};
use crate::model::pack::{merge_values, parse_values};
use crate::model::{Cluster, ClusterProfile, Pack, PackLayer};
use crate::validate::parse_k8s_version;

/// kubeadm's configuration API versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeadmApi {
    /// `kubeadm.k8s.io/v1beta3` (Kubernetes 1.22–1.30).
    V1Beta3,
    /// `kubeadm.k8s.io/v1beta4` (Kubernetes 1.31+).
    V1Beta4,
}

impl KubeadmApi {
    /// The API version for a Kubernetes version.
    #[must_use]
    pub fn for_version(major: u32, minor: u32) -> KubeadmApi {
        if (major, minor) >= (1, 31) {
            KubeadmApi::V1Beta4
        } else {
            KubeadmApi::V1Beta3
        }
    }

    /// `apiVersion` value.
    #[must_use]
    pub fn api_version(self) -> &'static str {
        match self {
            KubeadmApi::V1Beta3 => "kubeadm.k8s.io/v1beta3",
            KubeadmApi::V1Beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }

    fn args(self, args: &BTreeMap<String, String>) -> Value {
        match self {
            KubeadmApi::V1Beta3 => json!(args),
            KubeadmApi::V1Beta4 => Value::Array(
                args.iter()
                    .map(|(k, v)| json!({ "name": k, "value": v }))
                    .collect(),
            ),
        }
    }
}

/// What the Kubernetes pack (defaults merged with the cluster's overrides) says for kubeadm.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSettings {
    /// Pack name (for error messages).
    pub pack: String,
    /// `vMAJOR.MINOR.PATCH`.
    pub version: String,
    /// Config API version.
    pub api: KubeadmApi,
    /// Pod network CIDR (`podCIDR`, default 192.168.0.0/16).
    pub pod_cidr: ipnet::IpNet,
    /// Service CIDR (`serviceCIDR`, default 10.96.0.0/12).
    pub service_cidr: ipnet::IpNet,
    /// Extra API-server certificate SANs (`certSANs`).
    pub cert_sans: Vec<String>,
    /// `apiServer.extraArgs`.
    pub api_server_args: BTreeMap<String, String>,
    /// `controllerManager.extraArgs`.
    pub controller_manager_args: BTreeMap<String, String>,
    /// `scheduler.extraArgs`.
    pub scheduler_args: BTreeMap<String, String>,
    /// `kubelet.extraArgs`.
    pub kubelet_args: BTreeMap<String, String>,
}

pub(crate) fn bad(pack: &str, field: &str, rule: impl Into<String>) -> CoreError {
    CoreError::PackValues {
        pack: pack.to_string(),
        field: field.to_string(),
        rule: rule.into(),
    }
}

fn args_at(pack: &str, v: &Value, path: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return Ok(BTreeMap::new()),
        }
    }
    let field = path.join(".");
    let obj = cur
        .as_object()
        .ok_or_else(|| bad(pack, &field, "must be a mapping of flag name to value"))?;
    obj.iter()
        .map(|(k, x)| {
            let s = match x {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(bad(
                        pack,
                        &format!("{field}.{k}"),
                        "must be a string, number or boolean",
                    ))
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}

/// The profile's Kubernetes pack and its values merged with the cluster's overrides.
pub(crate) fn kubernetes_values<'a>(
    cluster: &Cluster,
    profile: &'a ClusterProfile,
) -> Result<(&'a Pack, Value)> {
    let pack = profile
        .pack(PackLayer::Kubernetes)
        .ok_or_else(|| bad("kubernetes", "", "the profile has no kubernetes pack"))?;
    let name = pack.name.as_str();
    let mut values = parse_values(&pack.values).map_err(|e| bad(name, "values", e))?;
    if let Some(over) = cluster.pack_values.get(name) {
        let o = parse_values(over).map_err(|e| bad(name, "values (cluster override)", e))?;
        merge_values(&mut values, &o);
    }
    Ok((pack, values))
}

impl KubernetesSettings {
    /// Reads the settings from the profile's Kubernetes pack and the cluster's overrides.
    pub fn from_cluster(cluster: &Cluster, profile: &ClusterProfile) -> Result<Self> {
        let (pack, values) = kubernetes_values(cluster, profile)?;
        let name = pack.name.as_str();
        let (major, minor, patch) = parse_k8s_version(&pack.version).ok_or_else(|| {
            bad(
                name,
                "version",
                format!("`{}` is not a Kubernetes version", pack.version),
            )
        })?;
        let cidr = |field: &str, default: &str| -> Result<ipnet::IpNet> {
            match values.get(field) {
                None => Ok(default.parse().expect("default CIDR parses")),
                Some(Value::String(s)) => s.parse().map_err(|_| {
                    bad(
                        name,
                        field,
                        format!("`{s}` is not a CIDR (e.g. 10.96.0.0/12)"),
                    )
                }),
                Some(_) => Err(bad(name, field, "must be a CIDR string")),
            }
        };
        let pod_cidr = cidr("podCIDR", "192.168.0.0/16")?;
        let service_cidr = cidr("serviceCIDR", "10.96.0.0/12")?;
        let cert_sans = match values.get("certSANs") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        bad(
                            name,
                            "certSANs",
                            "must be a list of host names or addresses",
                        )
                    })
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad(name, "certSANs", "must be a list")),
        };
        Ok(KubernetesSettings {
            pack: name.to_string(),
            version: format!("v{major}.{minor}.{patch}"),
            api: KubeadmApi::for_version(major, minor),
            pod_cidr,
            service_cidr,
            cert_sans,
            api_server_args: args_at(name, &values, &["apiServer", "extraArgs"])?,
            controller_manager_args: args_at(name, &values, &["controllerManager", "extraArgs"])?,
            scheduler_args: args_at(name, &values, &["scheduler", "extraArgs"])?,
            kubelet_args: args_at(name, &values, &["kubelet", "extraArgs"])?,
        })
    }
}

fn host_of(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or(endpoint, |(h, p)| {
        if p.parse::<u16>().is_ok() {
            h
        } else {
            endpoint
        }
    })
}

fn node_registration(s: &KubernetesSettings, worker_taints: bool) -> Value {
    let mut n = json!({ "kubeletExtraArgs": s.api.args(&s.kubelet_args) });
    if worker_taints {
        // Control plane that also runs workloads: no NoSchedule taint.
        n["taints"] = json!([]);
    }
    n
}

/// The first control-plane node: `InitConfiguration` and `ClusterConfiguration`, as one
/// multi-document YAML.
#[must_use]
pub fn init_config(
    cluster: &str,
    s: &KubernetesSettings,
    endpoint: &str,
    token: &str,
    allow_workloads: bool,
) -> String {
    let mut sans = vec![host_of(endpoint).to_string()];
    sans.extend(s.cert_sans.iter().cloned());
    sans.dedup();
    let init = json!({
        "apiVersion": s.api.api_version(),
        "kind": "InitConfiguration",
        "bootstrapTokens": [{
            "token": token,
            // kubeadm's default lifetime: the engine refreshes the token's expiration in the
            // running cluster before later joins (workload connection).
            "ttl": "24h0m0s",
            "description": "spectro node joins",
            "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            "usages": ["signing", "authentication"],
        }],
        "nodeRegistration": node_registration(s, allow_workloads),
    });
    let cfg = json!({
        "apiVersion": s.api.api_version(),
        "kind": "ClusterConfiguration",
        "clusterName": cluster,
        "kubernetesVersion": s.version,
        "controlPlaneEndpoint": endpoint,
        "networking": {
            "podSubnet": s.pod_cidr.to_string(),
            "serviceSubnet": s.service_cidr.to_string(),
        },
        "apiServer": { "certSANs": sans, "extraArgs": s.api.args(&s.api_server_args) },
        "controllerManager": { "extraArgs": s.api.args(&s.controller_manager_args) },
        "scheduler": { "extraArgs": s.api.args(&s.scheduler_args) },
    });
    format!(
        "{}---\n{}",
        serde_norway::to_string(&init).unwrap_or_default(),
        serde_norway::to_string(&cfg).unwrap_or_default()
    )
}

/// A joining node: control-plane (the CA material is already on disk) or worker.
#[must_use]
pub fn join_config(
    s: &KubernetesSettings,
    endpoint: &str,
    token: &str,
    ca_cert_hash: &str,
    control_plane: bool,
    allow_workloads: bool,
) -> String {
    let mut join = json!({
        "apiVersion": s.api.api_version(),
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": endpoint,
                "token": token,
                "caCertHashes": [ca_cert_hash],
            }
        },
        "nodeRegistration": node_registration(s, control_plane && allow_workloads),
    });
    if control_plane {
        join["controlPlane"] = json!({});
    }
    serde_norway::to_string(&join).unwrap_or_default()
}
