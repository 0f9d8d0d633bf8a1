//! The reconcile engine an application embeds.
//!
//! ```text
//! API (create/update/delete/abort) ─▶ Store ─▶ WorkQueue ─▶ workers ─▶ executor
//!                                                                      │ plan() (pure)
//!                                                                      ▼
//!                                                        CloudProvider actions
//!                                                                      │
//!                            status + events (one atomic commit) ◀─────┘
//! ```

pub use crate::records::{condition, event, status};
pub mod executor;
pub mod planner;
pub mod queue;
mod seed;
pub mod update;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{self, Stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::{Clock, TokioClock};
use crate::error::{CoreError, Result};
use crate::model::profile::drop_conflicting_overrides;
use crate::model::{
    CloudAccount, CloudType, Cluster, ClusterProfile, ConflictResolution, IpPool,
    PrivateCloudGateway,
};
use crate::provider::{CloudProvider, ClusterId};
use crate::secret::with_secrets_revealed;
use crate::store::{ObjectKind, Store};
use crate::validate::{self, Catalog, Violation};

use self::event::Event;
use self::executor::Outcome;
use self::planner::UpdatePreview;
use self::queue::WorkQueue;
use self::status::{ClusterRecord, ClusterStatus, Lifecycle, Phase};

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Clusters reconciled at once.
    pub concurrency: usize,
    /// Resync period of a converged cluster (jittered ±10%).
    pub resync_interval: Duration,
    /// Look-again delay while waiting on the cloud (machines booting, deleting).
    pub poll_interval: Duration,
    /// First backoff after a failure.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_cap: Duration,
    /// Infrastructure is re-checked at most this often once ready (spec changes force it).
    pub infra_resync: Duration,
    /// A machine still booting after this long is replaced.
    pub machine_timeout: Duration,
    /// Replica mode: share the clusters with other engines on the same database through
    /// leases. `None`: this engine owns every cluster (one process).
    pub replica: Option<ReplicaConfig>,
    /// Deterministic mode: cluster ids, machine names, idempotency tokens and jitter derive
    /// from this seed (and what they are for), so a run on the simulated cloud with the same
    /// seed replays exactly. `None` (production): random.
    pub seed: Option<u64>,
}

/// How a replica shares work with the others.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// This replica's unique name (lease owner).
    pub id: String,
    /// Lease lifetime: a dead replica's clusters are taken over within it. Renewed every
    /// third of it.
    pub lease_ttl: Duration,
    /// Most clusters one replica holds (spreads the work).
    pub max_clusters: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            concurrency: 16,
            resync_interval: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            infra_resync: Duration::from_secs(3600),
            machine_timeout: Duration::from_secs(20 * 60),
            replica: None,
            seed: None,
        }
    }
}

impl EngineConfig {
    /// Settings for the simulated cloud without latency: no waiting between steps.
    pub fn fast() -> Self {
        EngineConfig {
            poll_interval: Duration::from_millis(2),
            backoff_base: Duration::from_millis(5),
            backoff_cap: Duration::from_millis(200),
            ..Default::default()
        }
    }
}

