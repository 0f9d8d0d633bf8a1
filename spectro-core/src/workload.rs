//! The workload cluster: the Kubernetes cluster a spectro cluster's machines form, as the
//! engine sees and changes it. Two small traits keep the engine free of any Kubernetes
//! client: a [`WorkloadConnector`] opens a [`WorkloadCluster`] from the [`WorkloadAccess`]
//! the engine holds (API endpoint, the cluster CA, the admin credentials it generated, the
//! control-plane machines' etcd endpoints and an etcd client certificate minted from the
//! cluster's etcd CA). The `spectro-kube` crate implements them with kube-rs and the etcd v3
//! API; the private cloud gateway can supply a tunnelled one.
//!
//! Machines are matched to Nodes by, in order: the Node's name equal to the machine's name
//! (spectro's bootstrap sets it), its `spec.providerID` ending with the machine's cloud id
//! (`aws:///us-east-1a/i-0abc`, `vsphere://<uuid>`), or an `InternalIP` equal to the
//! machine's private address (kubeadm's default node name is the host name, which the cloud
//! derives from that address). etcd members are matched by name, which kubeadm sets to the
//! node name.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::provider::{ClusterId, Machine};
use crate::secret::Secret;

/// Annotation spectro sets on a Node it cordons for removal: when the drain started (RFC 3339).
pub const DRAIN_ANNOTATION: &str = "spectro.dev/drain-started";
/// Label on every object spectro applies for a pack: the pack's name (pruning selects on it).
pub const PACK_LABEL: &str = "spectro.dev/pack";
/// Label on every object spectro applies: the cluster's id.
pub const CLUSTER_LABEL: &str = "spectro.dev/cluster";
/// Field manager of spectro's server-side applies.
pub const FIELD_MANAGER: &str = "spectro";

/// A Kubernetes Node as the engine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// `status.addresses` of type `InternalIP`.
    pub internal_ips: Vec<IpAddr>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// When the `Ready` condition last changed.
    pub ready_since: Option<DateTime<Utc>>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// When spectro started draining it ([`DRAIN_ANNOTATION`]).
    pub drain_started: Option<DateTime<Utc>>,
}

impl NodeInfo {
    /// True when this Node is `m`'s (see the module documentation for the rule).
    #[must_use]
    pub fn belongs_to(&self, m: &Machine) -> bool {
        self.name == m.name
            || (!m.id.is_empty()
                && self
                    .provider_id
                    .as_deref()
                    .is_some_and(|p| p.rsplit('/').next() == Some(m.id.as_str())))
            || m.address.is_some_and(|a| self.internal_ips.contains(&a))
    }
}

/// One etcd member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMember {
    /// Member id.
    pub id: u64,
    /// Member name (kubeadm: the node name); empty while a member was added and never started.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Its endpoint answered a status request.
    pub healthy: bool,
    /// A learner (not voting yet).
    pub learner: bool,
}

/// What the engine observed of the workload cluster in one reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadView {
    /// The API server answered.
    pub reachable: bool,
    /// Why it did not, when it did not.
    pub error: Option<String>,
    /// The Nodes.
    pub nodes: Vec<NodeInfo>,
    /// The etcd members, when etcd was reachable (`None`: not observed).
    pub etcd: Option<Vec<EtcdMember>>,
}

impl WorkloadView {
    /// The Node of machine `m`.
    #[must_use]
    pub fn node_of(&self, m: &Machine) -> Option<&NodeInfo> {
        self.nodes
            .iter()
            .find(|n| n.name == m.name)
            .or_else(|| self.nodes.iter().find(|n| n.belongs_to(m)))
    }

    /// The etcd member of control-plane machine `m` (by name: its Node's, else its own).
    #[must_use]
    pub fn member_of(&self, m: &Machine) -> Option<&EtcdMember> {
        let node = self.node_of(m).map(|n| n.name.as_str());
        self.etcd
            .as_ref()?
            .iter()
            .find(|e| !e.name.is_empty() && (e.name == m.name || Some(e.name.as_str()) == node))
    }
}

/// How a drain went this time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum DrainProgress {
    /// No pod that needs evicting is left on the Node.
    Done,
    /// Pods are still there: evictions refused (a PodDisruptionBudget: the API's 429) or
    /// pods still terminating.
    Blocked {
        /// `namespace/name` of the pods left.
        pods: Vec<String>,
        /// Why, in the API server's words.
        reason: String,
    },
}

/// A Kubernetes object to apply for a pack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// The object (apiVersion, kind, metadata, ...), labels already set.
    pub object: serde_json::Value,
}

/// One applied object, as the cluster's inventory records it (pruning deletes what a pack no
/// longer renders).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace, for namespaced kinds.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A failure talking to the workload cluster. Never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// The API server (or etcd) could not be reached: retried.
    #[error("{what} unreachable: {message}")]
    Unreachable {
        /// `API server` or `etcd`.
        what: &'static str,
        /// Details.
        message: String,
    },
    /// The API server refused a request.
    #[error("{operation} refused by the API server ({code}): {message}")]
    Refused {
        /// What was attempted, e.g. `apply Deployment kube-system/coredns`.
        operation: String,
        /// HTTP status.
        code: u16,
        /// The API server's message.
        message: String,
    },
    /// Removing this etcd member would leave fewer healthy members than a quorum.
    #[error(
        "removing etcd member {member} would lose quorum: {healthy} of {members} members healthy"
    )]
    Quorum {
        /// The member.
        member: String,
        /// Members now.
        members: usize,
        /// Healthy members now.
        healthy: usize,
    },
    /// The credentials or the request could not be built.
    #[error("{0}")]
    Invalid(String),
}

