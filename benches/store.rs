//! Store and replica benchmarks:
//! - status + events write throughput (one reconcile commit: status and 2 events) on SQLite
//!   and on PostgreSQL;
//! - converge 1,000 clusters × 8 machines on PostgreSQL with 1 replica vs 3 replicas
//!   (simulated cloud with 5 ms per call, so that replicas have I/O to overlap).
//!
//! PostgreSQL: a private server is started (Debian's binaries) unless SPECTRO_TEST_PG_URL
//! is set; without either the PostgreSQL cases are skipped.

#[path = "../tests/common/pg.rs"]
#[allow(dead_code)] // the tests' PostgreSQL helpers; the bench uses the plain server only
mod pg;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spectro::engine::event::{NewEvent, Severity};
use spectro::engine::status::{ClusterRecord, ClusterStatus, Lifecycle, Phase};
use spectro::engine::ReplicaConfig;
use spectro::model::document::{from_text, Format};
use spectro::model::{CloudAccount, CloudType, Cluster, ClusterProfile};
use spectro::sim::{SimCloud, SimConfig};
use spectro::store::{ClusterWrite, Store};
use spectro::{ClusterId, Engine, EngineConfig, PostgresStore, SqliteStore};

const PROFILE: &str = "name: bench\nversion: '1'\ncloud: aws\npacks:\n  - {name: ubuntu, layer: os, version: '22.04'}\n  - {name: kubernetes, layer: kubernetes, version: 1.30.4}\n  - {name: calico, layer: cni, version: 3.28.0}\n";
const ACCOUNT: &str =
    "name: sim\ncredentials:\n  aws: {accessKeyId: AKIABENCHMARK0000000, secretAccessKey: x}\n";
const CLUSTER: &str = "name: c\nprofile: {name: bench, version: '1'}\ncloudAccount: sim\ncloud: {aws: {region: us-east-1}}\nnodePools:\n  - {name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n  - {name: workers, role: worker, size: 5, instanceType: m5.xlarge, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn seeded(store: Arc<dyn Store>) -> ClusterId {
    let mut spec: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    spec.name = format!("w{}", uuid::Uuid::new_v4().simple());
    let rec = ClusterRecord {
        id: ClusterId::new(),
        generation: 1,
        spec,
        profile: from_text(PROFILE, Format::Yaml).unwrap(),
        profile_revision: 1,
        lifecycle: Lifecycle::Active,
        status: ClusterStatus::default(),
        created_at: spectro::clock::system_now(),
    };
    store.insert_cluster(&rec).await.unwrap();
    rec.id
}

fn write(id: ClusterId, i: u64) -> ClusterWrite {
    let mut w = ClusterWrite::new(id);
    w.status = Some(ClusterStatus {
        phase: if i % 2 == 0 {
            Phase::Provisioning
        } else {
            Phase::Running
        },
        observed_generation: i,
        ..Default::default()
    });
    w.events = (0..2)
        .map(|k| NewEvent {
            time: spectro::clock::system_now(),
            severity: Severity::Info,
            reason: "Bench".into(),
            message: format!("event {i}/{k}"),
        })
        .collect();
    w
}

fn bench_writes(c: &mut Criterion) {
    let rt = rt();
    let server = rt.block_on(pg::PgServer::start());
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&str, Arc<dyn Store>)> = vec![(
        "sqlite",
        Arc::new(SqliteStore::open(dir.path().join("w.db")).unwrap()),
    )];
    if let Some(s) = &server {
        stores.push((
            "postgres",
            Arc::new(rt.block_on(PostgresStore::connect(&s.url, 8)).unwrap()),
        ));
    }
    let mut g = c.benchmark_group("commit-status-and-2-events");
    g.throughput(criterion::Throughput::Elements(1));
    for (name, store) in &stores {
        let id = rt.block_on(seeded(store.clone()));
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("sequential", name), |b| {
            b.iter(|| {
                i += 1;
                rt.block_on(store.commit(&write(id, i))).unwrap();
            })
        });
        // 8 writers on 8 clusters at once (as 8 engine workers would).
        let ids: Vec<ClusterId> = (0..8).map(|_| rt.block_on(seeded(store.clone()))).collect();
        g.throughput(criterion::Throughput::Elements(8));
        g.bench_function(BenchmarkId::new("8-concurrent", name), |b| {
            b.iter(|| {
                i += 1;
                rt.block_on(async {
                    let tasks: Vec<_> = ids
                        .iter()
                        .map(|id| {
                            let (s, w) = (store.clone(), write(*id, i));
                            tokio::spawn(async move { s.commit(&w).await })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                })
            })
        });
        g.throughput(criterion::Throughput::Elements(1));
    }
    g.finish();
}

async fn converge_replicas(url: &str, replicas: usize, n: usize) -> Duration {
    let mut latency = SimConfig::default()
        .with_latency(Duration::from_millis(5))
        .latency;
    latency.remove(&spectro::sim::SimOp::ValidateAccount);
    let sim = Arc::new(SimCloud::new(
        CloudType::Aws,
        SimConfig {
            latency,
            ..Default::default()
        },
    ));
    let mut engines = Vec::new();
    for r in 0..replicas {
        let store = Arc::new(PostgresStore::connect(url, 8).await.unwrap());
        engines.push(
            Engine::builder(store)
                .provider(sim.clone())
                .config(EngineConfig {
                    concurrency: 32,
                    resync_interval: Duration::from_secs(3600),
                    replica: Some(ReplicaConfig {
                        id: format!("bench-{r}-{}", uuid::Uuid::new_v4().simple()),
                        lease_ttl: Duration::from_secs(5),
                        max_clusters: n,
                    }),
                    ..EngineConfig::fast()
                })
                .start()
                .await
                .unwrap(),
        );
    }
    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml).unwrap();
    let account: CloudAccount = from_text(ACCOUNT, Format::Yaml).unwrap();
    engines[0].put_profile(&profile).await.unwrap();
    engines[0].put_cloud_account(&account).await.unwrap();
    let t0 = spectro::clock::instant_now();
    let mut ids = Vec::new();
    for i in 0..n {
        let mut c: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
        c.name = format!("b{i}-{}", uuid::Uuid::new_v4().simple());
        ids.push(engines[i % replicas].create_cluster(&c).await.unwrap());
    }
    for id in &ids {
        engines[0]
            .wait_for_phase(*id, Phase::Running, Duration::from_secs(600))
            .await
            .unwrap();
    }
    let took = t0.elapsed();
    assert_eq!(sim.machines_launched() as usize, 8 * n);
    for (i, id) in ids.iter().enumerate() {
        let _ = engines[i % replicas].delete_cluster(*id).await;
    }
    for id in &ids {
        let _ = engines[0]
            .wait_for_phase(*id, Phase::Deleted, Duration::from_secs(600))
            .await;
    }
    for e in engines {
        e.shutdown().await;
    }
    took
}

fn bench_replicas(c: &mut Criterion) {
    let rt = rt();
    let Some(server) = rt.block_on(pg::PgServer::start()) else {
        eprintln!("SKIPPED: no PostgreSQL");
        return;
    };
    let n: usize = std::env::var("SPECTRO_BENCH_CLUSTERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut g = c.benchmark_group(format!("converge-{n}-postgres"));
    g.sample_size(10);
    for replicas in [1usize, 3] {
        g.bench_function(BenchmarkId::new("replicas", replicas), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(converge_replicas(&server.url, replicas, n)))
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_writes, bench_replicas);
criterion_main!(benches);
