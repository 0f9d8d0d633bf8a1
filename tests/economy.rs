//! Cloud-API economy on the simulated cloud: one listing per account serves every converged
//! cluster of it, the client-side request budget keeps a rate-limited cloud from throttling,
//! and one account's exhausted budget does not slow another account's clusters.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use spectro::budget::{Limits, Rate};
use spectro::engine::status::Phase;
use spectro::model::CloudAccount;
use spectro::sim::{SimCloud, SimConfig};
use spectro::{ClusterId, Engine, EngineConfig, SqliteStore};

fn other_account() -> CloudAccount {
    let mut a = account();
    a.name = "other".into();
    a
}

async fn engine(dir: &std::path::Path, sim: Arc<SimCloud>, config: EngineConfig) -> Engine {
    let store = Arc::new(SqliteStore::open(dir.join("spectro.db")).unwrap());
    let engine = engine_on(store, sim, config).await;
    engine.put_profile(&profile()).await.unwrap();
    engine.put_cloud_account(&account()).await.unwrap();
    engine.put_cloud_account(&other_account()).await.unwrap();
    engine
}

/// Creates `n` clusters named `{prefix}{i}` on `account`.
async fn create(engine: &Engine, prefix: &str, account: &str, n: usize) -> Vec<ClusterId> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = cluster(&format!("{prefix}{i}"));
        c.cloud_account = account.into();
        ids.push(engine.create_cluster(&c).await.unwrap());
    }
    ids
}

async fn all_running(engine: &Engine, ids: &[ClusterId], timeout: Duration) {
    for id in ids {
        engine
            .wait_for_phase(*id, Phase::Running, timeout)
            .await
            .unwrap();
    }
}

async fn running(engine: &Engine, ids: &[ClusterId]) -> usize {
    let mut n = 0;
    for id in ids {
        if engine.cluster(*id).await.unwrap().status.phase == Phase::Running {
            n += 1;
        }
    }
    n
}

fn listings(sim: &SimCloud) -> u64 {
    sim.calls().get("ListMachines").copied().unwrap_or(0)
}

