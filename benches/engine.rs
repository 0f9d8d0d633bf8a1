//! Engine benchmarks on the simulated cloud (zero latency) and the SQLite store:
//! - converge N clusters × 13 machines from empty (N = 100, 1,000; 10,000 with
//!   `SPECTRO_BENCH_10K=1`; any N with `SPECTRO_BENCH_CLUSTERS=N`, e.g. 100000);
//! - with the largest N loaded: resident memory per machine (the process's RSS growth over
//!   the load, divided by the machines; the simulated cloud's own records and SQLite's page
//!   cache included), and with `SPECTRO_BENCH_HEAP=1` the Rust heap split by a counting
//!   allocator: what the engine holds (released when it is dropped at the end; SQLite
//!   allocates outside the Rust heap) and what the simulated cloud holds, per machine (off
//!   by default: an atomic add per allocation slows the converge by about a tenth); the
//!   CPU the idle engine uses (process CPU time over 10 s of idle, as a share of one core),
//!   the latency of one spec change (scale a pool by one; p50/p99 printed besides
//!   criterion's estimate) and the cost of an idle resync (every converged cluster once).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures_util::StreamExt;
use spectro::engine::status::Phase;
use spectro::model::document::{from_text, Format};
use spectro::model::{CloudAccount, CloudType, Cluster, ClusterProfile};
use spectro::sim::{SimCloud, SimConfig};
use spectro::{ClusterId, Engine, EngineConfig, SqliteStore};

const PROFILE: &str = "name: bench\nversion: '1'\ncloud: aws\npacks:\n  - {name: ubuntu, layer: os, version: '22.04'}\n  - {name: kubernetes, layer: kubernetes, version: 1.30.4}\n  - {name: calico, layer: cni, version: 3.28.0}\n";
const ACCOUNT: &str =
    "name: sim\ncredentials:\n  aws: {accessKeyId: AKIABENCHMARK0000000, secretAccessKey: x}\n";
const CLUSTER: &str = "name: c\nprofile: {name: bench, version: '1'}\ncloudAccount: sim\ncloud: {aws: {region: us-east-1}}\nnodePools:\n  - {name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n  - {name: general, role: worker, size: 6, instanceType: m5.xlarge, availabilityZones: [us-east-1a, us-east-1b, us-east-1c]}\n  - {name: batch, role: worker, size: 4, instanceType: c5.large, availabilityZones: [us-east-1a, us-east-1b]}\n";

/// The system allocator, counting the bytes live on the Rust heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Whether allocations are counted (`SPECTRO_BENCH_HEAP=1`).
static COUNTING: AtomicBool = AtomicBool::new(false);

fn count(delta: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count(new as isize - l.size() as isize);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes live on the Rust heap now.
fn heap() -> i64 {
    LIVE.load(Ordering::Relaxed) as i64
}

struct World {
    engine: Engine,
    sim: Arc<SimCloud>,
    ids: Vec<ClusterId>,
    _dir: tempfile::TempDir,
}

fn cluster(i: usize) -> Cluster {
    let mut c: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    c.name = format!("c{i}");
    c
}

/// Creates `n` clusters and waits until every one runs. Returns the world and the time.
async fn converge(n: usize) -> (World, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("bench.db")).unwrap());
    let sim = Arc::new(SimCloud::new(CloudType::Aws, SimConfig::default()));
    let engine = Engine::builder(store)
        .provider(sim.clone())
        .config(EngineConfig {
            concurrency: 8,
            resync_interval: Duration::from_secs(3600),
            ..EngineConfig::fast()
        })
        .start()
        .await
        .unwrap();
    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml).unwrap();
    let account: CloudAccount = from_text(ACCOUNT, Format::Yaml).unwrap();
    engine.put_profile(&profile).await.unwrap();
    engine.put_cloud_account(&account).await.unwrap();
    let mut events = Box::pin(engine.watch_events(None, 0));
    let t0 = spectro::clock::instant_now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(engine.create_cluster(&cluster(i)).await.unwrap());
    }
    let mut running = 0;
    while running < n {
        let e = events.next().await.unwrap().unwrap();
        if e.reason == "Running" {
            running += 1;
        }
    }
    let took = t0.elapsed();
    assert_eq!(sim.machines_launched() as usize, 13 * n);
    (
        World {
            engine,
            sim,
            ids,
            _dir: dir,
        },
        took,
    )
}

