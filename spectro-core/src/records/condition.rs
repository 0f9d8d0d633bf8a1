//! Milestone conditions: what the engine is doing for a cluster, and how it went.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The lifecycle milestones, in the order they are usually met.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ConditionType {
    /// "Customizing Image": building a custom image from the OS pack (only when needed).
    ImageCustomized,
    /// "Creating Infrastructure": network, API endpoint, security.
    InfrastructureReady,
    /// "Adding Control Plane Node": control-plane nodes, one at a time.
    ControlPlaneReady,
    /// "Adding Worker Nodes": worker pools (also scaling and node replacement).
    WorkersReady,
    /// "Deleting": removing every cloud resource of the cluster.
    Deleted,
}

impl ConditionType {
    /// The human label, as the console shows it.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            ConditionType::ImageCustomized => "Customizing Image",
            ConditionType::InfrastructureReady => "Creating Infrastructure",
            ConditionType::ControlPlaneReady => "Adding Control Plane Node",
            ConditionType::WorkersReady => "Adding Worker Nodes",
            ConditionType::Deleted => "Deleting",
        }
    }
}

/// The state of a milestone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConditionStatus {
    /// Not started.
    Pending,
    /// The active task.
    InProgress,
    /// Done.
    Succeeded,
    /// The last attempt failed; the engine keeps retrying.
    Failed,
}

/// One milestone condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Which milestone.
    #[serde(rename = "type")]
    pub kind: ConditionType,
    /// Its state.
    pub status: ConditionStatus,
    /// A short machine-readable reason, e.g. `QuotaExceeded`.
    pub reason: String,
    /// What is happening or what went wrong, e.g. the cloud's error message.
    pub message: String,
    /// When `status` last changed.
    pub last_transition: DateTime<Utc>,
}

/// Sets a condition in a list, keeping `last_transition` unless the status changes, and the
/// list ordered by milestone. Returns true when anything changed.
pub fn set_condition(
    list: &mut Vec<Condition>,
    kind: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> bool {
    match list.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status == status && c.reason == reason && c.message == message {
                return false;
            }
            if c.status != status {
                c.last_transition = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            true
        }
        None => {
            list.push(Condition {
                kind,
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition: now,
            });
            list.sort_by_key(|c| c.kind);
            true
        }
    }
}

/// The condition of `kind`, if set.
#[must_use]
pub fn get_condition(list: &[Condition], kind: ConditionType) -> Option<&Condition> {
    list.iter().find(|c| c.kind == kind)
}
