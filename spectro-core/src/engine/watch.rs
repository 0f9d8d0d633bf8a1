//! Watching clusters: events (stored and live), waiting for a state, awaiting the next
//! reconcile, resyncs.

use std::time::Duration;

use futures_util::stream::{self, Stream};

use crate::error::{CoreError, Result};
use crate::provider::ClusterId;

use super::event::Event;
use super::executor::Outcome;
use super::status::{ClusterRecord, Phase};
use super::Engine;

impl Engine {
    /// Events of one cluster (or all) after position `after`.
    pub async fn events(
        &self,
        cluster: Option<ClusterId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        self.inner.store.events(cluster, after, limit).await
    }

    /// A live stream of events of one cluster (or all) after position `after`: first the
    /// stored ones, then new ones as they are committed. Resume by passing the last `seq`.
    /// Woken by this engine's events and, for a replica, by the store's change feed (other
    /// processes' writes), with a look at the store every second for events that come
    /// without a cluster change.
    pub fn watch_events(
        &self,
        cluster: Option<ClusterId>,
        after: u64,
    ) -> impl Stream<Item = Result<Event>> + Send + 'static {
        let store = self.inner.store.clone();
        let rx = self.inner.last_seq.subscribe();
        let look_again = self
            .inner
            .config
            .replica
            .as_ref()
            .map(|_| Duration::from_secs(1));
        let state = (
            store,
            rx,
            after,
            std::collections::VecDeque::<Event>::new(),
            false,
        );
        stream::unfold(
            state,
            move |(store, mut rx, mut last, mut buf, mut done)| async move {
                loop {
                    if done {
                        return None;
                    }
                    if let Some(e) = buf.pop_front() {
                        last = e.seq;
                        return Some((Ok(e), (store, rx, last, buf, done)));
                    }
                    rx.borrow_and_update();
                    match store.events(cluster, last, 512).await {
                        Ok(evs) if !evs.is_empty() => buf.extend(evs),
                        Ok(_) => {
                            let changed = match look_again {
                                Some(pause) => tokio::select! {
                                    r = rx.changed() => r,
                                    () = tokio::time::sleep(pause) => Ok(()),
                                },
                                None => rx.changed().await,
                            };
                            if changed.is_err() {
                                done = true;
                            }
                        }
                        Err(e) => {
                            done = true;
                            return Some((Err(e), (store, rx, last, buf, done)));
                        }
                    }
                }
            },
        )
    }

    /// Waits until `pred` holds for the cluster, or `timeout` passes (returns the last record).
    /// Woken by this engine's reconciles, and looks again every 200 ms for changes made by
    /// other replicas.
    pub async fn wait_for(
        &self,
        id: ClusterId,
        timeout: Duration,
        pred: impl Fn(&ClusterRecord) -> bool,
    ) -> Result<ClusterRecord> {
        let mut rx = self.inner.changes.subscribe();
        let deadline = crate::clock::instant_now() + timeout;
        loop {
            rx.borrow_and_update();
            let rec = self.cluster(id).await?;
            if pred(&rec) || crate::clock::instant_now() >= deadline {
                return Ok(rec);
            }
            let look_again =
                (crate::clock::instant_now() + Duration::from_millis(200)).min(deadline);
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return Ok(rec); } }
                _ = tokio::time::sleep_until(look_again) => {}
            }
        }
    }

    /// Waits until the cluster reaches `phase` (at its current generation for Running).
    pub async fn wait_for_phase(
        &self,
        id: ClusterId,
        phase: Phase,
        timeout: Duration,
    ) -> Result<ClusterRecord> {
        let reached = |r: &ClusterRecord| {
            r.status.phase == phase
                && (phase != Phase::Running || r.status.observed_generation == r.generation)
        };
        let rec = self.wait_for(id, timeout, reached).await?;
        if reached(&rec) {
            Ok(rec)
        } else {
            Err(CoreError::Timeout {
                cluster: rec.spec.name.clone(),
                wanted: phase.as_str().to_string(),
                phase: rec.status.phase,
                observed_generation: rec.status.observed_generation,
                generation: rec.generation,
                last_error: rec.status.last_error.clone(),
                waited: timeout,
            })
        }
    }

    /// Waits for the next reconcile of `id` to finish (one that starts after this call, or
    /// one already running) and reports how it ended: in tests and tools, instead of
    /// sleeping. With `kick`, the cluster is queued at once (a resync), so the wait is short.
    /// Fails with [`CoreError::Timeout`] when none finishes within `timeout`, and with
    /// [`CoreError::Shutdown`] when the engine stops meanwhile.
    pub async fn next_reconcile(
        &self,
        id: ClusterId,
        kick: bool,
        timeout: Duration,
    ) -> Result<ReconcileReport> {
        let mut rx = self.inner.reconciled.subscribe();
        if kick {
            self.running()?;
            self.inner.queue.add(id);
        }
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(r) if r.cluster == id => return Ok(r),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(CoreError::Shutdown)
                    }
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                let rec = self.cluster(id).await?;
                Err(CoreError::Timeout {
                    cluster: rec.spec.name.clone(),
                    wanted: "its next reconcile".into(),
                    phase: rec.status.phase,
                    observed_generation: rec.status.observed_generation,
                    generation: rec.generation,
                    last_error: rec.status.last_error.clone(),
                    waited: timeout,
                })
            }
        }
    }

    /// Queues every live cluster for a resync now (e.g. after an outage of the cloud). Each
    /// is observed by a listing that starts after this call (one per fleet for the converged
    /// clusters of one account, see `CloudProvider::list_fleet`).
    pub async fn resync_all(&self) -> Result<usize> {
        let recs = self.inner.store.list_clusters(false).await?;
        // All marked before any is queued: one fresh listing per fleet serves them all.
        for r in &recs {
            self.inner.mark_acted(r.id);
        }
        for r in &recs {
            self.inner.queue.add(r.id);
        }
        Ok(recs.len())
    }

    /// Queues one cluster for a resync now: observed by a listing that starts after this
    /// call (the periodic resync of a converged cluster may use its fleet's listing of the
    /// last resync period instead).
    pub fn resync(&self, id: ClusterId) {
        self.inner.mark_acted(id);
        self.inner.queue.add(id);
    }

    /// Waits until no reconcile is queued or running (scheduled resyncs aside).
    pub async fn wait_idle(&self) {
        while !self.idle() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// True when no reconcile is queued or running (scheduled resyncs aside).
    pub fn idle(&self) -> bool {
        let (ready, _, active) = self.inner.queue.len();
        ready == 0 && active == 0
    }
}