impl EngineConfig {
    /// Settings for local emulators of real clouds (moto, vcsim): 50 ms polling and backoff,
    /// capped at 1 s, so tests converge quickly without hammering the peer.
    pub fn for_emulators() -> Self {
        EngineConfig {
            poll_interval: Duration::from_millis(50),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(1),
            ..Default::default()
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) providers: HashMap<CloudType, Arc<dyn CloudProvider>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    queue: WorkQueue,
    failures: std::sync::Mutex<HashMap<ClusterId, u32>>,
    last_seq: watch::Sender<u64>,
    changes: watch::Sender<u64>,
    pub(crate) random: seed::Randomness,
    created: AtomicU64,
    reconciles: AtomicU64,
    /// Replica mode: the clusters this replica holds, with their fencing tokens.
    owned: std::sync::Mutex<HashMap<ClusterId, u64>>,
    lease_wake: tokio::sync::Notify,
    /// When the leases were last renewed: past the TTL this replica stops acting on its
    /// own (self-fencing), before another replica can have taken over.
    renewed: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Inner {
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
    fn resync_jitter(&self, id: ClusterId) -> f64 {
        let t = self.clock.now();
        let salt = t.timestamp_nanos_opt().unwrap_or(t.timestamp()) as u64;
        self.random.unit(id, salt)
    }

    /// Exponential backoff with jitter and a cap, per cluster.
    fn backoff(&self, id: ClusterId) -> Duration {
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

    fn succeeded(&self, id: ClusterId) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// True when this engine may still act for the cluster (always, without replicas).
    pub(crate) fn may_act(&self, id: ClusterId) -> bool {
        self.ownership(id).is_some()
    }

    /// The fencing token of an owned cluster; `Some(None)` when no leases are used.
    fn ownership(&self, id: ClusterId) -> Option<Option<u64>> {
        let Some(rc) = &self.config.replica else {
            return Some(None);
        };
        let fresh = self
            .renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < rc.lease_ttl.saturating_mul(2) / 3);
        if !fresh {
            return None;
        }
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|f| Some(*f))
    }

    /// Replica mode: renew and claim leases every third of the TTL (or when woken), queue
    /// newly claimed clusters, forget lost ones.
    async fn lease_loop(self: Arc<Self>, rc: ReplicaConfig) {
        loop {
            let asked = tokio::time::Instant::now();
            match self
                .store
                .acquire_leases(&rc.id, rc.lease_ttl, rc.max_clusters)
                .await
            {
                Ok(leases) => {
                    *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(asked);
                    let fresh: HashMap<ClusterId, u64> =
                        leases.iter().map(|l| (l.cluster_id, l.fence)).collect();
                    let gained: Vec<ClusterId> = {
                        let mut owned = self.owned.lock().unwrap_or_else(|e| e.into_inner());
                        let gained = fresh
                            .iter()
                            .filter(|(id, f)| owned.get(id) != Some(f))
                            .map(|(id, _)| *id)
                            .collect();
                        *owned = fresh;
                        gained
                    };
                    for id in gained {
                        self.queue.add(id);
                    }
                }
                Err(e) => tracing::warn!(replica = %rc.id, error = %e, "lease renewal failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(rc.lease_ttl / 3) => {}
                _ = self.lease_wake.notified() => {}
            }
        }
    }

    /// Cross-process change notifications: the owner reconciles at once; an unknown cluster
    /// (new) makes this replica try to claim it.
    async fn change_loop(
        self: Arc<Self>,
        mut changes: futures_util::stream::BoxStream<'static, ClusterId>,
    ) {
        use futures_util::StreamExt;
        while let Some(id) = changes.next().await {
            if id.0.is_nil() {
                // The notification connection was re-established: changes may have been
                // missed, so every owned cluster is looked at again.
                let owned: Vec<ClusterId> = self
                    .owned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .copied()
                    .collect();
                for id in owned {
                    self.queue.add(id);
                }
                self.lease_wake.notify_one();
                continue;
            }
            match self.ownership(id) {
                Some(_) => self.queue.add(id),
                None => self.lease_wake.notify_one(),
            }
        }
    }

    async fn worker(self: Arc<Self>) {
        while let Some(id) = self.queue.next().await {
            let Some(fence) = self.ownership(id) else {
                // Another replica holds it; or this one does but could not renew its leases
                // lately (self-fenced): look again once renewals may have resumed.
                let held = self
                    .owned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&id);
                let retry = self
                    .config
                    .replica
                    .as_ref()
                    .filter(|_| held)
                    .map(|rc| rc.lease_ttl / 3);
                self.queue.done(id, retry);
                continue;
            };
            self.reconciles.fetch_add(1, Ordering::Relaxed);
            let outcome = {
                use futures_util::FutureExt;
                std::panic::AssertUnwindSafe(executor::reconcile(&self, id, fence))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(CoreError::InvalidState(format!(
                            "the reconcile of cluster {id} panicked"
                        )))
                    })
            };
            let requeue = match outcome {
                Ok(Outcome::Finished) => {
                    self.succeeded(id);
                    self.queue.forget(id);
                    None
                }
                Ok(Outcome::Converged) => {
                    self.succeeded(id);
                    let r = self.config.resync_interval.as_secs_f64();
                    Some(
                        Duration::try_from_secs_f64(r * (0.9 + 0.2 * self.resync_jitter(id)))
                            .unwrap_or(self.config.resync_interval),
                    )
                }
                Ok(Outcome::Waiting) => {
                    self.succeeded(id);
                    Some(self.config.poll_interval)
                }
                Ok(Outcome::Progress) => {
                    self.succeeded(id);
                    Some(Duration::ZERO)
                }
                Ok(Outcome::Failed(after)) => {
                    let b = self.backoff(id);
                    Some(after.map_or(b, |a| a.max(b.min(a.saturating_mul(2)))))
                }
                Err(CoreError::Fenced { .. }) => {
                    // Taken over by another replica: let go.
                    self.owned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    None
                }
                Err(e) => {
                    tracing::warn!(cluster = %id, error = %e, "reconcile failed");
                    Some(self.backoff(id))
                }
            };
            self.changes.send_modify(|v| *v += 1);
            self.queue.done(id, requeue);
        }
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    providers: HashMap<CloudType, Arc<dyn CloudProvider>>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
}

