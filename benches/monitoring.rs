//! Monitoring benchmarks:
//! - judging health (`health::observe` + `health::evaluate`) for a 100-node report;
//! - rolling up one 5-minute bucket (10 samples at 30 s) of a 100-node cluster;
//! - `Engine::agent_report` end to end on SQLite (authenticate, fold, sample, judge, write)
//!   for a 10-node and a 100-node report: the reports one engine takes per second.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spectro::engine::AgentSettings;
use spectro::model::document::{from_text, Format};
use spectro::model::CloudType;
use spectro::monitoring::credential::AgentKey;
use spectro::monitoring::health::{evaluate, observe, HealthPolicy};
use spectro::monitoring::report::{
    AgentReport, NodeConditionReport, NodeReport, ReportBatch, Resources,
};
use spectro::monitoring::usage::{downsample, UsageSample};
use spectro::monitoring::MonitorState;
use spectro::sim::{SimCloud, SimConfig};
use spectro::{Engine, EngineConfig, SqliteStore};

const PROFILE: &str = "name: bench\nversion: '1'\ncloud: aws\npacks:\n  - {name: ubuntu, layer: os, version: '22.04'}\n  - {name: kubernetes, layer: kubernetes, version: 1.30.4}\n  - {name: calico, layer: cni, version: 3.28.0}\n";
const ACCOUNT: &str =
    "name: sim\ncredentials:\n  aws: {accessKeyId: AKIABENCHMARK0000000, secretAccessKey: x}\n";
const CLUSTER: &str = "name: c\nprofile: {name: bench, version: '1'}\ncloudAccount: sim\ncloud: {aws: {region: us-east-1}}\nnodePools:\n  - {name: cp, role: controlPlane, size: 1, instanceType: m5.large, availabilityZones: [us-east-1a]}\n  - {name: workers, role: worker, size: 1, instanceType: m5.xlarge, availabilityZones: [us-east-1a]}\n";

fn report(at: DateTime<Utc>, nodes: usize) -> AgentReport {
    AgentReport {
        agent_version: "bench".into(),
        collected_at: at,
        nodes: (0..nodes)
            .map(|i| NodeReport {
                name: format!("node-{i:03}"),
                control_plane: i < 3,
                conditions: ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                    .iter()
                    .map(|k| NodeConditionReport {
                        kind: (*k).into(),
                        status: if *k == "Ready" { "True" } else { "False" }.into(),
                        ..Default::default()
                    })
                    .collect(),
                capacity: Resources {
                    cpu_millicores: 8000,
                    memory_bytes: 32 << 30,
                },
                allocatable: Resources {
                    cpu_millicores: 7800,
                    memory_bytes: 31 << 30,
                },
                usage: Some(Resources {
                    cpu_millicores: 1000 + i as u64,
                    memory_bytes: 8 << 30,
                }),
                requests: Resources {
                    cpu_millicores: 1000,
                    memory_bytes: 1 << 30,
                },
                pods: 10,
                ..Default::default()
            })
            .collect(),
        metrics_available: true,
        ..Default::default()
    }
}

fn bench_pure(c: &mut Criterion) {
    let policy = HealthPolicy::default();
    let now = spectro::clock::system_now();
    let r = report(now, 100);
    c.bench_function("health/observe+evaluate 100 nodes", |b| {
        let mut state = MonitorState::default();
        b.iter(|| {
            observe(&policy, &mut state, &r, now);
            evaluate(&policy, &state, now)
        })
    });
    let samples: Vec<UsageSample> = (0..10)
        .map(|i| UsageSample::from_report(&r, now + chrono::Duration::seconds(30 * i)))
        .collect();
    c.bench_function("usage/roll up a 5-minute bucket of 100 nodes", |b| {
        b.iter(|| downsample(&samples, Duration::from_secs(300)))
    });
}

fn bench_report(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, id) = rt.block_on(async {
        let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
        let engine = Engine::builder(store)
            .provider(Arc::new(SimCloud::new(
                CloudType::Aws,
                SimConfig::default(),
            )))
            .agent(AgentSettings {
                key: AgentKey::random(),
                deployment: None,
            })
            .config(EngineConfig::fast())
            .start()
            .await
            .unwrap();
        engine
            .put_profile(&from_text(PROFILE, Format::Yaml).unwrap())
            .await
            .unwrap();
        engine
            .put_cloud_account(&from_text(ACCOUNT, Format::Yaml).unwrap())
            .await
            .unwrap();
        let id = engine
            .create_cluster(&from_text(CLUSTER, Format::Yaml).unwrap())
            .await
            .unwrap();
        (engine, id)
    });
    let token = engine.agent_token(id).unwrap();
    let mut g = c.benchmark_group("agent_report (SQLite)");
    for nodes in [10usize, 100] {
        g.bench_with_input(BenchmarkId::from_parameter(nodes), &nodes, |b, &n| {
            b.iter(|| {
                // Each report newer than the last (a re-sent one is skipped).
                let at = spectro::clock::system_now();
                let batch = ReportBatch {
                    reports: vec![report(at, n)],
                };
                rt.block_on(engine.agent_report(id, token.expose(), &batch))
                    .unwrap()
            })
        });
    }
    g.finish();
    rt.block_on(engine.shutdown());
}

criterion_group!(benches, bench_pure, bench_report);
criterion_main!(benches);
