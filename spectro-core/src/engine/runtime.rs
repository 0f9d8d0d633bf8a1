//! The engine's shared state ([`Inner`]): what the API, the workers and the lease loop of one
//! engine see. Backoff and resync jitter live here; the loops are in `worker` and `lease`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
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
    /// Shared observation: the last fleet listing per fleet key, each behind its own lock
    /// (a listing in flight serves every cluster waiting for it).
    pub(crate) fleets: std::sync::Mutex<HashMap<String, FleetSlot>>,
    /// When each cluster last changed something in the cloud, or was first listed by this
    /// engine: a fleet listing that started earlier cannot serve it.
    pub(crate) acted: std::sync::Mutex<HashMap<ClusterId, DateTime<Utc>>>,
    /// This engine's share of every cloud account's request budget (`f64` bits): 1 / the
    /// live replicas on its store.
    pub(crate) budget_share: AtomicU64,
    /// The account (fleet) key of each cluster, as its last reconcile found it.
    pub(crate) account_of: std::sync::Mutex<HashMap<ClusterId, Arc<str>>>,
    /// Accounts the cloud (or the provider's request budget) asked to wait, until when: their
    /// clusters are not reconciled meanwhile, so they hold no worker that clusters of other
    /// accounts could use.
    pub(crate) paused: std::sync::Mutex<HashMap<Arc<str>, tokio::time::Instant>>,
    /// Reconciles running per account (fleet) key, and the clusters waiting for a slot.
    pub(crate) running: std::sync::Mutex<HashMap<Arc<str>, AccountSlots>>,
    /// The replica's name in call scopes (`local` without replicas).
    pub(crate) replica_name: Arc<str>,
    /// Opens workload clusters (`None`: machines count as nodes).
    pub(crate) workload: Option<Arc<dyn crate::workload::WorkloadConnector>>,
    /// The open workload connection of each cluster, with the access it was opened for.
    pub(crate) connections: std::sync::Mutex<HashMap<ClusterId, Connection>>,
    /// The cluster agents' key and deployment (`None`: no monitoring).
    pub(crate) agent: Option<super::monitoring::AgentSettings>,
    /// The most recent cloud calls per cluster (support bundles).
    pub(crate) call_log: std::sync::Mutex<
        HashMap<ClusterId, std::collections::VecDeque<super::support::CallRecord>>,
    >,
    /// Seals secrets at rest (the store holds the same keyring).
    pub(crate) keyring: Arc<crate::secret::Keyring>,
    /// Health transitions (wakes `watch_health`).
    pub(crate) health_tx: broadcast::Sender<super::monitoring::HealthChange>,
}

/// An open workload connection and the access key it was opened for.
pub(crate) type Connection = (String, Arc<dyn crate::workload::WorkloadCluster>);

/// A running reconcile of an account; frees its place when dropped.
pub(crate) struct AccountSlot<'a> {
    inner: &'a Inner,
    key: Arc<str>,
}

/// The reconciles of one account: how many run, which clusters wait for a slot.
#[derive(Default)]
pub(crate) struct AccountSlots {
    running: usize,
    parked: std::collections::VecDeque<ClusterId>,
}

impl Drop for AccountSlot<'_> {
    fn drop(&mut self) {
        let next = {
            let mut running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
            let Some(slots) = running.get_mut(&self.key) else {
                return;
            };
            slots.running = slots.running.saturating_sub(1);
            let next = slots.parked.pop_front();
            if slots.running == 0 && slots.parked.is_empty() {
                running.remove(&self.key);
            }
            next
        };
        if let Some(id) = next {
            self.inner.queue.add(id);
        }
    }
}

/// One fleet's last listing, behind the lock that makes listings of one fleet one at a time.
pub(crate) type FleetSlot = Arc<tokio::sync::Mutex<Option<FleetListing>>>;