/// How one reconcile ended (see [`Engine::next_reconcile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconcileOutcome {
    /// The cluster is at its desired state: looked at again at the next resync.
    Converged,
    /// Waiting on the cloud (machines booting or deleting): looked at again soon.
    Waiting,
    /// More to do at once.
    Progress,
    /// A step failed (shown in the cluster's conditions and events): retried with backoff.
    Failed,
    /// Nothing more to do ever (the cluster is deleted).
    Finished,
    /// The reconcile itself failed before it could record anything (store error, missing
    /// provider, a panic, fenced by another replica).
    Error {
        /// [`CoreError::reason`] of the error.
        reason: &'static str,
        /// Its message.
        message: String,
    },
}

impl ReconcileOutcome {
    pub(crate) fn of(r: &Result<Outcome>) -> Self {
        match r {
            Ok(Outcome::Converged) => ReconcileOutcome::Converged,
            Ok(Outcome::Waiting | Outcome::Parked) => ReconcileOutcome::Waiting,
            Ok(Outcome::Progress) => ReconcileOutcome::Progress,
            Ok(Outcome::Failed(_)) => ReconcileOutcome::Failed,
            Ok(Outcome::Finished) => ReconcileOutcome::Finished,
            Err(e) => ReconcileOutcome::Error {
                reason: e.reason(),
                message: e.to_string(),
            },
        }
    }

    /// Lower-case name (`converged`, `waiting`, `progress`, `failed`, `finished`, `error`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ReconcileOutcome::Converged => "converged",
            ReconcileOutcome::Waiting => "waiting",
            ReconcileOutcome::Progress => "progress",
            ReconcileOutcome::Failed => "failed",
            ReconcileOutcome::Finished => "finished",
            ReconcileOutcome::Error { .. } => "error",
        }
    }
}

/// One finished reconcile of a cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// The cluster.
    pub cluster: ClusterId,
    /// The engine's reconcile counter when it started (1, 2, ...).
    pub number: u64,
    /// How it ended.
    pub outcome: ReconcileOutcome,
    /// When the cluster is looked at again (`None`: only on a change).
    pub requeue_after: Option<Duration>,
    /// How long it took.
    pub duration: Duration,
}
