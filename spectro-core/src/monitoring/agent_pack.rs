//! The agent as a system pack: what the engine applies to every cluster it builds when
//! it is given an [`AgentDeployment`] (`EngineBuilder::agent`). It goes through the same
//! mechanism as the profile's add-on packs (server-side apply, revision, inventory,
//! pruning), after them.
//!
//! Objects, in namespace `spectro-system`: a ServiceAccount; a ClusterRole allowing only
//! `get/list/watch` of nodes, pods and services and `get/list` of `metrics.k8s.io` nodes
//! (nothing else: no secrets, no writes) and its binding; a Secret with the endpoint, the
//! cluster id, the cluster's credential and the CA to trust; a one-replica Deployment of
//! the agent image running as non-root with a read-only root filesystem, tolerating the
//! control plane's taint.

use std::time::Duration;

use serde_json::{json, Value};

use crate::model::{Pack, PackLayer};
use crate::provider::ClusterId;
use crate::secret::Secret;
use crate::validate::Violation;

/// The system pack's name.
pub const AGENT_PACK: &str = "spectro-agent";
/// The namespace the agent runs in.
pub const AGENT_NAMESPACE: &str = "spectro-system";

/// Where the agents report, and what they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDeployment {
    /// The engine's agent endpoint as the clusters reach it, e.g. `https://spectro.example.com:8443`.
    pub endpoint: String,
    /// The CA the agent trusts for the endpoint (PEM); `None`: the image's system roots.
    pub ca_pem: Option<String>,
    /// The agent's container image.
    pub image: String,
    /// Time between reports.
    pub interval: Duration,
    /// Report each node's root filesystem usage, read from the kubelet's summary API through
    /// the API server (`/api/v1/nodes/{node}/proxy/stats/summary`). Off by default: it
    /// grants the agent `get` on `nodes/proxy`, which reaches the kubelet's API — give it
    /// only where that is acceptable. Without it, disk health rests on the kubelet's own
    /// `DiskPressure` condition.
    pub disk_usage: bool,
}

impl AgentDeployment {
    /// An agent reporting to `endpoint` every 30 s, with the image of this version.
    #[must_use]
    pub fn new(endpoint: impl Into<String>) -> Self {
        AgentDeployment {
            endpoint: endpoint.into(),
            ca_pem: None,
            image: format!(
                "ghcr.io/spectro-dev/spectro-agent:{}",
                env!("CARGO_PKG_VERSION")
            ),
            interval: Duration::from_secs(30),
            disk_usage: false,
        }
    }
}

impl AgentDeployment {
    /// Every rule it breaks (paths under `agent.deployment`).
    #[must_use]
    pub fn validate(&self) -> Vec<Violation> {
        let mut v = Vec::new();
        let p = |f: &str| format!("agent.deployment.{f}");
        let e = self.endpoint.trim();
        let rest = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"));
        match rest {
            None => v.push(Violation::new(
                p("endpoint"),
                "must be an https:// (or http://) URL",
            )),
            Some(r) if r.is_empty() || r.starts_with('/') => {
                v.push(Violation::new(p("endpoint"), "must name a host"))
            }
            Some(_) => {}
        }
        if self.image.trim().is_empty() || self.image.contains(char::is_whitespace) {
            v.push(Violation::new(
                p("image"),
                "must be a container image reference",
            ));
        }
        if self.interval < Duration::from_secs(1) {
            v.push(Violation::new(p("interval"), "must be at least 1 second"));
        }
        if let Some(pem) = &self.ca_pem {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                v.push(Violation::new(p("caPem"), "must be PEM certificates"));
            }
        }
        v
    }
}

/// The values that carry `cluster`'s credential into its agent pack (the pack itself holds
/// only the reference `{{ .Values.token }}`: a `Pack` never holds the secret). Pass them as
/// the render's overrides.
#[must_use]
pub fn agent_values(token: &Secret) -> Secret {
    Secret::new(format!("token: \"{}\"\n", token.expose()))
}