impl EngineBuilder {
    /// Registers the provider for its cloud.
    pub fn provider(mut self, p: Arc<dyn CloudProvider>) -> Self {
        self.providers.insert(p.cloud(), p);
        self
    }

    /// Registers a provider for another cloud than its own (e.g. the simulated cloud).
    pub fn provider_for(mut self, cloud: CloudType, p: Arc<dyn CloudProvider>) -> Self {
        self.providers.insert(cloud, p);
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, c: Arc<dyn Clock>) -> Self {
        self.clock = c;
        self
    }

    /// Sets the tuning.
    pub fn config(mut self, c: EngineConfig) -> Self {
        self.config = c;
        self
    }

    /// Starts the workers and queues every live cluster (a restart resumes everything).
    pub async fn start(self) -> Result<Engine> {
        let fallback = Utc::now().timestamp_nanos_opt().unwrap_or(7) as u64;
        let random = seed::Randomness::new(self.config.seed, fallback);
        let inner = Arc::new(Inner {
            store: self.store,
            providers: self.providers,
            clock: self.clock,
            config: self.config,
            queue: WorkQueue::default(),
            failures: Default::default(),
            last_seq: watch::channel(0).0,
            changes: watch::channel(0).0,
            random,
            created: AtomicU64::new(0),
            reconciles: AtomicU64::new(0),
            owned: Default::default(),
            lease_wake: tokio::sync::Notify::new(),
            renewed: std::sync::Mutex::new(None),
        });
        for rec in inner.store.list_clusters(false).await? {
            inner.queue.add(rec.id);
        }
        let mut workers: Vec<JoinHandle<()>> = (0..inner.config.concurrency.max(1))
            .map(|_| tokio::spawn(inner.clone().worker()))
            .collect();
        if let Some(rc) = inner.config.replica.clone() {
            if let Some(changes) = inner.store.changes().await? {
                workers.push(tokio::spawn(inner.clone().change_loop(changes)));
            }
            workers.push(tokio::spawn(inner.clone().lease_loop(rc)));
        }
        Ok(Engine { inner, workers })
    }
}

/// The engine: an application's handle to declare clusters and watch them converge.
///
/// Dropping it stops the workers at their next await point (as a crash would); call
/// [`Engine::shutdown`] to let running reconciles finish first.
pub struct Engine {
    inner: Arc<Inner>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .field("queue", &self.inner.queue)
            .finish()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inner.queue.close();
        for w in &self.workers {
            w.abort();
        }
    }
}

pub use self::update::UpdateNotification;

fn invalid(kind: String, violations: Vec<Violation>) -> Result<()> {
    if violations.is_empty() {
        Ok(())
    } else {
        Err(CoreError::Invalid { kind, violations })
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|source| CoreError::Corrupt { what, source })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    with_secrets_revealed(|| serde_json::to_value(v)).map_err(|source| CoreError::Corrupt {
        what: "document",
        source,
    })
}

fn profile_key(name: &str, version: &str) -> String {
    format!("{name}@{version}")
}

