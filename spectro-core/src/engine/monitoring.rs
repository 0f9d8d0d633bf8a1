//! Cluster health, usage and application services (`Engine::agent_report`, `health`,
//! `usage`, `services`, `watch_health`): the engine's side of the in-cluster agent.
//!
//! A report is authenticated first (the cluster's credential, derived from the engine's
//! [`AgentKey`]: nothing is read or written for a wrong one), then folded into the
//! cluster's [`MonitorState`] (store object `monitor`, written with optimistic concurrency:
//! replicas may receive reports of one cluster), its usage sample appended (raw rows, rolled
//! up into averages once older than the retention's raw period) and health judged. Every
//! health transition and every service that appears or goes is an event. Reports the agent
//! re-sends after a lost answer are recognised by their collection time and skipped.
//!
//! Missing heartbeats need no report to be noticed: [`Engine::health`] judges at the time
//! of asking, and a sweep (every [`MonitoringConfig::sweep_interval`]) records the
//! transition and its event.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::stream::{BoxStream, StreamExt};

use super::event::{NewEvent, Severity};
use super::runtime::Inner;
use super::Engine;
use crate::error::{CoreError, Result};
use crate::monitoring::agent_pack::AgentDeployment;
use crate::monitoring::credential::AgentKey;
use crate::monitoring::health::{evaluate, observe, HealthPolicy};
use crate::monitoring::report::{AgentReport, NodeReport, ReportBatch};
use crate::monitoring::services::app_services;
use crate::monitoring::usage::{downsample, UsageRetention, UsageSample};
use crate::monitoring::{
    AppService, Health, HealthStatus, MonitorState, NodeScope, Usage, UsagePoint,
};
use crate::provider::ClusterId;
use crate::secret::Secret;
use crate::store::{ClusterWrite, ObjectKind, UsageRow};

/// Health, usage and sweep settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringConfig {
    /// When a cluster counts as unhealthy.
    pub health: HealthPolicy,
    /// How long usage samples are kept, and how they are rolled up.
    pub retention: UsageRetention,
    /// How often missing heartbeats are looked for (transitions recorded, events sent).
    pub sweep_interval: Duration,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            health: HealthPolicy::default(),
            retention: UsageRetention::default(),
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// The agents: the key their credentials derive from and, when the engine deploys them
/// into the clusters it builds (with a workload connection), where they report.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Derives each cluster's credential.
    pub key: AgentKey,
    /// Deploy the agent as a system pack into every running cluster. `None`: the agents are
    /// deployed some other way (with `Engine::agent_token` as their credential).
    pub deployment: Option<AgentDeployment>,
}

/// A health transition of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthChange {
    /// The cluster.
    pub cluster: ClusterId,
    /// Its new health.
    pub health: Health,
}

/// Attempts at the optimistic write of a monitor object before giving up.
const WRITE_ATTEMPTS: usize = 5;

impl Inner {
    fn agent_key(&self) -> Result<&AgentKey> {
        self.agent
            .as_ref()
            .map(|a| &a.key)
            .ok_or(CoreError::Unsupported(
                "cluster agents: the engine has no agent key (EngineBuilder::agent)",
            ))
    }

    /// The system packs of a cluster (the agent, when the engine deploys it), each with the
    /// values its render takes as overrides (the credential: kept out of the `Pack`).
    pub(crate) fn system_packs(&self, id: ClusterId) -> Vec<(crate::model::Pack, Secret)> {
        use crate::monitoring::agent_pack::{agent_pack, agent_values};
        match &self.agent {
            Some(AgentSettings {
                key,
                deployment: Some(d),
            }) => vec![(agent_pack(id, d), agent_values(&key.token(id)))],
            _ => Vec::new(),
        }
    }

    async fn monitor(&self, id: ClusterId) -> Result<(MonitorState, u64)> {
        match self
            .store
            .get_object(ObjectKind::Monitor, &id.to_string())
            .await?
        {
            Some(o) => Ok((super::decode("monitor state", o.body)?, o.revision)),
            None => Ok((MonitorState::default(), 0)),
        }
    }

    /// The health of a cluster judged now.
    pub(crate) async fn health_now(&self, id: ClusterId) -> Result<Health> {
        let (state, _) = self.monitor(id).await?;
        Ok(evaluate(
            &self.config.monitoring.health,
            &state,
            self.clock.now(),
        ))
    }