fn sizes() -> Vec<usize> {
    if let Some(n) = std::env::var("SPECTRO_BENCH_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![n];
    }
    let mut v = vec![100, 1_000];
    if std::env::var("SPECTRO_BENCH_10K").is_ok() {
        v.push(10_000);
    }
    v
}

/// Resident set size of this process, in bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU time (user + system) this process used so far (Linux, clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12th and 13th after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn bench_converge(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("converge");
    g.sample_size(10);
    for n in sizes() {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (world, took) = rt.block_on(converge(n));
                    total += took;
                    rt.block_on(world.engine.shutdown());
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_loaded(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = *sizes().last().unwrap();
    let counting = std::env::var("SPECTRO_BENCH_HEAP").is_ok_and(|v| v == "1");
    COUNTING.store(counting, Ordering::Relaxed);
    let rss0 = rss();
    let heap0 = heap();
    let (world, took) = rt.block_on(converge(n));
    let machines = world.sim.machines_launched();
    println!(
        "loaded {n} clusters ({machines} machines) in {took:.2?}; resident memory {:.0} MiB more, \
         {:.0} bytes per machine",
        (rss().saturating_sub(rss0)) as f64 / 1048576.0,
        rss().saturating_sub(rss0) as f64 / machines as f64
    );
    // Idle: every cluster converged, resyncs an hour away.
    rt.block_on(async {
        world.engine.wait_idle().await;
        let cpu0 = cpu_time();
        let t0 = spectro::clock::instant_now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let used = cpu_time().saturating_sub(cpu0);
        println!(
            "idle with {n} converged clusters: {:.2} % of one core ({used:?} CPU in {:.1?})",
            100.0 * used.as_secs_f64() / t0.elapsed().as_secs_f64(),
            t0.elapsed()
        );
    });
    let mut g = c.benchmark_group(format!("loaded-{n}"));
    g.sample_size(30);

    // One spec change: scale a worker pool by one, until that cluster runs again.
    let mut samples = Vec::new();
    let mut k = 0usize;
    g.bench_function("spec-change", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = world.ids[k % world.ids.len()];
                k += 1;
                let took = rt.block_on(async {
                    let mut spec = world.engine.cluster(id).await.unwrap().spec;
                    spec.node_pools[2].size = if spec.node_pools[2].size == 4 { 5 } else { 4 };
                    let t0 = spectro::clock::instant_now();
                    world.engine.update_cluster(id, &spec).await.unwrap();
                    world
                        .engine
                        .wait_for_phase(id, Phase::Running, Duration::from_secs(30))
                        .await
                        .unwrap();
                    t0.elapsed()
                });
                samples.push(took);
                total += took;
            }
            total
        })
    });
    samples.sort();
    if !samples.is_empty() {
        let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "spec change with {n} clusters loaded: p50 {:.2?}, p99 {:.2?} over {} changes",
            p(0.5),
            p(0.99),
            samples.len()
        );
    }

    // Idle resync: every converged cluster reconciled once (one ListMachines each, no writes).
    g.sample_size(10);
    g.bench_function("idle-resync-all", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += rt.block_on(async {
                    let calls = world.sim.total_calls();
                    let t0 = spectro::clock::instant_now();
                    world.engine.resync_all().await.unwrap();
                    world.engine.wait_idle().await;
                    let took = t0.elapsed();
                    assert_eq!(
                        world.sim.total_calls() - calls,
                        n as u64,
                        "one call per cluster"
                    );
                    took
                });
            }
            total
        })
    });
    g.finish();

    if !counting {
        return;
    }
    // The heap split: drop the engine (its store with it); what remains above the start is
    // the simulated cloud's (and the benchmark's own ids).
    let loaded = heap();
    let World {
        engine, sim, ids, ..
    } = world;
    rt.block_on(engine.shutdown());
    drop(engine);
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    let without_engine = heap();
    let machines = sim.machines_launched().max(1) as f64;
    println!(
        "Rust heap with {n} clusters loaded: {:.0} bytes per machine in the engine (its store's \
         Rust side included, SQLite's own cache not), {:.0} in the simulated cloud",
        (loaded - without_engine) as f64 / machines,
        (without_engine - heap0 - (ids.capacity() * std::mem::size_of::<ClusterId>()) as i64)
            as f64
            / machines
    );
}

criterion_group!(benches, bench_converge, bench_loaded);
criterion_main!(benches);
