//! What the in-cluster agent sends: a [`ReportBatch`] of [`AgentReport`]s (more than one
//! after the engine was unreachable: the agent buffers and sends them oldest first). JSON,
//! `POST /v1/clusters/{id}/reports` with `Authorization: Bearer <credential>`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reports sent together, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportBatch {
    /// The reports.
    pub reports: Vec<AgentReport>,
}

/// One heartbeat: the cluster as the agent saw it at `collected_at`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// The agent's version.
    pub agent_version: String,
    /// A random id the agent process picks at start: with `seq`, what recognises a report
    /// sent twice (its clock may go backwards; its counter does not).
    #[serde(default)]
    pub agent_id: String,
    /// The report's number in that process (1, 2, ...).
    #[serde(default)]
    pub seq: u64,
    /// When the agent collected it (its own clock: the engine corrects the skew).
    pub collected_at: DateTime<Utc>,
    /// Every node.
    pub nodes: Vec<NodeReport>,
    /// Requests of pods not scheduled on any node yet.
    #[serde(default)]
    pub unscheduled_requests: Resources,
    /// Every Service of type LoadBalancer or NodePort, in every namespace.
    pub services: Vec<ServiceReport>,
    /// False when the `metrics.k8s.io` API did not answer (no usage in this report).
    #[serde(default)]
    pub metrics_available: bool,
}

/// CPU (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in millicores.
    pub cpu_millicores: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl std::ops::AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        self.cpu_millicores += o.cpu_millicores;
        self.memory_bytes += o.memory_bytes;
    }
}

/// A node as the agent saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    /// The Node's name.
    pub name: String,
    /// True for control-plane nodes (label `node-role.kubernetes.io/control-plane`).
    pub control_plane: bool,
    /// Its conditions.
    pub conditions: Vec<NodeConditionReport>,
    /// Its addresses (`InternalIP`, `ExternalIP`, `Hostname`, ...).
    #[serde(default)]
    pub addresses: Vec<NodeAddressReport>,
    /// Capacity.
    pub capacity: Resources,
    /// Allocatable to pods.
    pub allocatable: Resources,
    /// Usage now (`metrics.k8s.io` NodeMetrics), when served.
    #[serde(default)]
    pub usage: Option<Resources>,
    /// Root filesystem usage (the kubelet's summary), when it answered.
    #[serde(default)]
    pub disk: Option<DiskUsage>,
    /// Sum of the requests of the pods scheduled on it (not finished).
    #[serde(default)]
    pub requests: Resources,
    /// Pods scheduled on it (not finished).
    #[serde(default)]
    pub pods: u32,
}

impl NodeReport {
    /// The status of a condition, when reported.
    #[must_use]
    pub fn condition(&self, kind: &str) -> Option<&NodeConditionReport> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// The address a user would open: `ExternalIP`, else `InternalIP`, else `Hostname`.
    #[must_use]
    pub fn reachable_address(&self) -> Option<&str> {
        ["ExternalIP", "InternalIP", "Hostname"]
            .iter()
            .find_map(|t| {
                self.addresses
                    .iter()
                    .find(|a| a.kind == *t)
                    .map(|a| a.address.as_str())
            })
    }

    /// True when its `Ready` condition is `True`.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True")
    }
}

/// A node condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeConditionReport {
    /// `Ready`, `MemoryPressure`, `DiskPressure`, `PIDPressure`, `NetworkUnavailable`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Reason, as the kubelet set it.
    #[serde(default)]
    pub reason: String,
    /// Message, as the kubelet set it.
    #[serde(default)]
    pub message: String,
    /// Last transition.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
}

/// A node address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddressReport {
    /// `InternalIP`, `ExternalIP`, `Hostname`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The address.
    pub address: String,
}

/// Filesystem usage of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskUsage {
    /// Bytes used.
    pub used_bytes: u64,
    /// Bytes in total.
    pub capacity_bytes: u64,
}

/// A Service of type LoadBalancer or NodePort.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReport {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `LoadBalancer` or `NodePort`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its ports.
    pub ports: Vec<ServicePortReport>,
    /// The load balancer's ingress: host names or IPs (LoadBalancer, once provisioned).
    #[serde(default)]
    pub ingress: Vec<String>,
}

/// A Service port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortReport {
    /// Port name.
    #[serde(default)]
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The service port.
    pub port: u16,
    /// The node port (NodePort and most LoadBalancer services).
    #[serde(default)]
    pub node_port: Option<u16>,
}