impl WorkloadError {
    /// Reason code for conditions and events.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            WorkloadError::Unreachable { .. } => "ApiServerUnreachable",
            WorkloadError::Refused { .. } => "ApiServerRefused",
            WorkloadError::Quorum { .. } => "EtcdQuorum",
            WorkloadError::Invalid(_) => "WorkloadAccessInvalid",
        }
    }
}

/// The workload cluster, as the engine uses it.
#[async_trait]
pub trait WorkloadCluster: Send + Sync {
    /// Every Node.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, WorkloadError>;
    /// Every etcd member, with its health. `Ok(None)`: this connection has no etcd access.
    async fn etcd_members(&self) -> Result<Option<Vec<EtcdMember>>, WorkloadError>;
    /// Marks the Node unschedulable and records when the drain started
    /// ([`DRAIN_ANNOTATION`], kept when already set). Idempotent.
    async fn cordon(&self, node: &str, now: DateTime<Utc>) -> Result<(), WorkloadError>;
    /// One drain pass: evicts (Eviction API, PodDisruptionBudgets respected) every pod on the
    /// Node except DaemonSet pods and mirror pods, and reports what is left.
    async fn drain(&self, node: &str) -> Result<DrainProgress, WorkloadError>;
    /// Deletes the Node object (absent: done).
    async fn delete_node(&self, node: &str) -> Result<(), WorkloadError>;
    /// Removes etcd member `id`: `Ok(true)` when removed now, `Ok(false)` when it was gone
    /// already.
    async fn remove_etcd_member(&self, id: u64) -> Result<bool, WorkloadError>;
    /// Server-side applies `objects` (field manager [`FIELD_MANAGER`], forced).
    async fn apply(&self, objects: &[Manifest]) -> Result<(), WorkloadError>;
    /// Deletes one object spectro applied earlier (absent: `Ok(false)`).
    async fn delete_object(&self, object: &ObjectRef) -> Result<bool, WorkloadError>;
}

/// Everything needed to reach a workload cluster.
#[derive(Clone)]
pub struct WorkloadAccess {
    /// The spectro cluster.
    pub cluster: ClusterId,
    /// Its name.
    pub name: String,
    /// `host:port` of its API endpoint.
    pub endpoint: String,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The admin kubeconfig (YAML).
    pub kubeconfig: Secret,
    /// `https://<address>:2379` of each running control-plane machine.
    pub etcd_endpoints: Vec<String>,
    /// The etcd CA certificate (PEM).
    pub etcd_ca_pem: String,
    /// A client certificate for etcd, signed by the cluster's etcd CA (PEM).
    pub etcd_client_cert_pem: String,
    /// Its key.
    pub etcd_client_key: Secret,
}

impl std::fmt::Debug for WorkloadAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadAccess")
            .field("cluster", &self.cluster)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("etcd_endpoints", &self.etcd_endpoints)
            .finish_non_exhaustive()
    }
}

/// Opens workload clusters.
#[async_trait]
pub trait WorkloadConnector: Send + Sync {
    /// A connection to the cluster `access` describes. Cheap to call again: the engine keeps
    /// the connection per cluster and opens a new one when the access changes (new endpoint,
    /// other control-plane machines).
    async fn connect(
        &self,
        access: &WorkloadAccess,
    ) -> Result<Arc<dyn WorkloadCluster>, WorkloadError>;
}

/// True when removing member `victim` from `members` leaves a healthy quorum of the members
/// that remain.
#[must_use]
pub fn quorum_after_removal(members: &[EtcdMember], victim: u64) -> bool {
    let rest: Vec<&EtcdMember> = members
        .iter()
        .filter(|m| m.id != victim && !m.learner)
        .collect();
    let healthy = rest.iter().filter(|m| m.healthy).count();
    !rest.is_empty() && healthy > rest.len() / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, healthy: bool) -> EtcdMember {
        EtcdMember {
            id,
            name: format!("cp-{id}"),
            peer_urls: vec![],
            healthy,
            learner: false,
        }
    }

    #[test]
    fn quorum_rule() {
        // 4 healthy (surge): removing one leaves 3 of 3.
        let four: Vec<_> = (1..=4).map(|i| member(i, true)).collect();
        assert!(quorum_after_removal(&four, 1));
        // 3 members, one unhealthy: removing a healthy one leaves 1 of 2 — lost.
        let three = vec![member(1, true), member(2, true), member(3, false)];
        assert!(!quorum_after_removal(&three, 1));
        // Removing the unhealthy one leaves 2 of 2.
        assert!(quorum_after_removal(&three, 3));
        // The last member is never removed.
        assert!(!quorum_after_removal(&[member(1, true)], 1));
    }
}
