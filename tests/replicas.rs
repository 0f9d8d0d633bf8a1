//! Several engine replicas on one PostgreSQL: work is shared through leases, a dead
//! replica's clusters are taken over, and a replica that lost a lease cannot write.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::pg::PgServer;
use common::*;
use futures_util::stream::BoxStream;
use spectro::engine::event::Event;
use spectro::engine::status::{ClusterRecord, Phase};
use spectro::engine::ReplicaConfig;
use spectro::sim::SimConfig;
use spectro::store::{
    ClusterWrite, Intent, IpLease, IpRequest, Lease, ObjectKind, Store, StoredObject,
};
use spectro::{ClusterId, CoreError, Engine, EngineConfig, PostgresStore, Result};

fn replica(id: &str, ttl: Duration, max: usize) -> EngineConfig {
    EngineConfig {
        concurrency: 4,
        poll_interval: Duration::from_millis(20),
        replica: Some(ReplicaConfig {
            id: id.into(),
            lease_ttl: ttl,
            max_clusters: max,
        }),
        ..EngineConfig::fast()
    }
}

/// The replicas of one store share its secrets key.
fn keys() -> Arc<dyn spectro::secret::KeyProvider> {
    static KEYS: std::sync::OnceLock<Arc<spectro::secret::Keyring>> = std::sync::OnceLock::new();
    let ring = KEYS.get_or_init(|| Arc::new(spectro::secret::Keyring::random().unwrap()));
    Arc::new(spectro::secret::StaticKeys(ring.clone()))
}