    /// Announces a transition: `watch_health` subscribers, and a reconcile that mirrors it
    /// into the cluster's status.
    fn announce(&self, id: ClusterId, health: Health) {
        let _ = self.health_tx.send(HealthChange {
            cluster: id,
            health,
        });
        self.queue.add(id);
    }

    async fn record(&self, id: ClusterId, events: Vec<NewEvent>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut w = ClusterWrite::new(id);
        w.events = events;
        let written = self.store.commit(&w).await?;
        self.published(&written);
        Ok(())
    }

    fn health_event(&self, before: &Health, after: &Health, at: DateTime<Utc>) -> NewEvent {
        let (severity, reason) = match after.status {
            HealthStatus::Unhealthy => (Severity::Warning, "ClusterUnhealthy"),
            HealthStatus::Healthy => (Severity::Info, "ClusterHealthy"),
            HealthStatus::Unknown => (Severity::Info, "HealthUnknown"),
        };
        let was = match before.status {
            HealthStatus::Unhealthy => "unhealthy",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unknown => "unknown",
        };
        NewEvent {
            time: at,
            severity,
            reason: reason.into(),
            message: format!("{} (was {was})", after.message()),
        }
    }

    /// Looks for missing heartbeats: records each transition once (replicas race on the
    /// optimistic write; the loser sees it done).
    pub(crate) async fn sweep_health(&self) -> Result<usize> {
        let mut changed = 0;
        for o in self.store.list_objects(ObjectKind::Monitor).await? {
            let Ok(id) = o.name.parse::<ClusterId>() else {
                continue;
            };
            let mut state: MonitorState = match super::decode("monitor state", o.body) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(cluster = %id, error = %e, "monitor state unreadable: skipped");
                    continue;
                }
            };
            let now = self.clock.now();
            let h = evaluate(&self.config.monitoring.health, &state, now);
            if h.same_as(&state.health) {
                continue;
            }
            let before = std::mem::replace(&mut state.health, h.clone());
            let body = super::encode(&state)?;
            match self
                .store
                .put_object(ObjectKind::Monitor, &o.name, &body, Some(o.revision))
                .await
            {
                Ok(_) => {
                    self.record(id, vec![self.health_event(&before, &h, now)])
                        .await?;
                    self.announce(id, h);
                    changed += 1;
                }
                Err(CoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// The sweep loop (spawned by `start` when the engine has an agent key).
    pub(crate) async fn health_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.config.monitoring.sweep_interval).await;
            if let Err(e) = self.sweep_health().await {
                tracing::warn!(error = %e, "health sweep failed");
            }
        }
    }

    /// Rolls up raw samples older than the raw period into averages and drops averages
    /// older than the retention. Returns the new cut.
    async fn roll_up(&self, id: ClusterId, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let r = &self.config.monitoring.retention;
        let cut = r.raw_cut(now);
        let step = r.step_secs() as u32;
        let raw = self
            .store
            .usage(id, 0, DateTime::<Utc>::MIN_UTC, cut)
            .await?;
        if !raw.is_empty() {
            let samples: Vec<UsageSample> = raw
                .into_iter()
                .map(|row| super::decode("usage sample", row.body))
                .collect::<Result<_>>()?;
            let rows = downsample(&samples, r.step)
                .into_iter()
                .map(|s| {
                    Ok(UsageRow {
                        at: s.at,
                        body: super::encode(&s)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            self.store.put_usage(id, step, &rows).await?;
            self.store.delete_usage(id, Some(0), cut).await?;
        }
        self.store
            .delete_usage(id, Some(step), r.rollup_cut(now))
            .await?;
        Ok(cut)
    }
}

impl Engine {
    /// The credential of `id`'s agent (what the agent pack's Secret carries): for agents
    /// deployed by the application itself. Fails with `Unsupported` without an agent key.
    pub fn agent_token(&self, id: ClusterId) -> Result<Secret> {
        Ok(self.inner.agent_key()?.token(id))
    }

    /// Checks an agent's credential and that its cluster takes reports: `Unauthorized`
    /// for a wrong credential or another cluster's (nothing read), `NotFound` for a deleted
    /// cluster, `WrongLifecycle` while it is being deleted. The endpoint asks this before
    /// it reads a request's body.
    pub async fn agent_authorized(&self, id: ClusterId, token: &str) -> Result<()> {
        self.running()?;
        if !self.inner.agent_key()?.verify(id, token) {
            tracing::warn!(cluster = %id, "agent credential refused");
            return Err(CoreError::Unauthorized {
                cluster: id.to_string(),
            });
        }
        let rec = self.cluster(id).await?;
        // A cluster being deleted takes no more reports: its monitor state goes with it.
        if rec.status.phase == super::status::Phase::Deleted {
            return Err(CoreError::NotFound {
                kind: "cluster",
                name: id.to_string(),
            });
        }
        if rec.lifecycle.is_deleting() {
            return Err(CoreError::WrongLifecycle {
                op: "report",
                cluster: rec.spec.name.clone(),
                state: "being deleted",
                hint: None,
            });
        }
        Ok(())
    }

    /// Takes a batch of reports from `id`'s agent: checks its credential
    /// ([`Engine::agent_authorized`]: nothing is recorded for a refused one), folds every
    /// report not seen before into the cluster's state (a re-sent one is recognised by the
    /// agent's process id and report number), stores the usage samples, and judges health.
    /// Any report is a heartbeat. Returns the cluster's health after it.
    pub async fn agent_report(
        &self,
        id: ClusterId,
        token: &str,
        batch: &ReportBatch,
    ) -> Result<Health> {
        self.agent_authorized(id, token).await?;
        let inner = &self.inner;
        let policy = &inner.config.monitoring.health;
        let retention = &inner.config.monitoring.retention;
        // One time for every attempt: a retried write stores the same rows.
        let now = inner.clock.now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut state, revision) = inner.monitor(id).await?;
            if batch.reports.is_empty() {
                return Ok(evaluate(policy, &state, now));
            }
            let seen = |r: &AgentReport| match &state.last_report {
                Some((agent, seq)) if !r.agent_id.is_empty() => {
                    *agent == r.agent_id && r.seq <= *seq
                }
                _ => false,
            };
            let mut reports: Vec<&AgentReport> =
                batch.reports.iter().filter(|r| !seen(r)).collect();
            reports.sort_by_key(|r| (r.collected_at, r.seq));
            // Heartbeats that stopped and resumed between two sweeps: the lapse is recorded
            // (its own transition and event) before the report ends it.
            let mut events = Vec::new();
            let mut lapse = None;
            let lapsed = evaluate(policy, &state, now);
            if state.last_heartbeat.is_some() && !lapsed.same_as(&state.health) {
                events.push(inner.health_event(&state.health, &lapsed, now));
                lapse = Some(lapsed.clone());
                state.health = lapsed;
            }
            // The agent's clock may be off: place its newest report at now, the others at
            // their distance before it (a distance past the retention, or absurd: no sample).
            let newest = reports.last().map(|r| r.collected_at);
            let oldest_kept = retention.rollup_cut(now);
            let floor = state
                .last_sample
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
                .max(state.rolled_up.unwrap_or(DateTime::<Utc>::MIN_UTC));
            let mut rows = Vec::new();
            for r in &reports {
                let at = newest
                    .map(|n| n.signed_duration_since(r.collected_at))
                    .and_then(|age| now.checked_sub_signed(age))
                    .filter(|at| *at >= oldest_kept)
                    .unwrap_or(now)
                    .min(now);
                observe(policy, &mut state, r, at);
                if at > floor && state.last_sample.is_none_or(|t| at > t) {
                    let sample = UsageSample::from_report(r, at);
                    rows.push(UsageRow {
                        at,
                        body: super::encode(&sample)?,
                    });
                    state.last_sample = Some(at);
                }
                if !r.agent_id.is_empty() {
                    state.last_report = Some((r.agent_id.clone(), r.seq));
                }
            }
            state.last_heartbeat = Some(now);
            if let Some(last) = reports.last() {
                state.unscheduled_requests = last.unscheduled_requests;
                let services = app_services(&last.services, &last.nodes);
                let old: BTreeSet<String> = state.services.iter().map(AppService::key).collect();
                let new: BTreeSet<String> = services.iter().map(AppService::key).collect();
                for s in services.iter().filter(|s| !old.contains(&s.key())) {
                    events.push(NewEvent {
                        time: now,
                        severity: Severity::Info,
                        reason: "ServiceAdded".into(),
                        message: format!("{} service {} ({})", s.kind, s.key(), s.links.join(", ")),
                    });
                }
                for s in state.services.iter().filter(|s| !new.contains(&s.key())) {
                    events.push(NewEvent {
                        time: now,
                        severity: Severity::Info,
                        reason: "ServiceRemoved".into(),
                        message: format!("{} service {} removed", s.kind, s.key()),
                    });
                }
                state.services = services;
            }
            let health = evaluate(policy, &state, now);
            let transition = (!health.same_as(&state.health))
                .then(|| inner.health_event(&state.health, &health, now));
            events.extend(transition.clone());
            state.health = health.clone();
            // Rows first (keyed by time: a retry rewrites the same rows), then the state.
            if !rows.is_empty() {
                match inner.store.put_usage(id, 0, &rows).await {
                    Ok(()) | Err(CoreError::Unsupported(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            // Once per bucket: when the cut moved past the last one.
            let cut = retention.raw_cut(now);
            let roll = state.rolled_up.is_none_or(|t| cut > t);
            if roll {
                state.rolled_up = Some(cut);
            }
            let body = super::encode(&state)?;
            match inner
                .store
                .put_object(ObjectKind::Monitor, &id.to_string(), &body, Some(revision))
                .await
            {
                Ok(_) => {
                    inner.record(id, events).await?;
                    if let Some(l) = lapse {
                        inner.announce(id, l);
                    }
                    if transition.is_some() {
                        inner.announce(id, health.clone());
                    }
                    if roll {
                        // A failed roll-up is done with the next bucket's (everything
                        // before the newer cut).
                        match inner.roll_up(id, now).await {
                            Ok(_) | Err(CoreError::Unsupported(_)) => {}
                            Err(e) => {
                                tracing::warn!(cluster = %id, error = %e, "usage roll-up failed")
                            }
                        }
                    }
                    return Ok(health);
                }
                Err(CoreError::Conflict { .. }) if attempt < WRITE_ATTEMPTS => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The cluster's health now (heartbeat window judged at the time of asking).
    pub async fn health(&self, id: ClusterId) -> Result<Health> {
        self.cluster(id).await?;
        self.inner.health_now(id).await
    }

    /// The nodes as the agent last reported them (conditions, capacity, usage, requests):
    /// the doc's node details.
    pub async fn node_details(&self, id: ClusterId) -> Result<Vec<NodeReport>> {
        self.cluster(id).await?;
        Ok(self.inner.monitor(id).await?.0.nodes)
    }

    /// The application services (every LoadBalancer and NodePort service) with their links.
    pub async fn services(&self, id: ClusterId) -> Result<Vec<AppService>> {
        self.cluster(id).await?;
        Ok(self.inner.monitor(id).await?.0.services)
    }

    /// Usage of the nodes of `scope` (worker nodes: `NodeScope::Workers`, the doc's
    /// default): now, and as a series over `range` (5-minute averages where rolled up, raw
    /// samples after).
    pub async fn usage(
        &self,
        id: ClusterId,
        range: Range<DateTime<Utc>>,
        scope: &NodeScope,
    ) -> Result<Usage> {
        self.cluster(id).await?;
        let (state, _) = self.inner.monitor(id).await?;
        let step = self.inner.config.monitoring.retention.step_secs() as u32;
        let mut rows = self
            .inner
            .store
            .usage(id, step, range.start, range.end)
            .await?;
        rows.extend(
            self.inner
                .store
                .usage(id, 0, range.start, range.end)
                .await?,
        );
        rows.sort_by_key(|r| r.at);
        let series = rows
            .into_iter()
            .map(|r| {
                Ok(UsagePoint::of(
                    &super::decode::<UsageSample>("usage sample", r.body)?,
                    scope,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let current = state.last_sample.map(|at| {
            let report = crate::monitoring::AgentReport {
                nodes: state.nodes.clone(),
                unscheduled_requests: state.unscheduled_requests,
                ..Default::default()
            };
            UsagePoint::of(&UsageSample::from_report(&report, at), scope)
        });
        Ok(Usage { current, series })
    }

    /// Health transitions as they happen (of one cluster, or all), from this engine: the
    /// event stream (`watch_events`, reasons `ClusterHealthy`, `ClusterUnhealthy`) has them
    /// from every replica.
    pub fn watch_health(&self, cluster: Option<ClusterId>) -> BoxStream<'static, HealthChange> {
        let rx = self.inner.health_tx.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(c) => return Some((c, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .filter(move |c| std::future::ready(cluster.is_none_or(|id| c.cluster == id)))
        .boxed()
    }
}