/// What one fleet listing saw, and when it started.
pub(crate) struct FleetListing {
    pub(crate) started: DateTime<Utc>,
    pub(crate) machines: HashMap<ClusterId, Vec<crate::provider::Machine>>,
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Arc<dyn Store>,
        providers: HashMap<CloudType, Arc<dyn CloudProvider>>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        random: seed::Randomness,
        workload: Option<Arc<dyn crate::workload::WorkloadConnector>>,
        agent: Option<super::monitoring::AgentSettings>,
        keyring: Arc<crate::secret::Keyring>,
    ) -> Self {
        let replica_name = config
            .replica
            .as_ref()
            .map_or_else(|| Arc::from("local"), |r| Arc::from(r.id.as_str()));
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
            fleets: Default::default(),
            acted: Default::default(),
            budget_share: AtomicU64::new(1f64.to_bits()),
            replica_name,
            account_of: Default::default(),
            running: Default::default(),
            paused: Default::default(),
            workload,
            connections: Default::default(),
            agent,
            call_log: Default::default(),
            keyring,
            health_tx: broadcast::channel(1024).0,
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

    /// The lock and last listing of a fleet.
    pub(crate) fn fleet_slot(&self, key: &str) -> FleetSlot {
        self.fleets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// When the cluster last acted (or was first listed here); `None`: never seen.
    pub(crate) fn acted_at(&self, id: ClusterId) -> Option<DateTime<Utc>> {
        self.acted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    /// Records that the cluster changed something in the cloud now.
    pub(crate) fn mark_acted(&self, id: ClusterId) {
        let now = self.clock.now();
        self.acted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, now);
    }

    /// Forgets what this engine knows about a cluster (deleted, or owned by another replica).
    pub(crate) fn forget(&self, id: ClusterId) {
        self.call_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.acted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.account_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Records which account (fleet) a cluster's calls go to.
    pub(crate) fn note_account(&self, id: ClusterId, key: &str) {
        let mut map = self.account_of.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&id).is_none_or(|k| &**k != key) {
            map.insert(id, Arc::from(key));
        }
    }

    /// A reconcile slot of the account `key`, or `None` when the account already runs its
    /// share of the workers (`id` is then parked: queued again when a slot frees).
    pub(crate) fn account_slot(&self, key: &str, id: ClusterId) -> Option<AccountSlot<'_>> {
        let cap = self
            .config
            .account_concurrency
            .unwrap_or(self.config.concurrency / 2)
            .max(1);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let key: Arc<str> = Arc::from(key);
        let slots = running.entry(key.clone()).or_default();
        if slots.running >= cap {
            if !slots.parked.contains(&id) {
                slots.parked.push_back(id);
            }
            return None;
        }
        slots.running += 1;
        Some(AccountSlot { inner: self, key })
    }

    /// The cloud asked the cluster's account to wait `after`: every cluster of it waits.
    pub(crate) fn pause_account(&self, id: ClusterId, after: Duration) {
        let Some(key) = self
            .account_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
        else {
            return;
        };
        let until = crate::clock::instant_now() + after;
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::clock::instant_now();
        paused.retain(|_, t| *t > now);
        let t = paused.entry(key).or_insert(until);
        *t = (*t).max(until);
    }

    /// How long the cluster's account still waits, if it does.
    pub(crate) fn account_pause(&self, id: ClusterId) -> Option<Duration> {
        let key = self
            .account_of
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()?;
        let until = *self
            .paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)?;
        let left = until.saturating_duration_since(crate::clock::instant_now());
        (!left.is_zero()).then_some(left)
    }

    /// The scope of every cloud call made for `id`: fairness key and budget share.
    pub(crate) fn call_scope(&self, id: ClusterId) -> crate::budget::CallScope {
        crate::budget::CallScope {
            cluster: Some(id),
            replica: self.replica_name.clone(),
            share: f64::from_bits(self.budget_share.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }

    pub(crate) fn succeeded(&self, id: ClusterId) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