/// The agent pack of `cluster` (its credential comes from [`agent_values`] at render time).
#[must_use]
pub fn agent_pack(cluster: ClusterId, d: &AgentDeployment) -> Pack {
    let ns = AGENT_NAMESPACE;
    let name = AGENT_PACK;
    let labels = json!({ "app.kubernetes.io/name": name });
    let mut rules = vec![
        json!({"apiGroups": [""], "resources": ["nodes", "pods", "services"],
               "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["metrics.k8s.io"], "resources": ["nodes"], "verbs": ["get", "list"]}),
    ];
    if d.disk_usage {
        rules.push(json!({"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}));
    }
    let docs: Vec<Value> = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": name, "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "Opaque",
        "stringData": {
            "endpoint": d.endpoint,
            "cluster-id": cluster.to_string(),
            "token": "{{ .Values.token }}",
            "ca.crt": d.ca_pem.clone().unwrap_or_default(),
        }}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name,
                    "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                                     "operator": "Exists", "effect": "NoSchedule"}],
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                    "volumes": [{"name": "config", "secret": {"secretName": name,
                        "items": [{"key": "ca.crt", "path": "ca.crt"}]}}],
                    "containers": [{
                        "name": "agent",
                        "image": d.image,
                        "env": [
                            {"name": "SPECTRO_ENDPOINT", "valueFrom": {"secretKeyRef": {"name": name, "key": "endpoint"}}},
                            {"name": "SPECTRO_CLUSTER_ID", "valueFrom": {"secretKeyRef": {"name": name, "key": "cluster-id"}}},
                            {"name": "SPECTRO_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}},
                            {"name": "SPECTRO_CA_FILE", "value": "/etc/spectro/ca.crt"},
                            {"name": "SPECTRO_INTERVAL_SECS", "value": d.interval.as_secs().max(1).to_string()},
                            {"name": "SPECTRO_DISK_USAGE", "value": d.disk_usage.to_string()}
                        ],
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/spectro", "readOnly": true}],
                        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                      "limits": {"memory": "128Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false,
                                            "readOnlyRootFilesystem": true,
                                            "capabilities": {"drop": ["ALL"]}}
                    }]
                }
            }
        }}),
    ];
    let manifests = docs
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let mut pack = Pack::new(name, PackLayer::Addon, env!("CARGO_PKG_VERSION"));
    pack.manifests = manifests;
    pack.values = "token: \"\"\n".into();
    pack
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::manifests::render;

    #[test]
    fn renders_six_objects_least_privilege_with_the_credential() {
        let id = ClusterId::new();
        let pack = agent_pack(id, &AgentDeployment::new("https://e:8443"));
        assert!(!format!("{pack:?}").contains("tok-123"));
        let values = agent_values(&Secret::new("tok-123"));
        let r = render("c1", &pack, Some(values.expose())).unwrap();
        let kinds: Vec<_> = r
            .objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        let role = &r.objects[2]["rules"];
        let verbs: Vec<_> = role
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
            })
            .collect();
        assert!(
            verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
            "{verbs:?}"
        );
        assert!(
            !r.objects[2].to_string().contains("nodes/proxy"),
            "off by default"
        );
        let mut d = AgentDeployment::new("https://e:8443");
        d.disk_usage = true;
        let with_disk = render("c1", &agent_pack(id, &d), Some(values.expose())).unwrap();
        assert!(with_disk.objects[2].to_string().contains("nodes/proxy"));
        assert_eq!(r.objects[4]["stringData"]["token"], "tok-123");
        assert_eq!(r.objects[4]["stringData"]["cluster-id"], id.to_string());
    }

    #[test]
    fn deployment_rules_name_the_field() {
        let mut d = AgentDeployment::new("ftp://x");
        d.interval = Duration::from_millis(10);
        d.ca_pem = Some("nope".into());
        d.image = " ".into();
        let v: Vec<String> = d.validate().iter().map(ToString::to_string).collect();
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(
            v[0].starts_with("agent.deployment.endpoint: must be an https://"),
            "{v:?}"
        );
        assert!(AgentDeployment::new("https://spectro.example.com:8443")
            .validate()
            .is_empty());
    }
}
