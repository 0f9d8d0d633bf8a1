//! "Why is it stuck": [`Engine::explain`] lists what stands between a cluster and its
//! desired state, from the cluster down to pools and machines, each with since-when.
//!
//! Built from what is already known, nothing is asked of the cloud: the failed milestones
//! in the stored status (quota, throttling, credentials, configuration: the cloud's or the
//! engine's typed reason and message), the planner's waits from this engine's last
//! reconcile of the cluster (image, infrastructure, machines booting or deleting, creates
//! in flight, workers waiting for the control plane, a rolling replacement), the pending
//! profile update, the backoff, and (replicas) whether this engine holds the cluster.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::condition::ConditionStatus;
use super::planner::Wait;
use super::status::Phase;
use super::Engine;
use crate::error::Result;
use crate::provider::ClusterId;

/// What this engine saw at its last reconcile of a cluster.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub(crate) at: DateTime<Utc>,
    pub(crate) waits: Vec<Wait>,
}

/// Where a blocker sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "scope", content = "name")]
#[non_exhaustive]
pub enum BlockerScope {
    /// The whole cluster.
    Cluster,
    /// A node pool.
    Pool(String),
    /// One machine.
    Machine(String),
}

/// What kind of thing blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum BlockerKind {
    /// A cloud quota or limit (or an exhausted IP pool): raise it, or shrink the spec.
    Quota,
    /// The cloud throttles the account: the engine waits at least the retry-after.
    Throttled,
    /// The cloud refuses the account's credentials or permissions.
    Unauthorized,
    /// The spec or the profile cannot be realized as is (terminal until changed).
    Configuration,
    /// Another cloud failure, retried with backoff.
    CloudError,
    /// The machine image is being resolved or customized.
    Image,
    /// The shared infrastructure is not ready.
    Infrastructure,
    /// A machine is booting.
    MachineBooting,
    /// A machine is being deleted.
    MachineDeleting,
    /// A create is in flight: its intent is recorded, its machines are not listed yet.
    CreateInFlight,
    /// Workers wait for the first control-plane node.
    ControlPlane,
    /// A rolling replacement is under way.
    Replacing,
    /// The cluster is being deleted.
    Deleting,
    /// A running machine's Kubernetes Node is not `Ready` (or its etcd member not healthy).
    NodeNotReady,
    /// The workload cluster's API server does not answer.
    ApiServer,
    /// A node's drain waits (PodDisruptionBudget, terminating pods).
    Draining,
    /// A control-plane machine cannot go without losing etcd quorum.
    EtcdQuorum,
    /// A pack's objects are not applied at their current revision in the running cluster.
    Pack,
    /// A profile update is available and waits for the user to apply it.
    ProfileUpdatePending,
    /// The last reconciles failed: the engine backs off before the next.
    Backoff,
    /// Replica mode: another replica holds the cluster (ask it, or look at its status).
    HeldElsewhere,
}

/// One thing standing between a cluster and its desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Blocker {
    /// Cluster, pool or machine.
    pub scope: BlockerScope,
    /// What kind of blocker.
    pub kind: BlockerKind,
    /// What it is, in words (the cloud's message for failures).
    pub message: String,
    /// Since when, when known.
    pub since: Option<DateTime<Utc>>,
}

/// The answer of [`Engine::explain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Explanation {
    /// The cluster.
    pub cluster: ClusterId,
    /// Its name.
    pub name: String,
    /// Its phase.
    pub phase: Phase,
    /// Generation of its spec.
    pub generation: u64,
    /// The generation it has converged to.
    pub observed_generation: u64,
    /// At its desired state, nothing in the way.
    pub converged: bool,
    /// When this engine last reconciled it (`None`: not since this engine started).
    pub observed_at: Option<DateTime<Utc>>,
    /// What is in the way, cluster first, then pools, then machines.
    pub blockers: Vec<Blocker>,
}

fn failure_kind(reason: &str) -> BlockerKind {
    match reason {
        "QuotaExceeded" | "PoolExhausted" | "PoolRestricted" => BlockerKind::Quota,
        "Throttled" => BlockerKind::Throttled,
        "Unauthorized" => BlockerKind::Unauthorized,
        "TransientError" => BlockerKind::CloudError,
        _ => BlockerKind::Configuration,
    }
}

