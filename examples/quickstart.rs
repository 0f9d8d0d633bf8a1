//! Quickstart: no cloud account needed. Runs the engine on an SQLite file and the simulated
//! cloud: creates a profile and a 3-control-plane + 2-pool cluster, shows conditions and
//! events as they happen, scales a pool, reconfigures a pool (rolling replacement, with a
//! dry run first), deletes the cluster and prints a summary.
//!
//!     cargo run --release --example quickstart

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use spectro::engine::condition::ConditionStatus;
use spectro::engine::status::{ClusterRecord, Phase};
use spectro::model::document::{from_text, Format};
use spectro::model::{CloudAccount, CloudType, Cluster, ClusterProfile};
use spectro::sim::{SimCloud, SimConfig, SimOp};
use spectro::{ClusterId, Engine, EngineConfig, SqliteStore};

const PROFILE: &str = r#"
name: quickstart
version: 1.0.0
cloud: aws
packs:
  - { name: ubuntu, layer: os, version: "22.04" }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - { name: calico, layer: cni, version: 3.28.0 }
  - { name: aws-ebs-csi, layer: csi, version: 1.30.0 }
"#;

const ACCOUNT: &str = r#"
name: simulated
credentials:
  aws: { accessKeyId: AKIAQUICKSTART000000, secretAccessKey: not-used-by-the-simulator }
"#;

const CLUSTER: &str = r#"
name: quickstart
description: 3 control-plane nodes and two worker pools on the simulated cloud
tags: { team: platform }
profile: { name: quickstart, version: 1.0.0 }
cloudAccount: simulated
cloud:
  aws: { region: us-east-1 }