/// Resyncs every cluster once and returns the listing calls it cost.
async fn resync_cost(engine: &Engine, sim: &SimCloud) -> u64 {
    let before = listings(sim);
    engine.resync_all().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.wait_idle().await;
    listings(sim) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listing_per_account_serves_every_converged_cluster() {
    let config = EngineConfig {
        resync_interval: Duration::from_secs(3600),
        ..EngineConfig::fast()
    };
    for fleet_listing in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim(SimConfig {
            fleet_listing,
            ..SimConfig::default()
        });
        let engine = engine(dir.path(), sim.clone(), config.clone()).await;
        let mut ids = create(&engine, "a", "sim", 150).await;
        ids.extend(create(&engine, "b", "other", 50).await);
        all_running(&engine, &ids, T).await;
        // An explicit resync of everything: a fresh listing per account.
        let explicit = resync_cost(&engine, &sim).await;
        eprintln!(
            "fleet listing {fleet_listing}: 200 converged clusters in 2 accounts, one explicit \
             resync each: {explicit} listing call(s)"
        );
        assert_eq!(explicit, if fleet_listing { 2 } else { 200 });
        engine.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_resyncs_of_converged_clusters_share_their_accounts_listing() {
    // Resync every second (±10 %): over 3 s every cluster resyncs about 3 times.
    let config = EngineConfig {
        resync_interval: Duration::from_secs(1),
        ..EngineConfig::fast()
    };
    let mut counts = Vec::new();
    for fleet_listing in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim(SimConfig {
            fleet_listing,
            ..SimConfig::default()
        });
        let engine = engine(dir.path(), sim.clone(), config.clone()).await;
        let mut ids = create(&engine, "a", "sim", 150).await;
        ids.extend(create(&engine, "b", "other", 50).await);
        all_running(&engine, &ids, T).await;
        let before = listings(&sim);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let n = listings(&sim) - before;
        eprintln!(
            "fleet listing {fleet_listing}: 200 converged clusters in 2 accounts resyncing every \
             second for 3 s: {n} listing call(s)"
        );
        counts.push(n);
        engine.shutdown().await;
    }
    // With fleet listings: about one per account and resync period, whatever the number of
    // clusters; without: one per cluster and period.
    assert!(counts[0] <= 2 * 2 * 4, "{counts:?}");
    assert!(counts[1] >= 200 * 2, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_lost_between_fleet_listings_is_seen_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        fleet_listing: true,
        ..SimConfig::default()
    });
    let config = EngineConfig {
        resync_interval: Duration::from_millis(400),
        ..EngineConfig::fast()
    };
    let engine = engine(dir.path(), sim.clone(), config).await;
    let ids = create(&engine, "a", "sim", 20).await;
    all_running(&engine, &ids, T).await;
    let victim = ids[7];
    let name = sim.machines(victim)[4].machine.name.clone();
    assert!(sim.terminate_out_of_band(victim, &name));
    // Within about two resync periods the fleet listing shows one machine fewer than the
    // status counted; the cluster confirms with a listing of its own and replaces it.
    let deadline = spectro::clock::instant_now() + Duration::from_secs(10);
    loop {
        let machines = sim.machines(victim);
        if machines.len() == 8 && machines.iter().all(|m| m.machine.name != name) {
            break;
        }
        assert!(
            spectro::clock::instant_now() < deadline,
            "the lost machine was never replaced: {:?}",
            machines.iter().map(|m| &m.machine.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine
        .wait_for_phase(victim, Phase::Running, T)
        .await
        .unwrap();
    for id in &ids {
        assert!(sim.duplicate_names(*id).is_empty());
        assert_eq!(sim.machines(*id).len(), 8);
    }
    engine.shutdown().await;
}

/// The cloud's limits for the throttling tests: EC2's shape (reads, mutating calls and
/// instances apart), rates raised so that a test of 1,000 clusters takes seconds, not hours,
/// yet well under what the engine sends on a zero-latency cloud (~700 calls/s here).
fn cloud_limits() -> Limits {
    Limits::new(Rate::new(400.0, 20.0), Rate::new(200.0, 5.0)).with_instances(Rate::new(200.0, 5.0))
}

/// A small cluster: one control-plane node and one worker in one zone (5 calls).
fn small(name: &str) -> spectro::model::Cluster {
    let mut c = cluster(name);
    c.node_pools.truncate(2);
    for p in &mut c.node_pools {
        p.size = 1;
        p.availability_zones.truncate(1);
    }
    c
}

/// Runs `n` clusters to Running against a rate-limited cloud; returns (throttled answers,
/// calls, the sim).
async fn against_limits(n: usize, client_budget: Option<Limits>) -> (u64, u64, Arc<SimCloud>) {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        rate_limits: Some(cloud_limits()),
        client_budget,
        ..SimConfig::default()
    });
    let engine = engine(dir.path(), sim.clone(), EngineConfig::fast()).await;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            engine
                .create_cluster(&small(&format!("c{i}")))
                .await
                .unwrap(),
        );
    }
    all_running(&engine, &ids, Duration::from_secs(240)).await;
    engine.shutdown().await;
    (sim.throttled_answers(), sim.total_calls(), sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clusters_converge_under_the_clouds_rate_limits_with_few_throttles() {
    // The client budget a little under the cloud's limits.
    let budget = cloud_limits().scaled(0.9);
    let (throttled, calls, sim) = against_limits(1000, Some(budget.clone())).await;
    let share = throttled as f64 / calls as f64;
    let stats = &sim.budget_stats()["sim"];
    eprintln!(
        "1,000 clusters with the client budget: {calls} calls, {throttled} throttled ({:.3} %), \
         budget: {stats:?}",
        share * 100.0
    );
    assert!(share < 0.01, "{throttled} of {calls} calls throttled");
    for (class, rate) in [
        ("read", budget.read),
        ("mutate", budget.mutate),
        ("instances", budget.instances),
    ] {
        let rate = rate.unwrap();
        let peak = stats.classes[class].peak_per_second;
        assert!(
            peak as f64 <= rate.burst + rate.per_second,
            "{class}: {peak} in one second over a budget of {rate:?}"
        );
    }

    // The same cloud without a client budget: throttling is the normal answer.
    let (throttled_without, calls_without, _) = against_limits(200, None).await;
    let share_without = throttled_without as f64 / calls_without as f64;
    eprintln!(
        "200 clusters without a client budget: {calls_without} calls, {throttled_without} \
         throttled ({:.1} %)",
        share_without * 100.0
    );
    assert!(share_without > share, "{share_without} vs {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_accounts_used_up_budget_does_not_slow_another_account() {
    let dir = tempfile::tempdir().unwrap();
    // A small budget: 200 clusters of account `sim` need minutes of it. Its reconciles wait
    // for permits, in fair order, holding at most half of the engine's workers.
    let budget = Limits::new(Rate::new(40.0, 10.0), Rate::new(20.0, 5.0))
        .with_instances(Rate::new(20.0, 10.0));
    let sim = sim(SimConfig {
        client_budget: Some(budget),
        ..SimConfig::default()
    });
    let engine = engine(dir.path(), sim.clone(), EngineConfig::fast()).await;
    let t0 = spectro::clock::instant_now();
    let alone = create(&engine, "alone", "other", 1).await;
    all_running(&engine, &alone, Duration::from_secs(30)).await;
    let took_alone = t0.elapsed();
    let busy = create(&engine, "busy", "sim", 200).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = spectro::clock::instant_now();
    let quiet = create(&engine, "quiet", "other", 1).await;
    all_running(&engine, &quiet, Duration::from_secs(30)).await;
    let took = t0.elapsed();
    let busy_running = running(&engine, &busy).await;
    eprintln!(
        "a cluster of the other account ran after {took:?} ({took_alone:?} alone); {busy_running} \
         of 200 clusters of the busy account running by then; budgets: {:?}",
        sim.budget_stats()
    );
    assert!(
        took < took_alone + Duration::from_secs(1),
        "{took:?} next to the busy account, {took_alone:?} alone"
    );
    assert!(
        busy_running < 100,
        "the busy account was not busy: {busy_running}"
    );
    engine.shutdown().await;
}