impl Engine {
    /// Starts building an engine on `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            providers: HashMap::new(),
            clock: Arc::new(TokioClock::new()),
            config: EngineConfig::default(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Reconciles run so far.
    pub fn reconciles(&self) -> u64 {
        self.inner.reconciles.load(Ordering::Relaxed)
    }

    /// Stops handing out work, waits for running reconciles to finish and (replicas) gives
    /// up the leases so the others take over at once.
    pub async fn shutdown(mut self) {
        self.inner.queue.close();
        let n = self.inner.config.concurrency.max(1);
        let mut all = std::mem::take(&mut self.workers);
        for extra in all.split_off(n.min(all.len())) {
            extra.abort();
        }
        for w in all {
            let _ = w.await;
        }
        if let Some(rc) = &self.inner.config.replica {
            let _ = self.inner.store.release_leases(&rc.id).await;
        }
    }

    /// Replica mode: the clusters this replica holds now.
    pub fn owned_clusters(&self) -> Vec<ClusterId> {
        self.inner
            .owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    // ----- catalog -----

    /// Creates or replaces a cluster profile (same name and version = a new revision:
    /// clusters on it get an update notification).
    pub async fn put_profile(&self, p: &ClusterProfile) -> Result<u64> {
        invalid(
            format!("cluster profile {}", p.name),
            validate::validate_profile(p),
        )?;
        let key = profile_key(&p.name, &p.version);
        let rev = self
            .inner
            .store
            .put_object(ObjectKind::Profile, &key, &encode(p)?, None)
            .await?;
        // Clusters on it learn of the new revision at once (update notification + event).
        let reference = p.reference();
        for c in self.inner.store.list_clusters(false).await? {
            if c.spec.profile == reference {
                self.inner.queue.add(c.id);
            }
        }
        Ok(rev)
    }

    /// Deletes a profile version. Refused, naming them, while live clusters' specs name it
    /// (clusters keep a snapshot of the profile they run, so older versions can go).
    pub async fn delete_profile(&self, name: &str, version: &str) -> Result<()> {
        let reference = crate::model::ProfileRef {
            name: name.to_string(),
            version: version.to_string(),
        };
        let users = self.cluster_users(|c| c.profile == reference).await?;
        self.delete_catalog_object(
            ObjectKind::Profile,
            "cluster profile",
            &profile_key(name, version),
            users,
        )
        .await
    }

    /// Deletes a cloud account. Refused, naming them, while live clusters use it.
    pub async fn delete_cloud_account(&self, name: &str) -> Result<()> {
        let users = self.cluster_users(|c| c.cloud_account == name).await?;
        self.delete_catalog_object(ObjectKind::CloudAccount, "cloud account", name, users)
            .await
    }

    /// Deletes an IP pool. Refused while live clusters' placements name it or any of its
    /// addresses is still allocated.
    pub async fn delete_ip_pool(&self, name: &str) -> Result<()> {
        let mut users = self
            .cluster_users(|c| {
                c.node_pools
                    .iter()
                    .flat_map(|p| &p.placements)
                    .any(|d| d.ip_pool.as_deref() == Some(name))
            })
            .await?;
        let leases = self.inner.store.ip_leases(Some(name), None).await?;
        if users.is_empty() && !leases.is_empty() {
            users.push(format!("{} allocated address(es)", leases.len()));
        }
        self.delete_catalog_object(ObjectKind::IpPool, "IP pool", name, users)
            .await
    }

    /// Deletes a private cloud gateway. Refused while cloud accounts that reach vCenter
    /// through it, the clusters on those accounts, or IP pools linked to it exist.
    pub async fn delete_gateway(&self, name: &str) -> Result<()> {
        let mut accounts = Vec::new();
        for o in self
            .inner
            .store
            .list_objects(ObjectKind::CloudAccount)
            .await?
        {
            let a: CloudAccount = decode("cloud account", o.body)?;
            if a.gateway() == Some(name) {
                accounts.push(a.name.clone());
            }
        }
        let mut users = self
            .cluster_users(|c| accounts.contains(&c.cloud_account))
            .await?;
        users.extend(accounts.iter().map(|a| format!("cloud account {a}")));
        for o in self.inner.store.list_objects(ObjectKind::IpPool).await? {
            let p: IpPool = decode("ip pool", o.body)?;
            if p.gateway_name == name {
                users.push(format!("IP pool {}", p.name));
            }
        }
        self.delete_catalog_object(ObjectKind::Gateway, "gateway", name, users)
            .await
    }

    /// `cluster NAME` for every live cluster whose spec matches.
    async fn cluster_users(&self, uses: impl Fn(&Cluster) -> bool) -> Result<Vec<String>> {
        Ok(self
            .inner
            .store
            .list_clusters(false)
            .await?
            .into_iter()
            .filter(|r| uses(&r.spec))
            .map(|r| format!("cluster {}", r.spec.name))
            .collect())
    }

    async fn delete_catalog_object(
        &self,
        kind: ObjectKind,
        what: &'static str,
        name: &str,
        users: Vec<String>,
    ) -> Result<()> {
        if !users.is_empty() {
            return Err(CoreError::InUse {
                kind: what,
                name: name.to_string(),
                users,
            });
        }
        if self.inner.store.delete_object(kind, name).await? {
            Ok(())
        } else {
            Err(CoreError::NotFound {
                kind: what,
                name: name.to_string(),
            })
        }
    }

    /// Reads a profile and its revision.
    pub async fn profile(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<(ClusterProfile, u64)>> {
        match self
            .inner
            .store
            .get_object(ObjectKind::Profile, &profile_key(name, version))
            .await?
        {
            Some(o) => Ok(Some((decode("profile", o.body)?, o.revision))),
            None => Ok(None),
        }
    }

    /// Creates or replaces a cloud account (its secrets are stored, never shown).
    pub async fn put_cloud_account(&self, a: &CloudAccount) -> Result<u64> {
        invalid(
            format!("cloud account {}", a.name),
            validate::validate_cloud_account(a),
        )?;
        self.inner
            .store
            .put_object(ObjectKind::CloudAccount, &a.name, &encode(a)?, None)
            .await
    }

    /// Asks the account's cloud whether the credentials work.
    pub async fn verify_cloud_account(&self, name: &str) -> Result<()> {
        let a = executor::load_account(&self.inner, name).await?;
        let p = self
            .inner
            .providers
            .get(&a.cloud())
            .ok_or(CoreError::NoProvider(a.cloud()))?;
        p.validate_account(&a).await.map_err(CoreError::from)
    }

    /// Creates or updates an IP pool.
    pub async fn put_ip_pool(&self, p: &IpPool) -> Result<u64> {
        let mut v = validate::validate_ip_pool(p);
        let old = self
            .inner
            .store
            .get_object(ObjectKind::IpPool, &p.name)
            .await?;
        if let Some(o) = &old {
            let old: IpPool = decode("ip pool", o.body.clone())?;
            v.extend(validate::validate_ip_pool_update(&old, p));
        }
        invalid(format!("IP pool {}", p.name), v)?;
        self.inner
            .store
            .put_object(
                ObjectKind::IpPool,
                &p.name,
                &encode(p)?,
                Some(old.map_or(0, |o| o.revision)),
            )
            .await
    }

    /// Creates or updates (resizes 1 → 3) a private cloud gateway.
    pub async fn put_gateway(&self, g: &PrivateCloudGateway) -> Result<u64> {
        let mut v = validate::validate_gateway(g);
        let old = self
            .inner
            .store
            .get_object(ObjectKind::Gateway, &g.name)
            .await?;
        if let Some(o) = &old {
            let old: PrivateCloudGateway = decode("gateway", o.body.clone())?;
            v.extend(validate::validate_gateway_update(&old, g));
        }
        invalid(format!("gateway {}", g.name), v)?;
        self.inner
            .store
            .put_object(
                ObjectKind::Gateway,
                &g.name,
                &encode(g)?,
                Some(old.map_or(0, |o| o.revision)),
            )
            .await
    }

    async fn catalog_for(&self, c: &Cluster) -> Result<Catalog> {
        let mut cat = Catalog {
            strict: true,
            ..Default::default()
        };
        if let Some((p, _)) = self.profile(&c.profile.name, &c.profile.version).await? {
            cat.profiles.insert((p.name.clone(), p.version.clone()), p);
        }
        if let Some(o) = self
            .inner
            .store
            .get_object(ObjectKind::CloudAccount, &c.cloud_account)
            .await?
        {
            let a: CloudAccount = decode("cloud account", o.body)?;
            cat.accounts.insert(a.name.clone(), a);
        }
        for pool in &c.node_pools {
            for d in &pool.placements {
                if let Some(name) = &d.ip_pool {
                    if let Some(o) = self
                        .inner
                        .store
                        .get_object(ObjectKind::IpPool, name)
                        .await?
                    {
                        cat.ip_pools
                            .insert(name.clone(), decode("ip pool", o.body)?);
                    }
                }
            }
        }
        Ok(cat)
    }

    // ----- clusters -----

    /// Declares a new cluster; provisioning starts at once. Returns its id.
    pub async fn create_cluster(&self, spec: &Cluster) -> Result<ClusterId> {
        let cat = self.catalog_for(spec).await?;
        invalid(
            format!("cluster {}", spec.name),
            validate::validate_cluster(spec, &cat),
        )?;
        let (profile, rev) = self
            .profile(&spec.profile.name, &spec.profile.version)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "cluster profile",
                name: profile_key(&spec.profile.name, &spec.profile.version),
            })?;
        if !self.inner.providers.contains_key(&spec.cloud_type()) {
            return Err(CoreError::NoProvider(spec.cloud_type()));
        }
        let rec = ClusterRecord {
            id: ClusterId(
                self.inner.random.uuid(&[
                    b"cluster",
                    spec.name.as_bytes(),
                    &self
                        .inner
                        .created
                        .fetch_add(1, Ordering::Relaxed)
                        .to_le_bytes(),
                ]),
            ),
            generation: 1,
            spec: spec.clone(),
            profile,
            profile_revision: rev,
            lifecycle: Lifecycle::Active,
            status: ClusterStatus::default(),
            created_at: self.inner.clock.now(),
        };
        self.inner.store.insert_cluster(&rec).await?;
        self.inner.queue.add(rec.id);
        self.inner.lease_wake.notify_one();
        Ok(rec.id)
    }

    /// Reads a cluster by id.
    pub async fn cluster(&self, id: ClusterId) -> Result<ClusterRecord> {
        self.inner
            .store
            .get_cluster(id)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "cluster",
                name: id.to_string(),
            })
    }

    /// Reads a live cluster by name.
    pub async fn cluster_by_name(&self, name: &str) -> Result<ClusterRecord> {
        self.inner
            .store
            .find_cluster(name)
            .await?
            .ok_or_else(|| CoreError::NotFound {
                kind: "cluster",
                name: name.to_string(),
            })
    }

    /// Lists live clusters.
    pub async fn clusters(&self) -> Result<Vec<ClusterRecord>> {
        self.inner.store.list_clusters(false).await
    }

    async fn modify(
        &self,
        id: ClusterId,
        f: impl Fn(&mut ClusterRecord) -> Result<()>,
    ) -> Result<ClusterRecord> {
        // Optimistic concurrency: re-read and retry when another writer got in between.
        for _ in 0..8 {
            let mut rec = self.cluster(id).await?;
            let expected = rec.generation;
            f(&mut rec)?;
            rec.generation = expected + 1;
            match self.inner.store.update_cluster(&rec, expected).await {
                Ok(()) => {
                    self.inner.queue.add(id);
                    return Ok(rec);
                }
                Err(CoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CoreError::InvalidState(format!(
            "cluster {id} keeps changing concurrently: try again"
        )))
    }

    /// Checks an update without applying it and returns what it would do (dry run): per
    /// pool no change, scale or node replacement, and the machines created and deleted.
    pub async fn plan_update(&self, id: ClusterId, spec: &Cluster) -> Result<UpdatePreview> {
        let rec = self.cluster(id).await?;
        self.check_update(&rec, spec).await?;
        // A new profile version in the spec is applied as a profile update: show what it does.
        let target = if spec.profile == rec.profile.reference() {
            rec.profile.clone()
        } else {
            self.profile(&spec.profile.name, &spec.profile.version)
                .await?
                .map(|(p, _)| p)
                .ok_or_else(|| CoreError::NotFound {
                    kind: "cluster profile",
                    name: spec.profile.to_string(),
                })?
        };
        Ok(planner::preview_update(
            &rec.spec,
            &rec.profile,
            spec,
            &target,
        ))
    }

    async fn check_update(&self, rec: &ClusterRecord, spec: &Cluster) -> Result<()> {
        if rec.lifecycle.is_deleting() || rec.status.phase == Phase::Deleted {
            return Err(CoreError::InvalidState(format!(
                "cluster {} is being deleted: it cannot be updated",
                rec.spec.name
            )));
        }
        let mut cat = self.catalog_for(spec).await?;
        cat.profiles.insert(
            (rec.profile.name.clone(), rec.profile.version.clone()),
            rec.profile.clone(),
        );
        let mut v = validate::validate_cluster(spec, &cat);
        v.extend(validate::validate_cluster_update(&rec.spec, spec));
        invalid(format!("update of cluster {}", rec.spec.name), v)
    }

    /// Applies a new spec (scale, add/remove pools, add zones, reconfigure machines).
    /// Returns the new generation.
    pub async fn update_cluster(&self, id: ClusterId, spec: &Cluster) -> Result<u64> {
        let rec = self.cluster(id).await?;
        self.check_update(&rec, spec).await?;
        let spec = spec.clone();
        let rec = self
            .modify(id, |r| {
                if r.lifecycle.is_deleting() {
                    return Err(CoreError::InvalidState(format!(
                        "cluster {} is being deleted: it cannot be updated",
                        r.spec.name
                    )));
                }
                r.spec = spec.clone();
                Ok(())
            })
            .await?;
        Ok(rec.generation)
    }

    /// Overrides a pack's values on a cluster (applied at once).
    pub async fn set_pack_values(&self, id: ClusterId, pack: &str, yaml: &str) -> Result<u64> {
        let mut spec = self.cluster(id).await?.spec;
        if yaml.trim().is_empty() {
            spec.pack_values.remove(pack);
        } else {
            spec.pack_values.insert(pack.to_string(), yaml.to_string());
        }
        self.update_cluster(id, &spec).await
    }

    /// Deletes a provisioned cluster. A cluster still provisioning must be aborted instead.
    pub async fn delete_cluster(&self, id: ClusterId) -> Result<()> {
        self.modify(id, |r| {
            if r.status.phase == Phase::Deleted || r.lifecycle.is_deleting() {
                return Err(CoreError::InvalidState(format!(
                    "cluster {} is already being deleted",
                    r.spec.name
                )));
            }
            if !r.status.provisioned {
                return Err(CoreError::InvalidState(format!(
                    "cluster {} is still provisioning: delete is only available for provisioned clusters; use abort to stop provisioning and delete what was created",
                    r.spec.name
                )));
            }
            r.lifecycle = Lifecycle::Deleting;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Aborts the provisioning of a cluster: stops it and deletes everything created so far.
    pub async fn abort_cluster(&self, id: ClusterId) -> Result<()> {
        self.modify(id, |r| {
            if r.status.phase == Phase::Deleted || r.lifecycle.is_deleting() {
                return Err(CoreError::InvalidState(format!(
                    "cluster {} is already being deleted",
                    r.spec.name
                )));
            }
            if r.status.provisioned {
                return Err(CoreError::InvalidState(format!(
                    "cluster {} is provisioned: abort only applies while provisioning; use delete",
                    r.spec.name
                )));
            }
            r.lifecycle = Lifecycle::Aborting;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// The admin kubeconfig of a cluster (client certificate signed by its CA, server = its
    /// API endpoint). Available once the infrastructure reports the endpoint.
    pub async fn kubeconfig(&self, id: ClusterId) -> Result<crate::secret::Secret> {
        let rec = self.cluster(id).await?;
        if rec.status.phase == Phase::Deleted {
            return Err(CoreError::InvalidState(format!(
                "cluster {} is deleted",
                rec.spec.name
            )));
        }
        let endpoint = rec
            .status
            .infrastructure
            .as_ref()
            .and_then(|i| i.endpoint.clone())
            .ok_or_else(|| {
                CoreError::InvalidState(format!(
                    "cluster {} has no API endpoint yet",
                    rec.spec.name
                ))
            })?;
        let pki = executor::ensure_pki(&self.inner, id).await?;
        Ok(pki.admin_kubeconfig(&rec.spec.name, &endpoint))
    }

    /// The pending profile update of a cluster: a new revision of the profile it runs, or
    /// the new profile version its spec names (`update_cluster` with another
    /// `profile.version`). The changes, the conflicts with the cluster's overrides and what
    /// applying it does per pool. `None` when the cluster runs what its spec names.
    pub async fn update_notification(&self, id: ClusterId) -> Result<Option<UpdateNotification>> {
        let rec = self.cluster(id).await?;
        Ok(update::pending(&self.inner.store, &rec)
            .await?
            .and_then(|(target, rev)| update::notification(&rec, &target, rev)))
    }

    /// Applies the pending profile update. With conflicts, `resolution` says whether the
    /// cluster keeps its overrides, takes the profile's values or uses edited overrides;
    /// without one it fails and names the conflicting keys.
    pub async fn apply_profile_update(
        &self,
        id: ClusterId,
        resolution: Option<ConflictResolution>,
    ) -> Result<u64> {
        let rec = self.cluster(id).await?;
        let pending = update::pending(&self.inner.store, &rec).await?;
        let Some((n, target)) = pending.and_then(|(target, rev)| {
            update::notification(&rec, &target, rev).map(|n| (n, target))
        }) else {
            return Err(CoreError::InvalidState(
                "no profile update is pending".into(),
            ));
        };
        if !n.conflicts.is_empty() && resolution.is_none() {
            let list: Vec<String> = n
                .conflicts
                .iter()
                .map(|c| format!("{}.{}", c.pack, c.key))
                .collect();
            return Err(CoreError::InvalidState(format!(
                "the profile update conflicts with overrides of {}: resolve them (keep the overrides, take the profile's values or edit them)",
                list.join(", ")
            )));
        }
        let mut pack_values = rec.spec.pack_values.clone();
        match &resolution {
            Some(ConflictResolution::TakeProfile) => {
                drop_conflicting_overrides(&mut pack_values, &n.conflicts)
            }
            Some(ConflictResolution::Edit(edited)) => {
                for (pack, yaml) in edited {
                    if yaml.trim().is_empty() {
                        pack_values.remove(pack);
                    } else {
                        pack_values.insert(pack.clone(), yaml.clone());
                    }
                }
            }
            Some(ConflictResolution::KeepOverrides) | None => {}
        }
        // The cluster as it will be: validated against the target profile before anything
        // is written.
        let mut spec = rec.spec.clone();
        spec.pack_values = pack_values;
        let mut cat = self.catalog_for(&spec).await?;
        cat.profiles.insert(
            (target.name.clone(), target.version.clone()),
            target.clone(),
        );
        invalid(
            format!("profile update of cluster {}", rec.spec.name),
            validate::validate_cluster(&spec, &cat),
        )?;
        let (expected_profile, expected_rev) = (rec.profile.reference(), rec.profile_revision);
        let rec = self
            .modify(id, |r| {
                if r.lifecycle.is_deleting() {
                    return Err(CoreError::InvalidState(
                        "the cluster is being deleted".into(),
                    ));
                }
                if r.profile.reference() != expected_profile
                    || r.profile_revision != expected_rev
                    || r.spec.profile != n.to
                {
                    return Err(CoreError::Conflict {
                        kind: "cluster profile snapshot",
                        name: r.spec.name.clone(),
                        expected: expected_rev,
                        found: r.profile_revision,
                    });
                }
                r.profile = target.clone();
                r.profile_revision = n.to_revision;
                r.spec.pack_values = spec.pack_values.clone();
                Ok(())
            })
            .await?;
        Ok(rec.generation)
    }

    // ----- events and waiting -----

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
    pub fn watch_events(
        &self,
        cluster: Option<ClusterId>,
        after: u64,
    ) -> impl Stream<Item = Result<Event>> + Send + 'static {
        let store = self.inner.store.clone();
        let rx = self.inner.last_seq.subscribe();
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
                            if rx.changed().await.is_err() {
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
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            let rec = self.cluster(id).await?;
            if pred(&rec) || tokio::time::Instant::now() >= deadline {
                return Ok(rec);
            }
            let look_again =
                (tokio::time::Instant::now() + Duration::from_millis(200)).min(deadline);
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
            Err(CoreError::InvalidState(format!(
                "cluster {} did not reach {} within {timeout:?} (phase {}, generation {} of {}, last error: {})",
                rec.spec.name,
                phase.as_str(),
                rec.status.phase.as_str(),
                rec.status.observed_generation,
                rec.generation,
                rec.status.last_error.as_deref().unwrap_or("none")
            )))
        }
    }

    /// Queues every live cluster for a resync now (e.g. after an outage of the cloud).
    pub async fn resync_all(&self) -> Result<usize> {
        let recs = self.inner.store.list_clusters(false).await?;
        for r in &recs {
            self.inner.queue.add(r.id);
        }
        Ok(recs.len())
    }

    /// Queues one cluster for a resync now.
    pub fn resync(&self, id: ClusterId) {
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