fn from_wait(w: &Wait) -> Blocker {
    let (scope, kind, message, since) = match w {
        Wait::Image { customization } => (
            BlockerScope::Cluster,
            BlockerKind::Image,
            if *customization {
                "building the customized image".to_string()
            } else {
                "resolving the machine image".to_string()
            },
            None,
        ),
        Wait::Infrastructure { message } => (
            BlockerScope::Cluster,
            BlockerKind::Infrastructure,
            message
                .clone()
                .unwrap_or_else(|| "creating the network and API endpoint".into()),
            None,
        ),
        Wait::MachineBooting {
            pool,
            machine,
            since,
        } => (
            BlockerScope::Machine(machine.clone()),
            BlockerKind::MachineBooting,
            format!("machine of pool {pool} is booting"),
            Some(*since),
        ),
        Wait::MachineDeleting { pool, machine } => (
            BlockerScope::Machine(machine.clone()),
            BlockerKind::MachineDeleting,
            format!("machine of pool {pool} is being deleted"),
            None,
        ),
        Wait::CreateInFlight {
            pool,
            machines,
            since,
        } => (
            BlockerScope::Pool(pool.clone()),
            BlockerKind::CreateInFlight,
            format!(
                "create of {} sent, not listed by the cloud yet",
                machines.join(", ")
            ),
            Some(*since),
        ),
        Wait::ControlPlane { pool } => (
            BlockerScope::Pool(pool.clone()),
            BlockerKind::ControlPlane,
            "waiting for the first control-plane node to run".into(),
            None,
        ),
        Wait::Replacing { pool, outdated } => (
            BlockerScope::Pool(pool.clone()),
            BlockerKind::Replacing,
            format!("{outdated} machine(s) still to replace (one at a time)"),
            None,
        ),
        Wait::NodeNotReady {
            pool,
            machine,
            detail,
            since,
        } => (
            BlockerScope::Machine(machine.clone()),
            BlockerKind::NodeNotReady,
            format!("machine of pool {pool}: {detail}"),
            Some(*since),
        ),
        Wait::ApiServer { message } => (
            BlockerScope::Cluster,
            BlockerKind::ApiServer,
            format!("the cluster's API server: {message}"),
            None,
        ),
        Wait::Draining {
            machine,
            node,
            reason,
            since,
        } => (
            BlockerScope::Machine(machine.clone()),
            BlockerKind::Draining,
            format!("draining node {node}: {reason}"),
            Some(*since),
        ),
        Wait::EtcdQuorum { machine, detail } => (
            BlockerScope::Machine(machine.clone()),
            BlockerKind::EtcdQuorum,
            format!("removing its etcd member would lose quorum or another member is unhealthy ({detail})"),
            None,
        ),
        Wait::Pack { pack, detail } => (
            BlockerScope::Cluster,
            BlockerKind::Pack,
            format!("pack {pack}: {detail}"),
            None,
        ),
        Wait::Deleting { remaining } => (
            BlockerScope::Cluster,
            BlockerKind::Deleting,
            format!("deleting {remaining}"),
            None,
        ),
    };
    Blocker {
        scope,
        kind,
        message,
        since,
    }
}

fn rank(s: &BlockerScope) -> u8 {
    match s {
        BlockerScope::Cluster => 0,
        BlockerScope::Pool(_) => 1,
        BlockerScope::Machine(_) => 2,
    }
}

impl Engine {
    /// Why the cluster is not at its desired state (or that it is): the blockers from cluster
    /// to pool to machine, each with what it is and since when. See the module docs for the
    /// sources; no cloud call is made.
    pub async fn explain(&self, id: ClusterId) -> Result<Explanation> {
        let rec = self.cluster(id).await?;
        let mut blockers = Vec::new();
        for c in &rec.status.conditions {
            if c.status == ConditionStatus::Failed {
                blockers.push(Blocker {
                    scope: BlockerScope::Cluster,
                    kind: failure_kind(&c.reason),
                    message: format!("{:?}: {}", c.kind, c.message),
                    since: Some(c.last_transition),
                });
            }
        }
        let observed = self
            .inner
            .blockers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        if let Some(o) = &observed {
            blockers.extend(o.waits.iter().map(from_wait));
        }
        if let Some(u) = &rec.status.profile_update {
            blockers.push(Blocker {
                scope: BlockerScope::Cluster,
                kind: BlockerKind::ProfileUpdatePending,
                message: format!(
                    "profile {} (revision {}) is available: apply it to update the cluster",
                    u.profile, u.revision
                ),
                since: None,
            });
        }
        let failures = self.inner.failures(id);
        if failures > 0 {
            blockers.push(Blocker {
                scope: BlockerScope::Cluster,
                kind: BlockerKind::Backoff,
                message: format!("{failures} reconcile(s) in a row failed: backing off"),
                since: None,
            });
        }
        // Another replica's cluster at its desired state (as stored) waits for nothing; one
        // that is not is explained by its owner (its planner's waits live there).
        let settled =
            rec.status.phase == Phase::Running && rec.status.observed_generation == rec.generation;
        if self.inner.config.replica.is_some() && !self.inner.may_act(id) && !settled {
            blockers.push(Blocker {
                scope: BlockerScope::Cluster,
                kind: BlockerKind::HeldElsewhere,
                message: "another replica holds this cluster (or this one lost its leases)".into(),
                since: None,
            });
        }
        blockers.sort_by_key(|b| rank(&b.scope));
        let converged = rec.status.phase == Phase::Running
            && rec.status.observed_generation == rec.generation
            && blockers
                .iter()
                .all(|b| b.kind == BlockerKind::ProfileUpdatePending);
        Ok(Explanation {
            cluster: id,
            name: rec.spec.name.clone(),
            phase: rec.status.phase,
            generation: rec.generation,
            observed_generation: rec.status.observed_generation,
            converged,
            observed_at: observed.map(|o| o.at),
            blockers,
        })
    }
}
