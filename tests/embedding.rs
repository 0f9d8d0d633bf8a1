//! The engine as an embedding application sees it: applying spec documents (idempotent),
//! awaiting a reconcile instead of sleeping, typed errors, "why is it stuck", shutdown from
//! any clone, metrics. On the simulated cloud and the SQLite store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use spectro::engine::status::Phase;
use spectro::engine::{ApplyAction, BlockerKind, BlockerScope, ReconcileOutcome};
use spectro::model::document::Format;
use spectro::sim::SimConfig;
use spectro::{CoreError, Engine, EngineConfig, SqliteStore};

async fn bare_engine(dir: &std::path::Path, sim: Arc<spectro::sim::SimCloud>) -> Engine {
    let store = Arc::new(SqliteStore::open(dir.join("spectro.db")).unwrap());
    engine_on(store, sim, EngineConfig::fast()).await
}

fn all_documents() -> String {
    format!("kind: CloudAccount\n{ACCOUNT}\n---\nkind: Cluster\n{CLUSTER}\n---\nkind: ClusterProfile\n{PROFILE}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_in_dependency_order_and_reapplying_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = bare_engine(dir.path(), sim(SimConfig::default())).await;

    // The cluster comes first in the file; the profile and account it names are applied
    // before it.
    let applied = engine
        .apply_text(&all_documents(), Format::Yaml)
        .await
        .unwrap();
    let kinds: Vec<(&str, ApplyAction)> = applied.iter().map(|a| (a.kind, a.action)).collect();
    assert_eq!(
        kinds,
        [
            ("CloudAccount", ApplyAction::Created),
            ("ClusterProfile", ApplyAction::Created),
            ("Cluster", ApplyAction::Created)
        ]
    );
    let id = applied[2].cluster.expect("a cluster id");
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();

    // Same file again: nothing written (no new profile revision, no new generation).
    let again = engine
        .apply_text(&all_documents(), Format::Yaml)
        .await
        .unwrap();
    assert!(
        again.iter().all(|a| a.action == ApplyAction::Unchanged),
        "{again:?}"
    );
    assert_eq!(engine.profile("demo", "1.0.0").await.unwrap().unwrap().1, 1);
    assert_eq!(engine.cluster(id).await.unwrap().generation, 1);
    assert!(engine.update_notification(id).await.unwrap().is_none());

    // A changed pool size is an update of the same cluster.
    let scaled = all_documents().replacen("size: 2", "size: 4", 1);
    let applied = engine.apply_text(&scaled, Format::Yaml).await.unwrap();
    let c = applied.iter().find(|a| a.kind == "Cluster").unwrap();
    assert_eq!(
        (c.action, c.revision, c.cluster),
        (ApplyAction::Updated, 2, Some(id))
    );
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(rec.status.pools["batch"].ready, 4);

    // A text that does not parse is refused as a whole, naming document and field.
    let err = engine
        .apply_text("kind: Cluster\nname: x\nnodePools: 7\n", Format::Yaml)
        .await
        .unwrap_err();
    match &err {
        CoreError::Invalid { violations, .. } => {
            assert!(
                violations[0].path.starts_with("documents[0]"),
                "{violations:?}"
            )
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_reconcile_reports_how_it_ended_instead_of_sleeping() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = setup(dir.path(), sim(SimConfig::default())).await;
    let id = engine.create_cluster(&cluster("awaited")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    // A converged cluster: a kicked reconcile reports Converged and the resync delay.
    let report = engine.next_reconcile(id, true, T).await.unwrap();
    assert_eq!(report.cluster, id);
    assert_eq!(report.outcome, ReconcileOutcome::Converged);
    assert!(report.requeue_after.unwrap() >= Duration::from_secs(500));
    // Not kicked and nothing due: the wait runs out with a typed timeout.
    match engine
        .next_reconcile(id, false, Duration::from_millis(200))
        .await
    {
        Err(CoreError::Timeout {
            phase: Phase::Running,
            last_error: None,
            ..
        }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_quota_blocker_with_since_then_nothing_once_raised() {
    let dir = tempfile::tempdir().unwrap();
    // 3 control-plane m5.large = 6 vCPU fit; the workers do not.
    let sim = sim(SimConfig {
        vcpu_limit: Some(8),
        ..Default::default()
    });
    let (engine, _) = setup(dir.path(), sim.clone()).await;
    let id = engine.create_cluster(&cluster("stuck")).await.unwrap();
    // Typed timeout: the phase and the cloud's last error are inside.
    match engine
        .wait_for_phase(id, Phase::Running, Duration::from_millis(1500))
        .await
    {
        Err(CoreError::Timeout {
            phase, last_error, ..
        }) => {
            assert_eq!(phase, Phase::Provisioning);
            assert!(last_error.unwrap().contains("vCPU limit"));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let why = engine.explain(id).await.unwrap();
    assert!(!why.converged);
    let quota = why
        .blockers
        .iter()
        .find(|b| b.kind == BlockerKind::Quota)
        .unwrap_or_else(|| panic!("{why:#?}"));
    assert_eq!(quota.scope, BlockerScope::Cluster);
    assert!(quota.message.contains("VcpuLimitExceeded"), "{quota:?}");
    assert!(quota.since.is_some());
    assert!(why.observed_at.is_some());
    assert!(
        why.blockers.iter().any(|b| b.kind == BlockerKind::Backoff),
        "{why:#?}"
    );

    sim.set_vcpu_limit(Some(64));
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let why = engine.explain(id).await.unwrap();
    assert!(why.converged, "{why:#?}");
    assert!(why.blockers.is_empty(), "{why:#?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_machines_booting_while_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(SimConfig {
        boot_time: Duration::from_secs(3),
        ..Default::default()
    });
    let (engine, _) = setup(dir.path(), sim).await;
    let id = engine.create_cluster(&cluster("booting")).await.unwrap();
    let mut seen = None;
    for _ in 0..100 {
        let why = engine.explain(id).await.unwrap();
        if let Some(b) = why
            .blockers
            .iter()
            .find(|b| b.kind == BlockerKind::MachineBooting)
        {
            seen = Some((b.clone(), why.blockers.clone()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (booting, all) = seen.expect("a booting machine is explained");
    assert!(
        matches!(booting.scope, BlockerScope::Machine(ref m) if m.starts_with("booting-master-"))
    );
    assert!(booting.since.is_some());
    // Workers wait for the control plane meanwhile: a pool-level blocker.
    assert!(
        all.iter().any(|b| b.kind == BlockerKind::ControlPlane
            && matches!(&b.scope, BlockerScope::Pool(p) if p == "general")),
        "{all:#?}"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_from_any_clone_refuses_new_work_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = setup(dir.path(), sim(SimConfig::default())).await;
    let shared = Arc::new(engine.clone());
    let id = engine.create_cluster(&cluster("kept")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();

    // A task holding the engine in an Arc stops it.
    let stopper = {
        let shared = shared.clone();
        tokio::spawn(async move { shared.shutdown().await })
    };
    stopper.await.unwrap();
    assert!(engine.is_shut_down());
    match engine.create_cluster(&cluster("late")).await {
        Err(CoreError::Shutdown) => {}
        other => panic!("expected Shutdown, got {other:?}"),
    }
    // Reads still work, and a second shutdown returns at once.
    assert_eq!(
        engine.cluster(id).await.unwrap().status.phase,
        Phase::Running
    );
    engine.shutdown().await;

    // A new engine on the same store resumes the cluster.
    let again = engine_on(store, sim(SimConfig::default()), EngineConfig::fast()).await;
    let report = again.next_reconcile(id, true, T).await.unwrap();
    assert!(
        matches!(
            report.outcome,
            ReconcileOutcome::Converged | ReconcileOutcome::Progress | ReconcileOutcome::Waiting
        ),
        "{report:?}"
    );
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_reconciles_cloud_calls_and_clusters_by_phase() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, _) = setup(dir.path(), sim(SimConfig::default())).await;
    let id = engine.create_cluster(&cluster("measured")).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    engine.next_reconcile(id, true, T).await.unwrap();
    let text = engine.metrics_text();
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(value("spectro_reconciles_total{outcome=\"converged\"}") >= 1.0);
    assert!(
        value(
            "spectro_cloud_calls_total{provider=\"aws\",operation=\"create_machines\",outcome=\"ok\"}"
        ) >= 8.0
    );
    assert!(
        value("spectro_cloud_calls_total{provider=\"aws\",operation=\"list_machines\",outcome=\"ok\"}")
            >= 1.0
    );
    assert_eq!(value("spectro_clusters{phase=\"running\"}"), 1.0);
    assert!(text.contains("spectro_reconcile_duration_seconds_bucket"));
    assert!(text.contains("spectro_queue_depth{state=\"scheduled\"}"));
    engine.shutdown().await;
}
