//! Correctness of what the engine claims: profile versions move through the update
//! notification, catalog objects can be deleted only when unused, pools rebalance over new
//! zones, a seed replays a faulty run exactly, and the simulated cloud conforms to the provider
//! contract (with and without injected faults).

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
    let deadline = spectro::clock::instant_now() + T;
    loop {
        let ev = engine.events(Some(id), 0, 10_000).await.unwrap();
        if ev.iter().any(|e| e.reason == "ProfileUpdateAvailable") {
            break;
        }
        assert!(
            spectro::clock::instant_now() < deadline,
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

/// The provider conformance kit against the simulated cloud (answering as AWS), and against
/// two broken providers built on it, to show the kit catches what it claims to.
mod conformance {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use async_trait::async_trait;
    use spectro::conformance::{run, Outcome, ProviderHarness};
    use spectro::contract::Rule;
    use spectro::model::{CloudAccount, CloudType, Credentials};
    use spectro::provider::{
        CloudProvider, ClusterContext, DeleteStatus, ImageRef, ImageSpec, InfraStatus, Machine,
        MachineBatch, ProviderError,
    };
    use spectro::sim::{SimCloud, SimConfig};
    use spectro::ClusterId;

    use super::common::{account, cluster, profile};

    struct SimHarness {
        name: &'static str,
        provider: Arc<dyn CloudProvider>,
        deviations: Vec<(Rule, String)>,
    }

    impl SimHarness {
        fn new(name: &'static str, provider: Arc<dyn CloudProvider>) -> Self {
            SimHarness {
                name,
                provider,
                deviations: Vec::new(),
            }
        }
    }

    impl ProviderHarness for SimHarness {
        fn name(&self) -> String {
            self.name.to_string()
        }

        fn provider(&self) -> Arc<dyn CloudProvider> {
            self.provider.clone()
        }

        fn cluster(&self, name: &str) -> ClusterContext {
            ClusterContext {
                cluster_id: ClusterId::new(),
                spec: cluster(name),
                profile: profile(),
                account: account(),
                vip: None,
                image: None,
                deleting: false,
            }
        }

        fn rejected_account(&self) -> Option<CloudAccount> {
            let mut a = account();
            if let Credentials::Aws(c) = &mut a.credentials {
                c.secret_access_key = "invalid".into();
            }
            Some(a)
        }

        fn not_applicable(&self) -> Vec<(Rule, String)> {
            let no_tags = "the simulated cloud keeps each cluster's resources under its id: it has no tags to read";
            let any_image = "the simulated cloud accepts any image id";
            vec![
                (Rule::P6, any_image.into()),
                (Rule::P18, any_image.into()),
                (Rule::P9, no_tags.into()),
                (Rule::P10, no_tags.into()),
                (
                    Rule::P14,
                    "the simulated cloud is in-process: the provider object is the cloud, there is no second client".into(),
                ),
            ]
        }

        fn known_deviations(&self) -> Vec<(Rule, String)> {
            self.deviations.clone()
        }

        fn timeout(&self) -> Duration {
            Duration::from_secs(20)
        }

        fn poll_interval(&self) -> Duration {
            Duration::from_millis(20)
        }
    }

    fn sim(config: SimConfig) -> Arc<SimCloud> {
        Arc::new(SimCloud::new(CloudType::Aws, config))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_simulated_cloud_conforms_to_the_provider_contract() {
        // Fleet listings on: P24 checks the simulated cloud's own `list_fleet`.
        let clean = sim(SimConfig {
            fleet_listing: true,
            ..SimConfig::default()
        });
        let report = run(&SimHarness::new("simulated cloud", clean.clone())).await;
        eprintln!("{report}");
        report.assert_conforms();
        assert_eq!(report.counts().passed, 19);
        assert!(
            report.notes.iter().any(|n| n.contains("P24: fleet sim")),
            "{:?}",
            report.notes
        );
        assert_eq!(clean.total_resources(), 0, "the kit cleans up");

        // Faults, throttling, lost answers (the call took effect), a lagging listing, slow
        // boots and deletes: the kit retries as the engine does, and every rule still holds.
        let faulty = sim(SimConfig {
            seed: 11,
            fault_rate: 0.1,
            throttle_rate: 0.05,
            lost_response_rate: 0.1,
            throttle_retry_after: Duration::from_millis(10),
            list_lag: Duration::from_millis(50),
            boot_time: Duration::from_millis(100),
            infra_ready_time: Duration::from_millis(150),
            delete_time: Duration::from_millis(100),
            ..SimConfig::default()
        });
        let report = run(&SimHarness::new(
            "simulated cloud with faults",
            faulty.clone(),
        ))
        .await;
        eprintln!("{report}");
        report.assert_conforms();
        assert!(
            report.notes.iter().any(|n| n.contains("retried")),
            "faults were injected and retried: {:?}",
            report.notes
        );
        assert_eq!(faulty.total_resources(), 0, "the kit cleans up");
    }

    /// A provider on the simulated cloud with one of two classic bugs.
    struct Buggy {
        sim: Arc<SimCloud>,
        bug: Bug,
        tokens: Mutex<HashSet<String>>,
        deleted: Mutex<HashSet<String>>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Bug {
        /// Relies on a client token the cloud ignores: a repeated create launches again.
        IgnoredToken,
        /// Refuses to delete what is already gone.
        GoneIsAnError,
    }

    #[async_trait]
    impl CloudProvider for Buggy {
        fn cloud(&self) -> CloudType {
            self.sim.cloud()
        }
        async fn validate_account(&self, a: &CloudAccount) -> Result<(), ProviderError> {
            self.sim.validate_account(a).await
        }
        async fn ensure_image(
            &self,
            ctx: &ClusterContext,
            spec: &ImageSpec,
        ) -> Result<ImageRef, ProviderError> {
            self.sim.ensure_image(ctx, spec).await
        }
        async fn ensure_infrastructure(
            &self,
            ctx: &ClusterContext,
        ) -> Result<InfraStatus, ProviderError> {
            self.sim.ensure_infrastructure(ctx).await
        }
        async fn list_machines(&self, ctx: &ClusterContext) -> Result<Vec<Machine>, ProviderError> {
            self.sim.list_machines(ctx).await
        }
        async fn create_machines(
            &self,
            ctx: &ClusterContext,
            infra: &InfraStatus,
            batch: &MachineBatch,
        ) -> Result<Vec<Machine>, ProviderError> {
            let seen = !self.tokens.lock().unwrap().insert(batch.token.clone());
            if self.bug == Bug::IgnoredToken && seen {
                let mut again = batch.clone();
                again.token = uuid::Uuid::new_v4().to_string();
                return self.sim.create_machines(ctx, infra, &again).await;
            }
            self.sim.create_machines(ctx, infra, batch).await
        }
        async fn delete_machines(
            &self,
            ctx: &ClusterContext,
            machines: &[Machine],
        ) -> Result<(), ProviderError> {
            let gone = {
                let mut deleted = self.deleted.lock().unwrap();
                let gone = machines.iter().any(|m| deleted.contains(&m.id));
                if !gone || self.bug != Bug::GoneIsAnError {
                    deleted.extend(machines.iter().map(|m| m.id.clone()));
                }
                gone
            };
            if self.bug == Bug::GoneIsAnError && gone {
                return Err(ProviderError::terminal(
                    "InvalidInstanceID.NotFound: the instance does not exist",
                ));
            }
            self.sim.delete_machines(ctx, machines).await
        }
        async fn delete_infrastructure(
            &self,
            ctx: &ClusterContext,
        ) -> Result<DeleteStatus, ProviderError> {
            self.sim.delete_infrastructure(ctx).await
        }
    }

    fn buggy(bug: Bug) -> Arc<Buggy> {
        Arc::new(Buggy {
            sim: sim(SimConfig::default()),
            bug,
            tokens: Mutex::default(),
            deleted: Mutex::default(),
        })
    }

    fn failed(report: &spectro::conformance::ConformanceReport) -> Vec<Rule> {
        report.failures().iter().map(|r| r.rule).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_kit_catches_broken_providers_and_reports_declared_deviations() {
        // A create repeated with its token launches new machines: P15 fails, and so does the
        // count of P16 (the duplicates are listed).
        let p = buggy(Bug::IgnoredToken);
        let report = run(&SimHarness::new("ignores tokens", p.clone())).await;
        eprintln!("{report}");
        assert_eq!(failed(&report), [Rule::P15, Rule::P16], "{report}");
        assert!(
            matches!(report.outcome(Rule::P15), Some(Outcome::Failed(m)) if m.contains("returned")),
            "{report}"
        );
        assert_eq!(
            p.sim.total_resources(),
            0,
            "cleaned up, duplicates included"
        );

        // Deleting a gone machine is an error: exactly P20 fails...
        let report = run(&SimHarness::new(
            "gone is an error",
            buggy(Bug::GoneIsAnError),
        ))
        .await;
        assert_eq!(failed(&report), [Rule::P20], "{report}");
        let panic = std::panic::catch_unwind(|| report.assert_conforms()).unwrap_err();
        let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("P20 (MUST"), "{text}");

        // ...and, declared as a known deviation with its reason, it is an expected failure.
        let mut declared = SimHarness::new("gone is an error, declared", buggy(Bug::GoneIsAnError));
        declared.deviations = vec![(Rule::P20, "the cloud says NotFound".into())];
        let report = run(&declared).await;
        report.assert_conforms();
        assert!(matches!(
            report.outcome(Rule::P20),
            Some(Outcome::ExpectedFailure { reason, .. }) if reason == "the cloud says NotFound"
        ));
        assert_eq!(report.counts().expected_failures, 1);

        // A deviation that no longer fails is reported, so the declaration stays true.
        let mut stale = SimHarness::new("stale declaration", sim(SimConfig::default()));
        stale.deviations = vec![(Rule::P20, "fixed long ago".into())];
        let report = run(&stale).await;
        assert_eq!(failed(&report), [Rule::P20]);
        assert!(matches!(
            report.outcome(Rule::P20),
            Some(Outcome::UnexpectedPass { .. })
        ));
    }
}
