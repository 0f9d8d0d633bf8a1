//! The engine on the simulated cloud and the SQLite store: every operation, the doc's quota
//! example, abort, crashes at random steps, and injected faults.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use spectro::engine::condition::{get_condition, ConditionStatus, ConditionType};
use spectro::engine::planner::PoolChange;
use spectro::engine::status::Phase;
use spectro::model::{ConflictResolution, NodePool, PoolRole};
use spectro::provider::MachineState;
use spectro::sim::{HookAction, HookPoint, SimConfig, SimOp};
use spectro::{ClusterId, CoreError};

fn machines_by_pool(
    sim: &spectro::sim::SimCloud,
    id: ClusterId,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for m in sim.machines(id) {
        if m.machine.state != MachineState::Deleting {
            out.entry(m.machine.pool.clone())
                .or_default()
                .push((m.machine.zone.clone(), m.instance_type.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_converges_with_conditions_events_and_zone_spread() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("demo")).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();

    assert!(rec.status.provisioned);
    for kind in [
        ConditionType::InfrastructureReady,
        ConditionType::ControlPlaneReady,
        ConditionType::WorkersReady,
    ] {
        let c = get_condition(&rec.status.conditions, kind).unwrap();
        assert_eq!(c.status, ConditionStatus::Succeeded, "{kind:?}: {c:?}");
    }
    assert!(get_condition(&rec.status.conditions, ConditionType::ImageCustomized).is_none());
    assert_eq!(rec.status.pools["master"].ready, 3);
    assert_eq!(rec.status.pools["general"].ready, 3);
    assert_eq!(rec.status.pools["batch"].ready, 2);

    let pools = machines_by_pool(&sim, id);
    let zones = |p: &str| {
        let mut z: Vec<String> = pools[p].iter().map(|(z, _)| z.clone()).collect();
        z.sort();
        z
    };
    assert_eq!(zones("master"), ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert_eq!(zones("general"), ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert_eq!(zones("batch"), ["us-east-1a", "us-east-1b"]);
    assert!(sim.duplicate_names(id).is_empty());

    // Control-plane nodes join one at a time: each control-plane create names one machine.
    let events = engine.events(Some(id), 0, 1000).await.unwrap();
    let cp_creates: Vec<&str> = events
        .iter()
        .filter(|e| e.reason == "CreatingMachines" && e.message.contains("control"))
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(cp_creates.len(), 3, "{cp_creates:?}");
    assert!(cp_creates[0].starts_with("initializing the control plane"));
    assert!(events.iter().any(|e| e.reason == "InfrastructureReady"));
    assert!(events.iter().any(|e| e.reason == "Running"));
    // Batching: one create call per pool × zone (3 control-plane + 3 + 2 worker calls).
    assert_eq!(sim.calls()["CreateMachines"], 3 + 3 + 2);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_add_remove_pools_add_zones_and_rolling_reconfigure() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("ops")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();

    // Scale up and down.
    let mut spec = engine.cluster(id).await.unwrap().spec;
    spec.node_pools[1].size = 6;
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(machines_by_pool(&sim, id)["general"].len(), 6);
    spec.node_pools[1].size = 2;
    engine.update_cluster(id, &spec).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(machines_by_pool(&sim, id)["general"].len(), 2);
    assert_eq!(rec.status.pools["general"].ready, 2);

    // Add a pool, remove another.
    let mut gpu: NodePool = spec.node_pools[2].clone();
    gpu.name = "gpu".into();
    gpu.size = 1;
    gpu.instance_type = Some("g4dn.xlarge".into());
    gpu.availability_zones = vec!["us-east-1a".into()];
    spec.node_pools.push(gpu);
    spec.node_pools.retain(|p| p.name != "batch");
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let pools = machines_by_pool(&sim, id);
    assert!(!pools.contains_key("batch"));
    assert_eq!(
        pools["gpu"],
        vec![("us-east-1a".to_string(), "g4dn.xlarge".to_string())]
    );

    // Add a zone to the gpu pool and scale it: nodes spread to the new zone.
    let gi = spec
        .node_pools
        .iter()
        .position(|p| p.name == "gpu")
        .unwrap();
    spec.node_pools[gi]
        .availability_zones
        .push("us-east-1b".into());
    spec.node_pools[gi].size = 2;
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let mut z: Vec<String> = machines_by_pool(&sim, id)["gpu"]
        .iter()
        .map(|x| x.0.clone())
        .collect();
    z.sort();
    assert_eq!(z, ["us-east-1a", "us-east-1b"]);

    // Reconfigure the instance type: nodes replaced one at a time (never fewer than the size
    // up, never more than one extra).
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    {
        let (seen, sim2) = (seen.clone(), Arc::downgrade(&sim));
        sim.set_hook(Some(Arc::new(move |op, _, at| {
            if at == HookPoint::After && matches!(op, SimOp::CreateMachines | SimOp::DeleteMachines)
            {
                if let Some(s) = sim2.upgrade() {
                    let n = s
                        .machines(id)
                        .iter()
                        .filter(|m| {
                            m.machine.pool == "general" && m.machine.state != MachineState::Deleting
                        })
                        .count();
                    seen.lock().unwrap().push(n);
                }
            }
            HookAction::Continue
        })));
    }
    spec.node_pools[1].instance_type = Some("m5.2xlarge".into());
    let preview = engine.plan_update(id, &spec).await.unwrap();
    assert!(
        matches!(&preview.pools[1].1, PoolChange::Replace { nodes: 2, .. }),
        "{preview:?}"
    );
    engine.update_cluster(id, &spec).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    sim.set_hook(None);
    let types: Vec<String> = machines_by_pool(&sim, id)["general"]
        .iter()
        .map(|x| x.1.clone())
        .collect();
    assert_eq!(types, ["m5.2xlarge", "m5.2xlarge"]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        4,
        "2 creates + 2 deletes, one node at a time: {seen:?}"
    );
    assert!(seen.iter().all(|n| (2..=3).contains(n)), "{seen:?}");
    assert_eq!(rec.status.pools["general"].outdated, 0);
    let replaced = engine
        .events(Some(id), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.reason == "MachinesDeleted" && e.message.contains("Replaced"))
        .count();
    assert_eq!(replaced, 2);

    // Control plane 3 → 5 (one at a time), never down.
    spec.node_pools[0].size = 5;
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(machines_by_pool(&sim, id)["master"].len(), 5);
    spec.node_pools[0].size = 3;
    let err = engine.update_cluster(id, &spec).await.unwrap_err();
    assert!(err.to_string().contains("never down"), "{err}");

    // Delete: nothing left.
    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    assert!(sim.resources(id).is_empty());
    assert_eq!(sim.vcpus_in_use(), 0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_failure_shows_the_cloud_message_then_succeeds_when_raised() {
    let dir = tempfile::tempdir().unwrap();
    // 3 control-plane m5.large = 6 vCPU fit; the workers (12 + 4 vCPU) do not.
    let sim = sim(SimConfig {
        vcpu_limit: Some(8),
        ..Default::default()
    });
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("quota")).await.unwrap();
    let rec = engine
        .wait_for(id, T, |r| {
            get_condition(&r.status.conditions, ConditionType::WorkersReady)
                .is_some_and(|c| c.status == ConditionStatus::Failed)
        })
        .await
        .unwrap();
    let c = get_condition(&rec.status.conditions, ConditionType::WorkersReady).unwrap();
    assert_eq!(c.reason, "QuotaExceeded");
    assert!(c.message.contains("VcpuLimitExceeded"), "{}", c.message);
    assert_eq!(rec.status.phase, Phase::Provisioning);
    assert!(rec
        .status
        .last_error
        .as_deref()
        .unwrap()
        .contains("vCPU limit"));

    sim.set_vcpu_limit(Some(64));
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let c = get_condition(&rec.status.conditions, ConditionType::WorkersReady).unwrap();
    assert_eq!(c.status, ConditionStatus::Succeeded);
    let events = engine.events(Some(id), 0, 10_000).await.unwrap();
    assert!(events.iter().any(|e| e.reason == "QuotaExceeded"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_a_provisioned_cluster_abort_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        boot_time: Duration::from_millis(300),
        ..Default::default()
    });
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("aborted")).await.unwrap();
    engine
        .wait_for(id, T, |_| {
            !sim.resources(id).iter().all(|r| r.kind != "machine")
        })
        .await
        .unwrap();
    let err = engine.delete_cluster(id).await.unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::WrongLifecycle {
                op: "delete",
                state: "still provisioning",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("use abort"), "{err}");

    engine.abort_cluster(id).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    assert!(sim.resources(id).is_empty(), "{:?}", sim.resources(id));
    assert_eq!(sim.total_resources(), 0);
    let c = get_condition(&rec.status.conditions, ConditionType::Deleted).unwrap();
    assert_eq!(c.status, ConditionStatus::Succeeded);
    // The name is free again; abort on a provisioned cluster is refused.
    let id2 = engine.create_cluster(&cluster("aborted")).await.unwrap();
    engine.wait_for_phase(id2, Phase::Running, T).await.unwrap();
    assert!(engine
        .abort_cluster(id2)
        .await
        .unwrap_err()
        .to_string()
        .contains("use delete"));
    engine.shutdown().await;
}

/// Crash the engine at a random cloud call, before it takes effect (the intent is recorded,
/// the create never happened) or after (the create happened, the engine never heard back),
/// restart on the same SQLite file: converge with no duplicate and, after delete, nothing
/// left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_random_steps_then_restart_never_duplicates_or_leaks() {
    let mut reissued = 0;
    for seed in 1..=40u64 {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim(SimConfig {
            seed,
            ..Default::default()
        });
        let crash_at = 1 + (seed * 7919) % 10; // any of the 10 calls of a first converge
        let crashed = Arc::new(tokio::sync::Notify::new());
        let calls = Arc::new(AtomicU64::new(0));
        {
            let (crashed, calls) = (crashed.clone(), calls.clone());
            let point = if seed % 2 == 0 {
                HookPoint::Before
            } else {
                HookPoint::After
            };
            sim.set_hook(Some(Arc::new(move |_, _, at| {
                if at == point && calls.fetch_add(1, Ordering::SeqCst) + 1 == crash_at {
                    crashed.notify_one();
                    HookAction::Hang
                } else {
                    HookAction::Continue
                }
            })));
        }
        let (engine, store) = setup(dir.path(), sim.clone()).await;
        let id = engine.create_cluster(&cluster("crashy")).await.unwrap();
        tokio::time::timeout(T, crashed.notified())
            .await
            .expect("the crash point was reached");
        drop(engine); // the crash: workers stop wherever they are
        sim.set_hook(None);

        let engine = engine_on(store, sim.clone(), spectro::EngineConfig::fast()).await;
        eprintln!("seed {seed}: crashed at call {crash_at}");
        engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
        assert!(sim.duplicate_names(id).is_empty(), "seed {seed}");
        assert_eq!(
            sim.machines(id).len(),
            8,
            "seed {seed}: exactly the desired machines"
        );
        assert_eq!(
            sim.machines_launched(),
            8,
            "seed {seed}: nothing launched twice"
        );
        let retried = engine
            .events(Some(id), 0, 10_000)
            .await
            .unwrap()
            .iter()
            .any(|e| e.reason == "RetryingCreate");
        reissued += u32::from(retried);
        engine.delete_cluster(id).await.unwrap();
        engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
        assert_eq!(sim.total_resources(), 0, "seed {seed}: leaked");
        engine.shutdown().await;
    }
    assert!(
        reissued > 0,
        "some crashes fell between an intent and its create"
    );
}

/// The crash right after a new cluster's first create, before its reconcile's status is
/// written. The commit of that create's intent recorded the infrastructure too (a cluster
/// whose stored status has none is not listed), so the restarted engine lists the machine
/// made before the crash instead of creating it again, even when its infrastructure calls
/// fail for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_status_after_the_first_create_and_a_failed_restart_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let crashed = Arc::new(tokio::sync::Notify::new());
    {
        let crashed = crashed.clone();
        sim.set_hook(Some(Arc::new(move |op, _, at| {
            if op == SimOp::CreateMachines && at == HookPoint::After {
                crashed.notify_one();
                HookAction::Hang
            } else {
                HookAction::Continue
            }
        })));
    }
    let (engine, store) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("lost")).await.unwrap();
    tokio::time::timeout(T, crashed.notified())
        .await
        .expect("the first create went out");
    drop(engine);
    assert_eq!(sim.machines_launched(), 1, "the first control-plane node");
    let stored = spectro::store::Store::get_cluster(&*store, id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored.status.infrastructure.is_some(),
        "the infrastructure is recorded with the first intents"
    );
    // Whenever the restarted engine calls for the infrastructure, the first two calls fail.
    let failed = Arc::new(AtomicU64::new(0));
    {
        let failed = failed.clone();
        sim.set_hook(Some(Arc::new(move |op, _, at| {
            if op == SimOp::EnsureInfrastructure
                && at == HookPoint::Before
                && failed.fetch_add(1, Ordering::SeqCst) < 2
            {
                HookAction::Fail
            } else {
                HookAction::Continue
            }
        })));
    }
    let engine = engine_on(store, sim.clone(), spectro::EngineConfig::fast()).await;
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert!(sim.duplicate_names(id).is_empty());
    assert_eq!(sim.machines(id).len(), 8, "exactly the desired machines");
    assert_eq!(sim.machines_launched(), 8, "nothing launched twice");
    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    assert_eq!(sim.total_resources(), 0, "leaked");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_injected_faults_still_converge() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        seed: 42,
        fault_rate: 0.10,
        throttle_rate: 0.05,
        lost_response_rate: 0.05,
        throttle_retry_after: Duration::from_millis(5),
        ..Default::default()
    });
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            engine
                .create_cluster(&cluster(&format!("faulty-{i}")))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        engine.wait_for_phase(*id, Phase::Running, T).await.unwrap();
        assert!(sim.duplicate_names(*id).is_empty());
        assert_eq!(sim.machines(*id).len(), 8);
    }
    let warnings = engine
        .events(None, 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.reason.as_str(), "TransientError" | "Throttled"))
        .count();
    assert!(warnings > 0, "faults were injected and reported");
    for id in &ids {
        engine.delete_cluster(*id).await.unwrap();
    }
    for id in &ids {
        engine.wait_for_phase(*id, Phase::Deleted, T).await.unwrap();
    }
    assert_eq!(sim.total_resources(), 0);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_is_live_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let mut stream = Box::pin(engine.watch_events(None, 0));
    let id = engine.create_cluster(&cluster("watched")).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(T, stream.next()).await.unwrap() {
        let e = e.unwrap();
        seen.push(e.clone());
        if e.reason == "Running" {
            break;
        }
    }
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(seen.iter().all(|e| e.cluster_id == id));
    // Resume from the middle: the rest comes again, in order.
    let mid = seen[seen.len() / 2].seq;
    let resumed: Vec<u64> = engine
        .watch_events(Some(id), mid)
        .take(seen.len() - seen.len() / 2 - 1)
        .map(|e| e.unwrap().seq)
        .collect()
        .await;
    let expected: Vec<u64> = seen.iter().map(|e| e.seq).filter(|s| *s > mid).collect();
    assert_eq!(resumed, expected);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_update_notification_conflicts_and_repave() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let mut spec = cluster("upgr");
    spec.pack_values.insert(
        "kubernetes".into(),
        "apiServer:\n  extraArgs:\n    audit-log-maxage: \"90\"\n".into(),
    );
    let id = engine.create_cluster(&spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert!(engine.update_notification(id).await.unwrap().is_none());

    // The profile moves to Kubernetes 1.31.1 and changes the value the cluster overrides.
    let mut p = profile();
    p.packs[1].version = "1.31.1".into();
    p.packs[1].values = "apiServer:\n  extraArgs:\n    audit-log-maxage: \"60\"\n".into();
    engine.put_profile(&p).await.unwrap();
    let n = engine.update_notification(id).await.unwrap().unwrap();
    assert!(n.changes.iter().any(
        |c| matches!(c, spectro::model::PackChange::VersionChanged { to, .. } if to == "1.31.1")
    ));
    assert_eq!(n.conflicts.len(), 1);
    assert_eq!(n.conflicts[0].key, "apiServer.extraArgs.audit-log-maxage");
    let err = engine.apply_profile_update(id, None).await.unwrap_err();
    assert!(err.to_string().contains("conflicts"), "{err}");

    engine
        .apply_profile_update(id, Some(ConflictResolution::KeepOverrides))
        .await
        .unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert!(rec.spec.pack_values.contains_key("kubernetes"));
    // New Kubernetes version = new image = every node replaced.
    let images: Vec<String> = sim.machines(id).iter().map(|m| m.image.clone()).collect();
    assert_eq!(images.len(), 8);
    assert!(images.iter().all(|i| i.contains("1.31.1")), "{images:?}");
    assert!(engine.update_notification(id).await.unwrap().is_none());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_customization_is_a_milestone_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let mut p = profile();
    p.name = "custom".into();
    p.packs[0].ansible_roles = vec!["hardening".into()];
    engine.put_profile(&p).await.unwrap();
    let mut ids = Vec::new();
    for n in ["c1", "c2"] {
        let mut c = cluster(n);
        c.profile.name = "custom".into();
        ids.push(engine.create_cluster(&c).await.unwrap());
    }
    for id in &ids {
        let rec = engine.wait_for_phase(*id, Phase::Running, T).await.unwrap();
        let c = get_condition(&rec.status.conditions, ConditionType::ImageCustomized).unwrap();
        assert_eq!(c.status, ConditionStatus::Succeeded);
        assert!(rec.status.image.as_ref().unwrap().image.customized);
    }
    assert_eq!(
        sim.calls()["CustomizeImage"],
        1,
        "the image is built once and reused"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_field_paths_and_secrets_stay_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, store) = setup(dir.path(), sim.clone()).await;
    let mut bad = cluster("bad");
    bad.node_pools[0].size = 4;
    bad.cloud_account = "nope".into();
    match engine.create_cluster(&bad).await.unwrap_err() {
        CoreError::Invalid { violations, .. } => {
            let paths: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
            assert_eq!(paths, ["cloudAccount", "nodePools[0].size"]);
        }
        e => panic!("{e}"),
    }
    let id = engine.create_cluster(&cluster("good")).await.unwrap();
    assert!(matches!(
        engine.create_cluster(&cluster("good")).await.unwrap_err(),
        CoreError::AlreadyExists { .. }
    ));
    let mut worse = cluster("good");
    worse.node_pools[1].role = PoolRole::ControlPlane;
    assert!(engine.update_cluster(id, &worse).await.is_err());
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    // The secret is stored (sealed: tests/secrets_at_rest.rs), opened on read (the provider
    // can use it), and never shown.
    let acct =
        spectro::store::Store::get_object(&*store, spectro::store::ObjectKind::CloudAccount, "sim")
            .await
            .unwrap()
            .unwrap();
    assert!(acct.body.to_string().contains("super-secret-value-123"));
    let rec = engine.cluster(id).await.unwrap();
    let shown = format!(
        "{rec:?}{:?}{}",
        engine.events(None, 0, 10_000).await.unwrap(),
        serde_json::to_string(&rec).unwrap()
    );
    assert!(!shown.contains("super-secret-value-123"));
    assert!(!format!("{:?}", account()).contains("super-secret-value-123"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clusters_converge_with_exactly_the_desired_machines() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let store = Arc::new(spectro::SqliteStore::open(dir.path().join("s.db")).unwrap());
    let engine = engine_on(
        store,
        sim.clone(),
        spectro::EngineConfig {
            concurrency: 8,
            ..spectro::EngineConfig::fast()
        },
    )
    .await;
    engine.put_profile(&profile()).await.unwrap();
    engine.put_cloud_account(&account()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(
            engine
                .create_cluster(&cluster(&format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        engine.wait_for_phase(*id, Phase::Running, T).await.unwrap();
    }
    for id in &ids {
        assert_eq!(sim.machines(*id).len(), 8);
    }
    let launched = sim.machines_launched();
    if launched != 8 * 300 {
        let events = engine.events(None, 0, 1_000_000).await.unwrap();
        for id in &ids {
            let n = events
                .iter()
                .filter(|e| e.cluster_id == *id && e.reason == "MachinesCreated")
                .count();
            if n != 8 {
                for e in events.iter().filter(|e| e.cluster_id == *id) {
                    eprintln!("{} {} {}", e.seq, e.reason, e.message);
                }
                break;
            }
        }
    }
    assert_eq!(launched, 8 * 300);
    engine.shutdown().await;
}

/// A cloud whose listing lags its creates (EC2's eventual consistency): intents stay until
/// the listing shows the machines, so nothing is created twice; abort during the lag leaks
/// nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_lag_neither_duplicates_nor_leaks() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        list_lag: Duration::from_millis(300),
        boot_time: Duration::from_millis(50),
        ..Default::default()
    });
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("laggy")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(sim.machines_launched(), 8, "no duplicate despite the lag");
    assert!(sim.duplicate_names(id).is_empty());
    let retried = engine
        .events(Some(id), 0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.reason == "RetryingCreate")
        .count();
    assert!(
        retried > 0,
        "unlisted creates were re-issued with their tokens"
    );

    let id2 = engine
        .create_cluster(&cluster("laggy-abort"))
        .await
        .unwrap();
    engine
        .wait_for(id2, T, |_| !sim.machines(id2).is_empty())
        .await
        .unwrap();
    engine.abort_cluster(id2).await.unwrap();
    engine.wait_for_phase(id2, Phase::Deleted, T).await.unwrap();
    assert!(
        sim.resources(id2).is_empty(),
        "machines created during the lag were found and deleted"
    );
    engine.shutdown().await;
}

/// A create the cloud refuses outright (quota) leaves nothing in flight: scaling the pool
/// down to fit the quota converges without raising it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_does_not_block_a_smaller_spec() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        vcpu_limit: Some(6 + 8),
        ..Default::default()
    });
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("fit")).await.unwrap();
    engine
        .wait_for(id, T, |r| {
            get_condition(&r.status.conditions, ConditionType::WorkersReady)
                .is_some_and(|c| c.status == ConditionStatus::Failed)
        })
        .await
        .unwrap();
    let mut spec = engine.cluster(id).await.unwrap().spec;
    spec.node_pools[1].size = 2; // 2 × m5.xlarge = 8 vCPU
    spec.node_pools.pop();
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(sim.machines(id).len(), 5);
    engine.shutdown().await;
}
