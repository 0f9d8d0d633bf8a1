//! The executor: one reconcile of one cluster. Observes the cloud, plans, runs the actions,
//! and commits status, intents and events in one write.
//!
//! Crash safety: before every machine create the intent (names + idempotency token) is
//! committed; the create carries the token; the next reconcile after a crash observes the
//! machines by tag (intent resolved) or re-issues the create with the same token (the cloud
//! returns what that token created). A crash anywhere therefore neither duplicates nor leaks.
//!
//! Layout: `prepare` (provider, account, VIP, [`ClusterContext`](crate::provider::ClusterContext)), `observe` (the listing,
//! intents, orphaned addresses), `actions` (one function per planned action, each returning
//! a `Step`), `create` (intent then create), `assess` (conditions and phase from the
//! planner's assessment), `call` (every cloud call: tracing span, metrics, typed outcome).
//! Failures that are the engine's own (an exhausted IP pool, pack values that cannot be
//! rendered) are shown as such, with their own reason, not disguised as cloud errors.

mod actions;
mod assess;
mod call;
mod create;
mod nodes;
mod observe;
mod prepare;

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::condition::{set_condition, ConditionStatus, ConditionType};
use super::event::{NewEvent, Severity};
use super::explain::Observed;
use super::planner::{plan, Action, Assessment, PlanInput};
use super::runtime::Inner;
use super::status::{ClusterRecord, ClusterStatus, Phase};
use crate::bootstrap::ClusterPki;
use crate::error::{CoreError, Result};
use crate::provider::{ClusterId, ProviderError};
use crate::store::ClusterWrite;

pub(crate) use self::prepare::{ensure_pki, load_account};

/// Most plan/execute rounds in one reconcile.
const MAX_ROUNDS: usize = 16;

/// What to do with the cluster after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Converged: resync later.
    Converged,
    /// Waiting on the cloud (booting, deleting): look again soon.
    Waiting,
    /// More to do right away.
    Progress,
    /// The last step failed: back off (or wait the throttle delay).
    Failed(Option<Duration>),
    /// Nothing more to do ever (deleted, or unknown).
    Finished,
    /// Its account already runs its share of the workers: queued again when one of them
    /// finishes, nothing done meanwhile.
    Parked,
}

/// What an action leaves the round loop to do next.
pub(crate) enum Step {
    /// Go on with the next action.
    Continue,
    /// Stop this reconcile with this outcome (waiting on the cloud, or a failure).
    Stop(Outcome),
}

