//! Correctness of what the engine claims: profile versions move through the update
//! notification, catalog objects can be deleted only when unused, pools rebalance over new
//! zones, and a seed replays a faulty run exactly.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use spectro::engine::planner::PoolChange;
use spectro::engine::status::Phase;
use spectro::model::document::{from_text, Format};
use spectro::model::{ConflictResolution, IpPool, PackChange};
use spectro::provider::MachineState;
use spectro::sim::{HookAction, HookPoint, SimConfig, SimOp};
use spectro::{ClusterId, CoreError, EngineConfig, SqliteStore};

fn live_zones(sim: &spectro::sim::SimCloud, id: ClusterId, pool: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for m in sim.machines(id) {
        if m.machine.pool == pool && m.machine.state != MachineState::Deleting {
            *out.entry(m.machine.zone.clone()).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_profile_version_is_a_profile_update_with_conflicts_then_applied() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let mut spec = cluster("ver");
    spec.pack_values.insert(
        "kubernetes".into(),
        "apiServer:\n  extraArgs:\n    audit-log-maxage: \"90\"\n".into(),
    );
    let id = engine.create_cluster(&spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let before: Vec<String> = sim
        .machines(id)
        .iter()
        .map(|m| m.machine.name.clone())
        .collect();

    // Version 1.1.0: Kubernetes 1.31.1, a changed default the cluster overrides, new manifests.
    let mut v2 = profile();
    v2.version = "1.1.0".into();
    v2.packs[1].version = "1.31.1".into();
    v2.packs[1].values = "apiServer:\n  extraArgs:\n    audit-log-maxage: \"60\"\n".into();
    v2.packs[2].manifests =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: calico-extra}\n".into();
    engine.put_profile(&v2).await.unwrap();
    // Nothing pending while the spec names 1.0.0.
    assert!(engine.update_notification(id).await.unwrap().is_none());

    // The dry run of the spec change shows the repave of every pool.
    spec.profile.version = "1.1.0".into();
    let preview = engine.plan_update(id, &spec).await.unwrap();
    assert!(preview.image_changes, "{preview:?}");
    assert!(
        preview
            .pools
            .iter()
            .all(|(_, c)| matches!(c, PoolChange::Replace { .. })),
        "{preview:?}"
    );

    // Accepted, but the cluster keeps running its 1.0.0 snapshot until the update is applied.
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_idle().await;
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(rec.profile.version, "1.0.0");
    let mut now: Vec<String> = sim
        .machines(id)
        .iter()
        .map(|m| m.machine.name.clone())
        .collect();
    now.sort();
    let mut b = before.clone();
    b.sort();
    assert_eq!(now, b, "no machine replaced before the update is applied");

    let n = engine.update_notification(id).await.unwrap().unwrap();
    assert_eq!(
        (n.from.version.as_str(), n.to.version.as_str()),
        ("1.0.0", "1.1.0")
    );
    assert!(n.changes.iter().any(
        |c| matches!(c, PackChange::VersionChanged { pack, to, .. } if pack == "kubernetes" && to == "1.31.1")
    ));
    assert!(n
        .changes
        .iter()
        .any(|c| matches!(c, PackChange::ManifestsChanged { pack } if pack == "calico")));
    assert_eq!(n.conflicts.len(), 1);
    assert_eq!(n.conflicts[0].key, "apiServer.extraArgs.audit-log-maxage");
    assert!(n.preview.image_changes);
    // The status and the event stream say so.
    assert_eq!(
        rec.status
            .profile_update
            .as_ref()
            .map(|u| u.profile.version.as_str()),
        Some("1.1.0")
    );
    let events = engine.events(Some(id), 0, 10_000).await.unwrap();
    let available: Vec<_> = events
        .iter()
        .filter(|e| e.reason == "ProfileUpdateAvailable")
        .collect();
    assert_eq!(available.len(), 1, "{available:?}");
    assert!(
        available[0].message.contains("demo@1.1.0"),
        "{}",
        available[0].message
    );

    // Conflicts must be resolved; here by editing the override.
    let err = engine.apply_profile_update(id, None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("kubernetes.apiServer.extraArgs.audit-log-maxage"),
        "{err}"
    );
    let edited = BTreeMap::from([(
        "kubernetes".to_string(),
        "apiServer:\n  extraArgs:\n    audit-log-maxage: \"75\"\n".to_string(),
    )]);
    engine
        .apply_profile_update(id, Some(ConflictResolution::Edit(edited)))
        .await
        .unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(rec.profile.version, "1.1.0");
    assert!(rec.spec.pack_values["kubernetes"].contains("75"));
    assert!(rec.status.profile_update.is_none());
    let images: Vec<String> = sim.machines(id).iter().map(|m| m.image.clone()).collect();
    assert_eq!(images.len(), 8);
    assert!(images.iter().all(|i| i.contains("1.31.1")), "{images:?}");
    assert!(engine.update_notification(id).await.unwrap().is_none());
    assert!(engine
        .events(Some(id), 0, 10_000)
        .await
        .unwrap()
        .iter()
        .any(|e| e.reason == "ProfileUpdateApplied"));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_revision_raises_an_event_and_take_profile_drops_the_override() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let mut spec = cluster("rev");
    spec.pack_values.insert(
        "kubernetes".into(),
        "apiServer:\n  extraArgs:\n    audit-log-maxage: \"90\"\n".into(),
    );
    let id = engine.create_cluster(&spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    // Only a manifest changes: no image change, no repave.
    let mut p = profile();
    p.packs[2].manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".into();
    p.packs[1].values = "apiServer:\n  extraArgs:\n    audit-log-maxage: \"60\"\n".into();
    engine.put_profile(&p).await.unwrap();
    let n = engine.update_notification(id).await.unwrap().unwrap();
    assert_eq!(n.from, n.to);
    assert!(!n.preview.image_changes);
    assert!(n
        .preview
        .pools
        .iter()
        .all(|(_, c)| *c == PoolChange::NoChange));
    // put_profile queues the cluster: the event arrives without any other trigger.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let ev = engine.events(Some(id), 0, 10_000).await.unwrap();
        if ev.iter().any(|e| e.reason == "ProfileUpdateAvailable") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ProfileUpdateAvailable event"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine
        .apply_profile_update(id, Some(ConflictResolution::TakeProfile))
        .await
        .unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert!(!rec.spec.pack_values.contains_key("kubernetes"));
    assert_eq!(rec.profile.packs[2].manifests, p.packs[2].manifests);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_objects_are_deleted_only_when_unused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("user")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();

    let err = engine.delete_profile("demo", "1.0.0").await.unwrap_err();
    assert!(
        matches!(&err, CoreError::InUse { users, .. } if users == &vec!["cluster user".to_string()]),
        "{err}"
    );
    assert!(err.to_string().contains("cluster user"), "{err}");
    let err = engine.delete_cloud_account("sim").await.unwrap_err();
    assert!(err.to_string().contains("cluster user"), "{err}");
    // Nothing was removed by the refusals.
    assert!(engine.profile("demo", "1.0.0").await.unwrap().is_some());
    engine.verify_cloud_account("sim").await.unwrap();

    // An unused profile version goes at once; an unknown one is NotFound.
    let mut v2 = profile();
    v2.version = "2.0.0".into();
    engine.put_profile(&v2).await.unwrap();
    engine.delete_profile("demo", "2.0.0").await.unwrap();
    assert!(matches!(
        engine.delete_profile("demo", "2.0.0").await,
        Err(CoreError::NotFound { .. })
    ));

    // IP pools and gateways: the gateway is used by its pool until the pool goes.
    let gw: spectro::model::PrivateCloudGateway =
        from_text("name: gw1\nsize: 1\n", Format::Yaml).unwrap();
    engine.put_gateway(&gw).await.unwrap();
    let pool: IpPool = from_text(
        "name: lab\ngatewayName: gw1\nprefix: 24\ngateway: 10.0.0.1\nnameservers: [10.0.0.2]\nrange: {start: 10.0.0.10, end: 10.0.0.50}\n",
        Format::Yaml,
    )
    .unwrap();
    engine.put_ip_pool(&pool).await.unwrap();
    let err = engine.delete_gateway("gw1").await.unwrap_err();
    assert!(err.to_string().contains("IP pool lab"), "{err}");
    engine.delete_ip_pool("lab").await.unwrap();
    engine.delete_gateway("gw1").await.unwrap();

    // Once the cluster is deleted, its profile and account can go.
    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    engine.delete_profile("demo", "1.0.0").await.unwrap();
    engine.delete_cloud_account("sim").await.unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_zone_rebalances_the_pool_one_node_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig::default());
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let mut spec = cluster("zones");
    spec.node_pools[1].size = 4;
    spec.node_pools[1].availability_zones = vec!["us-east-1a".into(), "us-east-1b".into()];
    spec.node_pools.truncate(2);
    let id = engine.create_cluster(&spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(
        live_zones(&sim, id, "general"),
        BTreeMap::from([("us-east-1a".into(), 2), ("us-east-1b".into(), 2)])
    );

    // Watch the pool's size on every create and delete.
    let seen: Arc<Mutex<Vec<usize>>> = Arc::default();
    {
        let (seen, sim2) = (seen.clone(), Arc::downgrade(&sim));
        sim.set_hook(Some(Arc::new(move |op, _, at| {
            if at == HookPoint::After && matches!(op, SimOp::CreateMachines | SimOp::DeleteMachines)
            {
                if let Some(s) = sim2.upgrade() {
                    let n = live_zones(&s, id, "general").values().sum::<u32>() as usize;
                    seen.lock().unwrap().push(n);
                }
            }
            HookAction::Continue
        })));
    }
    // Same size, one more zone: the dry run says one node moves.
    spec.node_pools[1]
        .availability_zones
        .push("us-east-1c".into());
    let preview = engine.plan_update(id, &spec).await.unwrap();
    assert_eq!(
        preview.pools[1].1,
        PoolChange::Replace {
            nodes: 1,
            reasons: vec!["zones added: us-east-1c".into()],
            new_size: None
        }
    );
    assert_eq!((preview.creates, preview.deletes), (1, 1));
    engine.update_cluster(id, &spec).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    sim.set_hook(None);
    assert_eq!(
        live_zones(&sim, id, "general"),
        BTreeMap::from([
            ("us-east-1a".into(), 2),
            ("us-east-1b".into(), 1),
            ("us-east-1c".into(), 1)
        ])
    );
    assert_eq!(rec.status.pools["general"].outdated, 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![5, 4], "surge 1: one create, then one delete");

    // Removing the zone again moves its node back, the same way.
    spec.node_pools[1].availability_zones.pop();
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(
        live_zones(&sim, id, "general"),
        BTreeMap::from([("us-east-1a".into(), 2), ("us-east-1b".into(), 2)])
    );
    engine.shutdown().await;
}

/// One faulty run (transient errors, throttling, lost responses) of two clusters: every
/// cluster's events and machine names.
async fn faulty_run(seed: u64) -> Vec<(String, Vec<(String, String)>, Vec<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        seed,
        fault_rate: 0.15,
        throttle_rate: 0.05,
        lost_response_rate: 0.05,
        throttle_retry_after: Duration::from_millis(5),
        ..Default::default()
    });
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db")).unwrap());
    let engine = engine_on(
        store,
        sim.clone(),
        EngineConfig {
            seed: Some(seed),
            ..EngineConfig::fast()
        },
    )
    .await;
    engine.put_profile(&profile()).await.unwrap();
    engine.put_cloud_account(&account()).await.unwrap();
    let mut ids = Vec::new();
    for name in ["replay-a", "replay-b"] {
        ids.push((name, engine.create_cluster(&cluster(name)).await.unwrap()));
    }
    let mut out = Vec::new();
    for (name, id) in ids {
        engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
        let events = engine
            .events(Some(id), 0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.reason, e.message))
            .collect();
        let mut names: Vec<String> = sim
            .machines(id)
            .into_iter()
            .map(|m| m.machine.name)
            .collect();
        names.sort();
        out.push((format!("{name} {id}"), events, names));
    }
    engine.shutdown().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_replays_a_faulty_run_exactly() {
    let a = faulty_run(7).await;
    let b = faulty_run(7).await;
    let faults = a[0]
        .1
        .iter()
        .chain(a[1].1.iter())
        .filter(|(r, _)| matches!(r.as_str(), "TransientError" | "Throttled"))
        .count();
    assert!(faults > 0, "faults were injected: {:?}", a[0].1);
    assert_eq!(
        a, b,
        "same seed, same ids, names and events in the same order"
    );
    let c = faulty_run(8).await;
    assert_ne!(a[0].0, c[0].0, "another seed, other cluster ids");
}