nodePools:
  - { name: master, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
  - { name: general, role: worker, size: 3, instanceType: m5.xlarge, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
  - { name: batch, role: worker, size: 2, instanceType: c5.large, availabilityZones: [us-east-1a, us-east-1b] }
"#;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Prints above the progress bar (or plainly when output is not a terminal).
fn say(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        println!("{line}");
    } else {
        pb.println(line);
    }
}

fn bar_for(rec: &ClusterRecord, pb: &ProgressBar) {
    let (desired, ready): (u32, u32) = rec.status.pools.values().fold((0, 0), |(d, r), p| {
        (d + p.desired, r + p.ready.min(p.desired))
    });
    let desired = desired.max(rec.spec.node_pools.iter().map(|p| p.size).sum());
    pb.set_length(u64::from(desired));
    pb.set_position(u64::from(ready));
    let active = rec
        .status
        .conditions
        .iter()
        .find(|c| {
            matches!(
                c.status,
                ConditionStatus::InProgress | ConditionStatus::Failed
            )
        })
        .map(|c| format!("{}: {}", c.kind.label(), c.message))
        .unwrap_or_default();
    pb.set_message(format!("{:<12} {active}", rec.status.phase.as_str()));
}

async fn step(
    engine: &Engine,
    id: ClusterId,
    pb: &ProgressBar,
    title: &str,
    phase: Phase,
    timings: &mut Vec<(String, Duration)>,
    t0: Instant,
) -> Result<ClusterRecord, Error> {
    let rec = engine
        .wait_for_phase(id, phase, Duration::from_secs(60))
        .await?;
    bar_for(&rec, pb);
    say(
        pb,
        format!("==> {title}: {} after {:.1?}", phase.as_str(), t0.elapsed()),
    );
    timings.push((title.to_string(), t0.elapsed()));
    Ok(rec)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = spectro::clock::instant_now();
    let db = std::env::temp_dir().join(format!("spectro-quickstart-{}.db", std::process::id()));
    let store = Arc::new(SqliteStore::open(&db)?);
    let mut latency = SimConfig::default()
        .with_latency(Duration::from_millis(30))
        .latency;
    latency.insert(SimOp::CreateMachines, Duration::from_millis(150));
    let sim = Arc::new(SimCloud::new(
        CloudType::Aws,
        SimConfig {
            seed: 7,
            latency,
            boot_time: Duration::from_millis(900),
            infra_ready_time: Duration::from_millis(800),
            delete_time: Duration::from_millis(300),
            fault_rate: 0.03,
            ..Default::default()
        },
    ));
    let engine = Arc::new(
        Engine::builder(store)
            .provider(sim.clone())
            .config(EngineConfig {
                poll_interval: Duration::from_millis(100),
                backoff_base: Duration::from_millis(100),
                backoff_cap: Duration::from_secs(2),
                ..Default::default()
            })
            .start()
            .await?,
    );
    println!(
        "spectro quickstart: SQLite store at {}, simulated AWS cloud",
        db.display()
    );

    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml)?;
    let account: CloudAccount = from_text(ACCOUNT, Format::Yaml)?;
    let mut spec: Cluster = from_text(CLUSTER, Format::Yaml)?;
    engine.put_profile(&profile).await?;
    engine.put_cloud_account(&account).await?;
    engine.verify_cloud_account("simulated").await?;
    let id = engine.create_cluster(&spec).await?;
    println!(
        "cluster {} ({id}) declared: 3 control-plane + 3 general + 2 batch nodes",
        spec.name
    );

    let pb = ProgressBar::new(8);
    pb.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} nodes  {msg}",
        )?
        .progress_chars("=> "),
    );
    // Events and condition changes, as they happen.
    let monitor = {
        let (engine, pb) = (engine.clone(), pb.clone());
        tokio::spawn(async move {
            let mut events = Box::pin(engine.watch_events(Some(id), 0));
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            loop {
                tokio::select! {
                    e = events.next() => match e {
                        Some(Ok(e)) => say(&pb, format!("  event  {:>7}  {:<22} {}", e.severity.as_str(), e.reason, e.message)),
                        _ => break,
                    },
                    _ = tick.tick() => {
                        if let Ok(rec) = engine.cluster(id).await {
                            for c in &rec.status.conditions {
                                let now = format!("{:?}: {}", c.status, c.message);
                                if seen.get(c.kind.label()) != Some(&now) {
                                    say(&pb, format!("  cond   {:<26} {now}", c.kind.label()));
                                    seen.insert(c.kind.label().to_string(), now);
                                }
                            }
                            bar_for(&rec, &pb);
                        }
                    }
                }
            }
        })
    };

    let mut timings = Vec::new();
    let t0 = spectro::clock::instant_now();
    step(&engine, id, &pb, "create", Phase::Running, &mut timings, t0).await?;

    // Scale the general pool 3 → 5.
    spec.node_pools[1].size = 5;
    let t = spectro::clock::instant_now();
    engine.update_cluster(id, &spec).await?;
    step(
        &engine,
        id,
        &pb,
        "scale general 3 → 5",
        Phase::Running,
        &mut timings,
        t,
    )
    .await?;

    // Reconfigure the batch pool: dry run first, then the rolling replacement.
    spec.node_pools[2].instance_type = Some("c5.2xlarge".into());
    let preview = engine.plan_update(id, &spec).await?;
    for (pool, change) in &preview.pools {
        say(
            &pb,
            format!("  dry-run {pool:<8} {}", serde_json::to_string(change)?),
        );
    }
    say(
        &pb,
        format!(
            "  dry-run: {} machine(s) created, {} deleted",
            preview.creates, preview.deletes
        ),
    );
    let t = spectro::clock::instant_now();
    engine.update_cluster(id, &spec).await?;
    step(
        &engine,
        id,
        &pb,
        "reconfigure batch (rolling)",
        Phase::Running,
        &mut timings,
        t,
    )
    .await?;

    let t = spectro::clock::instant_now();
    engine.delete_cluster(id).await?;
    step(&engine, id, &pb, "delete", Phase::Deleted, &mut timings, t).await?;
    tokio::time::sleep(Duration::from_millis(250)).await;
    monitor.abort();
    pb.finish_and_clear();

    println!("\nsummary");
    for (what, d) in &timings {
        println!("  {what:<30} {d:>8.2?}");
    }
    println!("  cloud API calls by operation:");
    for (op, n) in sim.calls() {
        println!("    {op:<22} {n}");
    }
    println!(
        "  machines launched: {} (3 + 3 + 2, +2 scale, +2 replacements); resources left: {}",
        sim.machines_launched(),
        sim.total_resources()
    );
    println!(
        "  reconciles: {}; total time {:.1?}",
        engine.reconciles(),
        started.elapsed()
    );
    let left = sim.total_resources();
    drop(engine);
    let _ = std::fs::remove_file(&db);
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    if left != 0 {
        return Err(format!("{left} resource(s) leaked").into());
    }
    Ok(())
}