async fn start(
    store: Arc<dyn Store>,
    sim: Arc<spectro::sim::SimCloud>,
    cfg: EngineConfig,
) -> Engine {
    Engine::builder(store)
        .provider(sim)
        .config(cfg)
        .secret_keys(keys())
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_300_clusters_and_take_over_a_dead_one() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let sim = sim(SimConfig {
        boot_time: Duration::from_millis(40),
        ..Default::default()
    });
    let ttl = Duration::from_millis(900);
    let mut engines = Vec::new();
    for i in 0..3 {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&pg.url, 6).await.unwrap());
        engines.push(Some(
            start(store, sim.clone(), replica(&format!("r{i}"), ttl, 150)).await,
        ));
    }
    let e0 = engines[0].as_ref().unwrap();
    e0.put_profile(&profile()).await.unwrap();
    e0.put_cloud_account(&account()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..300 {
        let e = engines[i % 3].as_ref().unwrap();
        ids.push(
            e.create_cluster(&cluster(&format!("rep-{i}")))
                .await
                .unwrap(),
        );
    }
    // Mid-provisioning: every replica holds clusters; then r1 dies (no graceful release).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held: Vec<usize> = engines
        .iter()
        .map(|e| e.as_ref().unwrap().owned_clusters().len())
        .collect();
    assert!(held.iter().all(|n| *n > 0), "work is spread: {held:?}");
    let victim_held = engines[1].as_ref().unwrap().owned_clusters();
    let victim_reconciles = engines[1].as_ref().unwrap().reconciles();
    assert!(victim_reconciles > 0);
    drop(engines[1].take());

    let e0 = engines[0].as_ref().unwrap();
    for id in &ids {
        e0.wait_for_phase(*id, Phase::Running, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let survivors: Vec<Vec<ClusterId>> = [0, 2]
        .iter()
        .map(|i| engines[*i].as_ref().unwrap().owned_clusters())
        .collect();
    assert_eq!(
        survivors[0].len() + survivors[1].len(),
        300,
        "every cluster owned by a live replica"
    );
    assert!(
        victim_held
            .iter()
            .all(|id| survivors.iter().any(|s| s.contains(id))),
        "the dead replica's clusters were taken over"
    );
    for id in &ids {
        assert!(sim.duplicate_names(*id).is_empty());
        assert_eq!(sim.machines(*id).len(), 8);
    }
    assert_eq!(sim.machines_launched(), 300 * 8, "zero duplicate resources");
    eprintln!(
        "held at kill {held:?}; reconciles r0 {} r1 {victim_reconciles} r2 {}",
        engines[0].as_ref().unwrap().reconciles(),
        engines[2].as_ref().unwrap().reconciles()
    );
    for e in engines.into_iter().flatten() {
        e.shutdown().await;
    }
}

/// A store whose lease renewals can be cut (a partitioned or paused replica), counting the
/// writes refused by fencing.
struct Partitionable {
    inner: PostgresStore,
    cut: AtomicBool,
    fenced: AtomicU64,
}

#[async_trait]
impl Store for Partitionable {
    fn set_keyring(&self, keyring: std::sync::Arc<spectro::secret::Keyring>) {
        self.inner.set_keyring(keyring);
    }

    async fn put_object(
        &self,
        k: ObjectKind,
        n: &str,
        b: &serde_json::Value,
        e: Option<u64>,
    ) -> Result<u64> {
        self.inner.put_object(k, n, b, e).await
    }
    async fn get_object(&self, k: ObjectKind, n: &str) -> Result<Option<StoredObject>> {
        self.inner.get_object(k, n).await
    }
    async fn list_objects(&self, k: ObjectKind) -> Result<Vec<StoredObject>> {
        self.inner.list_objects(k).await
    }
    async fn delete_object(&self, k: ObjectKind, n: &str) -> Result<bool> {
        self.inner.delete_object(k, n).await
    }
    async fn insert_cluster(&self, r: &ClusterRecord) -> Result<()> {
        self.inner.insert_cluster(r).await
    }
    async fn update_cluster(&self, r: &ClusterRecord, g: u64) -> Result<()> {
        self.inner.update_cluster(r, g).await
    }
    async fn get_cluster(&self, id: ClusterId) -> Result<Option<ClusterRecord>> {
        self.inner.get_cluster(id).await
    }
    async fn find_cluster(&self, n: &str) -> Result<Option<ClusterRecord>> {
        self.inner.find_cluster(n).await
    }
    async fn list_clusters(&self, d: bool) -> Result<Vec<ClusterRecord>> {
        self.inner.list_clusters(d).await
    }
    async fn commit(&self, w: &ClusterWrite) -> Result<Vec<Event>> {
        let r = self.inner.commit(w).await;
        if matches!(r, Err(CoreError::Fenced { .. })) {
            self.fenced.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    async fn intents(&self, id: ClusterId) -> Result<Vec<Intent>> {
        self.inner.intents(id).await
    }
    async fn events(&self, c: Option<ClusterId>, a: u64, l: usize) -> Result<Vec<Event>> {
        self.inner.events(c, a, l).await
    }
    async fn live_replicas(&self) -> Result<usize> {
        self.inner.live_replicas().await
    }
    async fn acquire_leases(&self, o: &str, t: Duration, m: usize) -> Result<Vec<Lease>> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(CoreError::store(
                "acquire leases",
                std::io::Error::new(std::io::ErrorKind::TimedOut, "partitioned"),
            ));
        }
        self.inner.acquire_leases(o, t, m).await
    }
    async fn release_leases(&self, o: &str) -> Result<()> {
        self.inner.release_leases(o).await
    }
    async fn allocate_ip(&self, r: &IpRequest) -> Result<u64> {
        self.inner.allocate_ip(r).await
    }
    async fn release_ips(&self, c: ClusterId, o: Option<&[String]>, f: Option<u64>) -> Result<u64> {
        self.inner.release_ips(c, o, f).await
    }
    async fn ip_leases(&self, p: Option<&str>, c: Option<ClusterId>) -> Result<Vec<IpLease>> {
        self.inner.ip_leases(p, c).await
    }
    async fn changes(&self) -> Result<Option<BoxStream<'static, ClusterId>>> {
        self.inner.changes().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_lease_was_taken_cannot_write() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let sim = sim(SimConfig {
        boot_time: Duration::from_millis(1500),
        ..Default::default()
    });
    let ttl = Duration::from_millis(600);
    let a_store = Arc::new(Partitionable {
        inner: PostgresStore::connect(&pg.url, 4).await.unwrap(),
        cut: AtomicBool::new(false),
        fenced: AtomicU64::new(0),
    });
    let a = start(a_store.clone(), sim.clone(), replica("a", ttl, 100)).await;
    a.put_profile(&profile()).await.unwrap();
    a.put_cloud_account(&account()).await.unwrap();
    let id = a.create_cluster(&cluster("fenced")).await.unwrap();
    a.wait_for(id, T, |_| !sim.machines(id).is_empty())
        .await
        .unwrap();
    assert_eq!(a.owned_clusters(), vec![id]);

    // A is cut off from the database's lease table: it stops acting by itself within the
    // TTL, B takes over with a higher fence, and anything A still writes is refused.
    a_store.cut.store(true, Ordering::SeqCst);
    let b_store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&pg.url, 4).await.unwrap());
    let b = start(b_store.clone(), sim.clone(), replica("b", ttl, 100)).await;
    b.wait_for(id, T, |_| b.owned_clusters().contains(&id))
        .await
        .unwrap();
    // A (still believing it owns the cluster) tries to write with its stale fence.
    let mut w = ClusterWrite::new(id);
    let leases = b_store.acquire_leases("b", ttl, 100).await.unwrap();
    let fence_b = leases.iter().find(|l| l.cluster_id == id).unwrap().fence;
    w.fence = Some(fence_b - 1);
    w.events = vec![spectro::engine::event::NewEvent {
        time: spectro::clock::system_now(),
        severity: spectro::engine::event::Severity::Info,
        reason: "Stale".into(),
        message: "from the old owner".into(),
    }];
    assert!(matches!(
        a_store.commit(&w).await,
        Err(CoreError::Fenced { .. })
    ));
    b.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(
        sim.machines_launched(),
        8,
        "no duplicate after the takeover"
    );
    assert!(a_store.fenced.load(Ordering::SeqCst) >= 1);
    let events = b.events(Some(id), 0, 10_000).await.unwrap();
    assert!(events.iter().all(|e| e.reason != "Stale"));
    b.shutdown().await;
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_change_through_any_replica_reaches_the_owner_at_once() {
    let Some(pg) = PgServer::start().await else {
        return;
    };
    let sim = sim(SimConfig::default());
    let ttl = Duration::from_secs(30); // no lease round will help: only NOTIFY can
    let owner_store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&pg.url, 4).await.unwrap());
    let owner = start(owner_store, sim.clone(), replica("owner", ttl, 100)).await;
    owner.put_profile(&profile()).await.unwrap();
    owner.put_cloud_account(&account()).await.unwrap();
    let id = owner.create_cluster(&cluster("notified")).await.unwrap();
    owner.wait_for_phase(id, Phase::Running, T).await.unwrap();
    // The other replica holds nothing (max 0) and only relays the API call.
    let api_store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&pg.url, 2).await.unwrap());
    let api = start(api_store, sim.clone(), replica("api", ttl, 0)).await;
    let mut spec = api.cluster(id).await.unwrap().spec;
    spec.node_pools[1].size = 4;
    let t0 = spectro::clock::instant_now();
    api.update_cluster(id, &spec).await.unwrap();
    api.wait_for_phase(id, Phase::Running, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(sim.machines(id).len(), 9);
    api.shutdown().await;
    owner.shutdown().await;
}
