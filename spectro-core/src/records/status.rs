//! A cluster's stored record: spec, applied profile, lifecycle and observed status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use crate::model::{Cluster, ClusterProfile, ProfileRef};
use crate::provider::{ClusterId, ImageRef, InfraStatus};

/// The image a cluster uses, with the signature of the packs it was resolved for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedImage {
    /// Signature of the OS + Kubernetes pack definition.
    pub signature: String,
    /// The image.
    pub image: ImageRef,
}

/// The phase shown for a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Accepted, not reconciled yet.
    Pending,
    /// Being provisioned for the first time.
    Provisioning,
    /// Converged to the desired state.
    Running,
    /// A change is being applied to a provisioned cluster.
    Updating,
    /// Resources are being deleted (delete or abort).
    Deleting,
    /// Everything is gone.
    Deleted,
}

impl Phase {
    /// Lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Provisioning => "provisioning",
            Phase::Running => "running",
            Phase::Updating => "updating",
            Phase::Deleting => "deleting",
            Phase::Deleted => "deleted",
        }
    }
}

/// What the user asked for the cluster's existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Lifecycle {
    /// Keep it at its spec.
    Active,
    /// Delete it (it was provisioned).
    Deleting,
    /// Stop provisioning and delete what was created.
    Aborting,
}

impl Lifecycle {
    /// True when the cluster is going away.
    #[must_use]
    pub fn is_deleting(self) -> bool {
        self != Lifecycle::Active
    }
}

/// Per-pool node counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// Desired size.
    pub desired: u32,
    /// Running with the desired shape.
    pub ready: u32,
    /// All machines of the pool that exist (any state, any shape).
    pub current: u32,
    /// Machines still on an old shape (being replaced).
    pub outdated: u32,
}

/// A machine as the engine last saw it (the cluster page's machine list): refreshed by each
/// reconcile, written only when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineSummary {
    /// Machine name (the Kubernetes Node's name).
    pub name: String,
    /// Cloud id (instance id, VM managed object id, ...).
    pub id: String,
    /// Node pool.
    pub pool: String,
    /// Role of its pool.
    pub role: crate::model::PoolRole,
    /// Fault domain (zone or placement domain).
    pub zone: String,
    /// State in the cloud.
    pub state: crate::provider::MachineState,
    /// Primary private address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// Still on an old shape (to be replaced by a rolling replacement).
    pub outdated: bool,
    /// Running and, with a workload connection, a `Ready` Node (healthy etcd member for a
    /// control-plane node).
    pub ready: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl MachineSummary {
    /// The summary of an observed machine.
    #[must_use]
    pub fn of(m: &crate::provider::Machine, outdated: bool, ready: bool) -> Self {
        MachineSummary {
            name: m.name.clone(),
            id: m.id.clone(),
            pool: m.pool.clone(),
            role: m.role,
            zone: m.zone.clone(),
            state: m.state,
            address: m.address,
            outdated,
            ready,
            created_at: m.created_at,
        }
    }
}

/// A profile update waiting to be applied: the profile the spec names and its revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingProfileUpdate {
    /// The profile (name and version) the update moves to.
    pub profile: ProfileRef,
    /// Its revision.
    pub revision: u64,
}

/// What the engine knows about a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Phase.
    pub phase: Phase,
    /// Milestone conditions.
    pub conditions: Vec<Condition>,
    /// The spec generation last fully applied.
    pub observed_generation: u64,
    /// True once the cluster first reached Running (delete is allowed, abort is not).
    pub provisioned: bool,
    /// The machine image in use.
    pub image: Option<ResolvedImage>,
    /// Shared infrastructure as last ensured.
    pub infrastructure: Option<InfraStatus>,
    /// When the infrastructure was last checked.
    pub infrastructure_checked: Option<DateTime<Utc>>,
    /// The spec generation the infrastructure was last ensured for.
    #[serde(default)]
    pub infrastructure_generation: u64,
    /// Node counts per pool.
    pub pools: BTreeMap<String, PoolStatus>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// A profile update waiting to be applied (`Engine::update_notification` has the
    /// details; `Engine::apply_profile_update` applies it).
    #[serde(default)]
    pub profile_update: Option<PendingProfileUpdate>,
    /// The packs applied to the running cluster (CNI, CSI, add-ons; with a workload
    /// connection): which revision of each, and the objects it owns there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packs: BTreeMap<String, AppliedPack>,
    /// Health as the cluster's agent last showed it (with an agent key,
    /// `EngineBuilder::agent`): the condition `Healthy` — `True`, `False` with the reasons
    /// (node, condition or metric, since when), or `Unknown` before the first heartbeat.
    /// Mirrored by each reconcile (a transition queues one); `Engine::health` judges at the
    /// time of asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::monitoring::Health>,
    /// The spec generation whose pre-check (permissions, capacity) passed before anything
    /// was created (`None`: not yet; a cluster whose infrastructure exists is not checked
    /// again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prechecked: Option<u64>,
    /// The machines as the last reconcile saw them, per pool (control plane first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<MachineSummary>,
}

/// A pack as applied to the running cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPack {
    /// The pack's version.
    pub version: String,
    /// The revision of its rendered objects (values and overrides included).
    pub revision: String,
    /// The objects it owns in the cluster (its inventory: pruning deletes what a new revision
    /// no longer has, and everything when the pack leaves the profile).
    pub objects: Vec<crate::workload::ObjectRef>,
    /// When this revision was applied.
    pub applied_at: DateTime<Utc>,
}

impl ClusterStatus {
    /// The condition of `kind`, when the cluster has reached it.
    #[must_use]
    pub fn condition(&self, kind: super::condition::ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// True when the condition of `kind` is `status` for `reason` (e.g. `Creating
    /// Infrastructure` failed with `PrecheckFailed`): a predicate for `Engine::wait_for`.
    #[must_use]
    pub fn has_condition(
        &self,
        kind: super::condition::ConditionType,
        status: super::condition::ConditionStatus,
        reason: &str,
    ) -> bool {
        self.condition(kind)
            .is_some_and(|c| c.status == status && c.reason == reason)
    }
}

impl Default for ClusterStatus {
    fn default() -> Self {
        ClusterStatus {
            phase: Phase::Pending,
            conditions: Vec::new(),
            observed_generation: 0,
            provisioned: false,
            image: None,
            infrastructure: None,
            infrastructure_checked: None,
            infrastructure_generation: 0,
            pools: BTreeMap::new(),
            last_error: None,
            profile_update: None,
            packs: BTreeMap::new(),
            health: None,
            prechecked: None,
            machines: Vec::new(),
        }
    }
}

/// A cluster as stored: identity, desired state and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRecord {
    /// Stable id.
    pub id: ClusterId,
    /// Bumped on every spec change.
    pub generation: u64,
    /// Desired spec.
    pub spec: Cluster,
    /// The profile revision the cluster runs (a snapshot: profile edits raise notifications).
    pub profile: ClusterProfile,
    /// Revision of the stored profile the snapshot was taken at.
    pub profile_revision: u64,
    /// Active, deleting or aborting.
    pub lifecycle: Lifecycle,
    /// Observed status.
    pub status: ClusterStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}
