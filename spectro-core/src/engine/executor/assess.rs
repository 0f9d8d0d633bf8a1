//! From the planner's assessment to what the user sees: conditions per milestone, pool
//! counts, the phase, and the `Running` event.

use super::super::condition::{ConditionStatus, ConditionType};
use super::super::event::Severity;
use super::super::planner::Assessment;
use super::super::status::{ClusterStatus, Phase};
use super::Pass;

/// What the planner's note says of a node past its ready timeout.
const LATE: &str = "past the node ready timeout";

/// The milestone being worked on: where a failure that belongs to no step is shown.
pub(super) fn active_condition(status: &ClusterStatus, deleting: bool) -> ConditionType {
    if deleting {
        return ConditionType::Deleted;
    }
    status
        .conditions
        .iter()
        .find(|c| c.status != ConditionStatus::Succeeded)
        .map_or(
            if status.infrastructure.as_ref().is_some_and(|i| i.ready) {
                ConditionType::WorkersReady
            } else {
                ConditionType::InfrastructureReady
            },
            |c| c.kind,
        )
}

pub(super) fn apply_assessment(p: &mut Pass<'_>, a: &Assessment) {
    let skip = p.failed;
    let set = |p: &mut Pass<'_>, kind, status, reason: &str, msg: &str| {
        if skip != Some(kind) {
            p.condition(kind, status, reason, msg);
        }
    };
    if p.rec.lifecycle.is_deleting() {
        if p.status.phase != Phase::Deleted {
            p.status.phase = Phase::Deleting;
            p.status.machines = a.machines.clone();
        }
        return;
    }
    if a.customization && a.image_ready {
        set(
            p,
            ConditionType::ImageCustomized,
            ConditionStatus::Succeeded,
            "Ready",
            "custom image ready",
        );
    }
    if a.infra_ready {
        set(
            p,
            ConditionType::InfrastructureReady,
            ConditionStatus::Succeeded,
            "Ready",
            "infrastructure ready",
        );
    }
    if a.infra_ready && a.image_ready {
        for (kind, prog, what) in [
            (
                ConditionType::ControlPlaneReady,
                &a.control_plane,
                "control-plane",
            ),
            (ConditionType::WorkersReady, &a.workers, "worker"),
        ] {
            let mut msg = format!("{}/{} {what} nodes ready", prog.ready, prog.desired);
            if prog.outdated > 0 {
                msg.push_str(&format!(", {} being replaced", prog.outdated));
            }
            let (status, mut reason) = if prog.done {
                (ConditionStatus::Succeeded, "Ready")
            } else {
                (ConditionStatus::InProgress, "Provisioning")
            };
            if let (false, Some((why, note))) = (prog.done, &prog.note) {
                msg.push_str(": ");
                msg.push_str(note);
                reason = why.as_str();
                // A node past its ready timeout is reported once, as an event too.
                let before = p
                    .status
                    .conditions
                    .iter()
                    .find(|c| c.kind == kind)
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                if note.contains(LATE) && before != msg {
                    p.event(Severity::Warning, "NodeNotReady", note.clone());
                }
            }
            set(p, kind, status, reason, &msg);
        }
        p.status.pools = a.pools.clone();
        p.status.machines = a.machines.clone();
    }
    if a.converged && p.failed.is_none() {
        if p.status.phase != Phase::Running {
            p.event(
                Severity::Info,
                "Running",
                format!("cluster is running (generation {})", p.rec.generation),
            );
        }
        p.status.phase = Phase::Running;
        p.status.provisioned = true;
        p.status.observed_generation = p.rec.generation;
        p.status.last_error = None;
    } else if p.status.provisioned {
        p.status.phase = Phase::Updating;
    } else {
        p.status.phase = Phase::Provisioning;
    }
}