/// A failure shown on a milestone: a cloud error or one of the engine's own.
pub(crate) trait Failure: std::fmt::Display {
    /// Reason code for the condition and the event.
    fn reason(&self) -> &'static str;
    /// Warning (retried as is) or error (needs a change or an operator).
    fn severity(&self) -> Severity;
    /// The delay the cloud asked for.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Failure for ProviderError {
    fn reason(&self) -> &'static str {
        ProviderError::reason(self)
    }
    fn severity(&self) -> Severity {
        match self {
            ProviderError::Retryable { .. } | ProviderError::Throttled { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        ProviderError::retry_after(self)
    }
}

impl Failure for crate::workload::WorkloadError {
    fn reason(&self) -> &'static str {
        crate::workload::WorkloadError::reason(self)
    }
    fn severity(&self) -> Severity {
        match self {
            crate::workload::WorkloadError::Unreachable { .. }
            | crate::workload::WorkloadError::Quorum { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl Failure for CoreError {
    fn reason(&self) -> &'static str {
        CoreError::reason(self)
    }
    fn severity(&self) -> Severity {
        if self.is_transient() {
            Severity::Warning
        } else {
            Severity::Error
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            CoreError::Provider(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// One reconcile's working state: the record read at its start, the status being built and
/// the write that commits it.
pub(crate) struct Pass<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) fence: Option<u64>,
    pub(crate) pki: Option<ClusterPki>,
    pub(crate) rec: ClusterRecord,
    pub(crate) status: ClusterStatus,
    pub(crate) write: ClusterWrite,
    pub(crate) now: DateTime<Utc>,
    pub(crate) failed: Option<ConditionType>,
    /// What the executor found the cluster waiting for (a blocked drain), beside the plan's.
    pub(crate) waits: Vec<super::planner::Wait>,
    /// `(role, reason, message)` of what holds a group of nodes up, for its condition.
    pub(crate) notes: Vec<(crate::model::PoolRole, String, String)>,
    /// User data rendered in this reconcile, by bootstrap role and API endpoint: every
    /// batch of a role gets the same text (its other inputs — spec, profile, PKI — do not
    /// change within one reconcile), so it is rendered once, not once per batch.
    pub(crate) user_data: Vec<(crate::provider::BootstrapRole, String, Vec<u8>)>,
}

impl Pass<'_> {
    pub(crate) fn event(&mut self, severity: Severity, reason: &str, message: impl Into<String>) {
        self.write.events.push(NewEvent {
            time: self.now,
            severity,
            reason: reason.to_string(),
            message: message.into(),
        });
    }

    pub(crate) fn condition(
        &mut self,
        kind: ConditionType,
        status: ConditionStatus,
        reason: &str,
        msg: &str,
    ) {
        set_condition(
            &mut self.status.conditions,
            kind,
            status,
            reason,
            msg,
            self.now,
        );
    }

    /// Shows a failure on milestone `kind` (condition Failed, event, last error).
    pub(crate) fn fail(&mut self, kind: ConditionType, what: &str, e: &dyn Failure) {
        let msg = format!("{what}: {e}");
        self.condition(kind, ConditionStatus::Failed, e.reason(), &e.to_string());
        self.event(e.severity(), e.reason(), &msg);
        self.status.last_error = Some(msg);
        self.failed = Some(kind);
    }

    /// [`Pass::fail`], and the step that stops the reconcile for it.
    pub(crate) fn stop_on(&mut self, kind: ConditionType, what: &str, e: &dyn Failure) -> Step {
        self.fail(kind, what, e);
        Step::Stop(Outcome::Failed(e.retry_after()))
    }
}

/// Reconciles one cluster once.
pub(crate) async fn reconcile(inner: &Inner, id: ClusterId, fence: Option<u64>) -> Result<Outcome> {
    let Some(rec) = inner.store.get_cluster(id).await? else {
        inner.metrics.phase(id, None);
        return Ok(Outcome::Finished);
    };
    let span = tracing::Span::current();
    span.record("name", rec.spec.name.as_str());
    span.record("generation", rec.generation);
    span.record("phase", rec.status.phase.as_str());
    if rec.status.phase == Phase::Deleted {
        inner.metrics.phase(id, None);
        return Ok(Outcome::Finished);
    }
    let now = inner.clock.now();
    let mut write = ClusterWrite::new(id);
    write.fence = fence;
    let mut pass = Pass {
        inner,
        fence,
        pki: None,
        status: rec.status.clone(),
        write,
        rec,
        now,
        failed: None,
        waits: Vec::new(),
        notes: Vec::new(),
        user_data: Vec::new(),
    };
    let outcome = match run(&mut pass).await {
        Ok(o) => o,
        Err(e @ CoreError::Fenced { .. }) => return Err(e),
        Err(e) => {
            // Setup failures (missing account, no provider): shown, retried with backoff.
            let msg = e.to_string();
            pass.status.last_error = Some(msg.clone());
            let kind = assess::active_condition(&pass.status, pass.rec.lifecycle.is_deleting());
            pass.condition(kind, ConditionStatus::Failed, "ConfigurationError", &msg);
            pass.event(Severity::Error, "ConfigurationError", msg);
            Outcome::Failed(None)
        }
    };
    if inner.agent.is_some() && pass.status.phase != Phase::Deleted {
        // The health condition, as the agent's reports show it (time of the last heartbeat
        // left out: the status changes only with the health).
        // A failed read keeps the health the status has: it must not cost the write.
        match inner.health_now(id).await {
            Ok(h) => {
                pass.status.health = Some(crate::monitoring::Health {
                    last_heartbeat: None,
                    ..h
                })
            }
            Err(e) => tracing::warn!(cluster = %id, error = %e, "health not mirrored"),
        }
    }
    if pass.status != pass.rec.status {
        pass.write.status = Some(pass.status.clone());
    }
    if !pass.write.is_empty() {
        let events = inner.store.commit(&pass.write).await?;
        inner.published(&events);
    }
    span.record("phase", pass.status.phase.as_str());
    inner.metrics.phase(
        id,
        (pass.status.phase != Phase::Deleted).then_some(pass.status.phase),
    );
    Ok(outcome)
}

/// What the rounds of one reconcile know of the cloud, updated as actions succeed.
pub(crate) struct World {
    pub(crate) machines: Vec<crate::provider::Machine>,
    pub(crate) intents: Vec<crate::store::Intent>,
    pub(crate) infra_stale: bool,
    pub(crate) infra_deleted: bool,
    /// The workload cluster as observed (with a workload connection).
    pub(crate) workload: Option<crate::workload::WorkloadView>,
    /// Its connection.
    pub(crate) conn: Option<std::sync::Arc<dyn crate::workload::WorkloadCluster>>,
    /// The bootstrap token's expiration was refreshed in this reconcile.
    pub(crate) token_refreshed: bool,
    /// Tokens of the batches whose intents this reconcile recorded and whose create call has
    /// not gone out yet.
    pub(crate) prepared: Vec<String>,
}

async fn run(p: &mut Pass<'_>) -> Result<Outcome> {
    let mut setup = prepare::prepare(p).await?;
    if let Some(wait) = prepare::gateway_gate(p, &mut setup).await? {
        return Ok(wait);
    }
    // The account's share of the workers: when its clusters already hold it, wait (having
    // changed nothing) until one of them finishes.
    let Some(_slot) = p.inner.account_slot(&setup.account_key, p.rec.id) else {
        return Ok(Outcome::Parked);
    };
    // A new cluster's pre-check (permissions, capacity) before its first cloud create.
    if super::precheck::due(p, setup.deleting) {
        let provider = setup.provider.clone();
        let mut found = match call::cloud_call(p, &setup, "precheck", provider.precheck(&setup.ctx))
            .await
        {
            Ok(found) => found,
            // Credentials that do not work stop here, as in any other call.
            Err(e @ crate::provider::ProviderError::Unauthorized { .. }) => return Err(e.into()),
            // A check the cloud could not answer does not hold the cluster back.
            Err(e) => crate::precheck::Precheck::unchecked(format!(
                "the cloud's pre-check did not answer: {e}"
            )),
        };
        found.merge(super::precheck::ip_pools(p.inner, &p.rec.spec, p.rec.id).await?);
        if let Some(o) = super::precheck::judge(p, &found) {
            return Ok(o);
        }
    }
    let mut world = match observe::observe(p, &setup).await? {
        Ok(w) => w,
        Err(outcome) => return Ok(outcome),
    };
    nodes::observe(p, &mut world).await?;
    let system_packs: Vec<(String, String)> = p
        .inner
        .system_packs(p.rec.id)
        .iter()
        .filter_map(|(k, values)| {
            crate::bootstrap::manifests::render(&p.rec.spec.name, k, Some(values.expose()))
                .ok()
                .map(|r| (r.pack, r.revision))
        })
        .collect();
    let mut assessment = Assessment::default();
    let mut outcome = None;
    let mut idle = false;
    'rounds: for _ in 0..MAX_ROUNDS {
        let input = PlanInput {
            spec: &p.rec.spec,
            profile: &p.rec.profile,
            lifecycle: p.rec.lifecycle,
            image: p.status.image.as_ref(),
            infra: p.status.infrastructure.as_ref(),
            infra_stale: world.infra_stale,
            machines: &world.machines,
            intents: &world.intents,
            now: p.now,
            machine_timeout: p.inner.config.machine_timeout,
            infra_deleted: world.infra_deleted,
            workload: world.workload.as_ref(),
            nodes: p.inner.config.nodes,
            applied_packs: &p.status.packs,
            system_packs: &system_packs,
        };
        let mut plan = plan(&input);
        assessment = plan.assessment;
        if plan.actions.is_empty() {
            idle = true;
            break;
        }
        for i in 0..plan.actions.len() {
            if !p.inner.may_act(p.rec.id) {
                // Replica that could not renew its leases lately: no more side effects (nor
                // intents for creates it will not send).
                outcome = Some(Outcome::Waiting);
                break 'rounds;
            }
            let new_batch =
                |a: &Action| matches!(a, Action::CreateMachines(r) if r.reissue.is_none());
            if new_batch(&plan.actions[i]) {
                // The intents of this create and of the creates right after it, in one write
                // before the first of them goes out.
                let end = plan.actions[i..]
                    .iter()
                    .position(|a| !matches!(a, Action::CreateMachines(_)))
                    .map_or(plan.actions.len(), |k| i + k);
                create::record_intents(p, &mut world, &mut plan.actions[i..end]).await?;
            }
            let action = std::mem::replace(&mut plan.actions[i], Action::Finalize);
            match actions::execute(p, &mut setup, &mut world, action).await? {
                Step::Continue => {}
                Step::Stop(o) => {
                    outcome = Some(o);
                    break 'rounds;
                }
            }
        }
    }
    create::forget_unsent(p, &mut world);
    assessment.waits.append(&mut p.waits);
    for (role, reason, msg) in std::mem::take(&mut p.notes) {
        let prog = if role == crate::model::PoolRole::ControlPlane {
            &mut assessment.control_plane
        } else {
            &mut assessment.workers
        };
        prog.note = Some((reason, msg));
        prog.done = false;
    }
    p.inner
        .blockers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            p.rec.id,
            Observed {
                at: p.now,
                waits: assessment.waits.clone(),
            },
        );
    if p.status.phase == Phase::Deleted {
        return Ok(Outcome::Finished);
    }
    assess::apply_assessment(p, &assessment);
    if let Some(o) = outcome {
        return Ok(o);
    }
    if assessment.converged {
        Ok(Outcome::Converged)
    } else if assessment.waiting || setup.deleting || idle {
        // Nothing to do but not converged either: look again later, never spin.
        Ok(Outcome::Waiting)
    } else {
        Ok(Outcome::Progress)
    }
}
