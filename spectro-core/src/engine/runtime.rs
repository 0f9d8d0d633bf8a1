//! The engine's shared state ([`Inner`]): what the API, the workers and the lease loop of one
//! engine see. Backoff and resync jitter live here; the loops are in `worker` and `lease`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::config::EngineConfig;
use super::event::Event;
use super::metrics::Metrics;
use super::queue::WorkQueue;
use super::seed;
use super::ReconcileReport;
use crate::clock::Clock;
use crate::model::CloudType;
use crate::provider::{CloudProvider, ClusterId};
use crate::store::Store;

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) providers: HashMap<CloudType, Arc<dyn CloudProvider>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    pub(crate) queue: WorkQueue,
    failures: std::sync::Mutex<HashMap<ClusterId, u32>>,
    /// Highest event sequence number committed by this engine (wakes event watchers).
    pub(crate) last_seq: watch::Sender<u64>,
    /// Bumped after every reconcile (wakes `wait_for`).
    pub(crate) changes: watch::Sender<u64>,
    /// Every finished reconcile (wakes `next_reconcile`).
    pub(crate) reconciled: broadcast::Sender<ReconcileReport>,
    pub(crate) random: seed::Randomness,
    pub(crate) created: AtomicU64,
    pub(crate) reconciles: AtomicU64,
    /// Set by `shutdown`: the API refuses new work, the workers finish what they run.
    pub(crate) stopping: AtomicBool,
    /// Replica mode: the clusters this replica holds, with their fencing tokens.
    pub(crate) owned: std::sync::Mutex<HashMap<ClusterId, u64>>,
    pub(crate) lease_wake: tokio::sync::Notify,
    /// When the leases were last renewed: past the TTL this replica stops acting on its
    /// own (self-fencing), before another replica can have taken over.
    pub(crate) renewed: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Why each cluster is not converged, as the last reconcile saw it (`Engine::explain`).
    pub(crate) blockers: std::sync::Mutex<HashMap<ClusterId, super::explain::Observed>>,
    pub(crate) metrics: Metrics,
}

impl Inner {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        providers: HashMap<CloudType, Arc<dyn CloudProvider>>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        random: seed::Randomness,
    ) -> Self {
        Inner {
            store,
            providers,
            clock,
            config,
            queue: WorkQueue::default(),
            failures: Default::default(),
            last_seq: watch::channel(0).0,
            changes: watch::channel(0).0,
            reconciled: broadcast::channel(1024).0,
            random,
            created: AtomicU64::new(0),
            reconciles: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            owned: Default::default(),
            lease_wake: tokio::sync::Notify::new(),
            renewed: std::sync::Mutex::new(None),
            blockers: Default::default(),
            metrics: Metrics::default(),
        }
    }

    pub(crate) fn published(&self, events: &[Event]) {
        if let Some(max) = events.iter().map(|e| e.seq).max() {
            self.last_seq.send_if_modified(|v| {
                if max > *v {
                    *v = max;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Jitter of a cluster's resync, from the engine clock's time (deterministic when seeded).
    pub(crate) fn resync_jitter(&self, id: ClusterId) -> f64 {
        let t = self.clock.now();
        let salt = t.timestamp_nanos_opt().unwrap_or(t.timestamp()) as u64;
        self.random.unit(id, salt)
    }

    /// Exponential backoff with jitter and a cap, per cluster.
    pub(crate) fn backoff(&self, id: ClusterId) -> Duration {
        let n = {
            let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = f.entry(id).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let base = self.config.backoff_base.as_secs_f64() * 2f64.powi((n - 1).min(30) as i32);
        let capped = base.min(self.config.backoff_cap.as_secs_f64());
        Duration::try_from_secs_f64(capped * (0.5 + 0.5 * self.random.unit(id, u64::from(n))))
            .unwrap_or(self.config.backoff_cap)
    }

    /// Consecutive failed reconciles of a cluster.
    pub(crate) fn failures(&self, id: ClusterId) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn succeeded(&self, id: ClusterId) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
