//! The planner alone: `plan(&PlanInput)` and `preview_update` on plain values, no store, no
//! cloud, no runtime. What one reconcile round costs in CPU before any cloud call.
//!
//! Scenarios (an AWS cluster, pools spread over 3 zones, image and infrastructure ready):
//! - `new-cluster`: nothing observed yet; the plan creates the first control-plane node;
//! - `converged/N`: 3 control-plane nodes + N workers all running at their shape; the plan
//!   is empty (the steady-state reconcile), N = 10, 100, 1000;
//! - `rolling/N`: the workers' instance type changed, half of the N workers already
//!   replaced; the plan creates the next new node (surge 1);
//! - `preview-update`: the dry run of an update that scales, repaves (instance type and
//!   Kubernetes version), adds a pool and moves zones.

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spectro::engine::planner::{image_spec, plan, preview_update, shape_hash, Action, PlanInput};
use spectro::engine::status::{Lifecycle, ResolvedImage};
use spectro::model::document::{from_text, Format};
use spectro::model::{Cluster, ClusterProfile};
use spectro::provider::{ImageRef, InfraStatus, Machine, MachineState};

const PROFILE: &str = "\
name: p
version: '1'
cloud: aws
packs:
  - {name: ubuntu, layer: os, version: '22.04'}
  - {name: kubernetes, layer: kubernetes, version: 1.30.4}
  - {name: calico, layer: cni, version: 3.28.0}
";

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const IMAGE: &str = "ami-1";

/// A cluster of 3 control-plane nodes and `workers` workers, both pools over `ZONES`.
fn cluster(workers: u32) -> Cluster {
    let text = format!(
        "name: c
profile: {{name: p, version: '1'}}
cloudAccount: a
cloud: {{aws: {{region: us-east-1}}}}
nodePools:
  - {{name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [{z}]}}
  - {{name: w, role: worker, size: {workers}, instanceType: m5.large, availabilityZones: [{z}]}}
",
        z = ZONES.join(", ")
    );
    from_text(&text, Format::Yaml).expect("the bench's cluster parses")
}

/// Everything a plan reads, owned.
struct Fixture {
    spec: Cluster,
    profile: ClusterProfile,
    image: ResolvedImage,
    infra: InfraStatus,
    machines: Vec<Machine>,
    now: DateTime<Utc>,
}

impl Fixture {
    fn new(workers: u32) -> Fixture {
        let profile: ClusterProfile =
            from_text(PROFILE, Format::Yaml).expect("the bench's profile parses");
        let signature = image_spec(&profile)
            .expect("the profile has OS and Kubernetes packs")
            .signature;
        Fixture {
            spec: cluster(workers),
            profile,
            image: ResolvedImage {
                signature,
                image: ImageRef {
                    id: IMAGE.into(),
                    customized: false,
                },
            },
            infra: InfraStatus {
                ready: true,
                ..Default::default()
            },
            machines: Vec::new(),
            now: DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time"),
        }
    }

    /// Adds `n` running machines of pool `pool` (index in the spec) round-robin over the
    /// zones, as the planner spreads them, with the pool's current shape.
    fn run(&mut self, pool: usize, n: u32) {
        let p = self.spec.node_pools[pool].clone();
        for i in 0..n as usize {
            let zone = ZONES[i % ZONES.len()];
            let k = self.machines.len();
            self.machines.push(Machine {
                id: format!("i-{k:08x}"),
                name: format!("{}-{k}", p.name),
                pool: p.name.clone(),
                role: p.role,
                zone: zone.into(),
                shape: shape_hash(&p, zone, IMAGE),
                token: format!("tok-{}", k / 16),
                state: MachineState::Running,
                address: None,
                created_at: self.now - chrono::Duration::seconds(86_400 - k as i64),
            });
        }
    }

    fn input(&self) -> PlanInput<'_> {
        static NO_PACKS: std::collections::BTreeMap<String, spectro::records::status::AppliedPack> =
            std::collections::BTreeMap::new();
        PlanInput {
            spec: &self.spec,
            profile: &self.profile,
            lifecycle: Lifecycle::Active,
            image: Some(&self.image),
            infra: Some(&self.infra),
            infra_stale: false,
            machines: &self.machines,
            intents: &[],
            now: self.now,
            machine_timeout: Duration::from_secs(1200),
            infra_deleted: false,
            workload: None,
            nodes: Default::default(),
            applied_packs: &NO_PACKS,
            system_packs: &[],
        }
    }
}

fn converged(workers: u32) -> Fixture {
    let mut fx = Fixture::new(workers);
    fx.run(0, 3);
    fx.run(1, workers);
    fx
}

/// Half the workers still of the old instance type, half already replaced.
fn rolling(workers: u32) -> Fixture {
    let mut fx = converged(workers);
    fx.spec.node_pools[1].instance_type = Some("m5.xlarge".into());
    let new = fx.spec.node_pools[1].clone();
    for m in fx.machines.iter_mut().filter(|m| m.pool == "w").step_by(2) {
        m.shape = shape_hash(&new, &m.zone, IMAGE);
    }
    fx
}

fn bench_plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("planner");

    let fx = Fixture::new(10);
    let p = plan(&fx.input());
    assert!(
        matches!(p.actions.as_slice(), [Action::CreateMachines(r)] if r.pool == "cp"),
        "a new cluster starts with its first control-plane node: {:?}",
        p.actions
    );
    g.bench_function("new-cluster", |b| b.iter(|| plan(black_box(&fx.input()))));

    for n in [10, 100, 1000] {
        let fx = converged(n);
        let p = plan(&fx.input());
        assert!(
            p.actions.is_empty() && p.assessment.converged,
            "{:?}",
            p.actions
        );
        g.bench_with_input(BenchmarkId::new("converged", n), &fx, |b, fx| {
            b.iter(|| plan(black_box(&fx.input())))
        });
    }

    for n in [100, 1000] {
        let fx = rolling(n);
        let p = plan(&fx.input());
        assert_eq!(p.assessment.pools["w"].outdated, n / 2);
        assert!(
            matches!(p.actions.as_slice(), [Action::CreateMachines(r)] if r.pool == "w" && r.count == 1),
            "surge 1: {:?}",
            p.actions
        );
        g.bench_with_input(BenchmarkId::new("rolling", n), &fx, |b, fx| {
            b.iter(|| plan(black_box(&fx.input())))
        });
    }

    let old = cluster(100);
    let mut new = old.clone();
    new.node_pools[0].instance_type = Some("m5.xlarge".into());
    new.node_pools[1].size = 150;
    new.node_pools[1].availability_zones.truncate(2);
    let mut gpu = new.node_pools[1].clone();
    gpu.name = "gpu".into();
    gpu.size = 4;
    gpu.instance_type = Some("g5.xlarge".into());
    new.node_pools.push(gpu);
    let old_profile: ClusterProfile = from_text(PROFILE, Format::Yaml).expect("parses");
    let mut new_profile = old_profile.clone();
    new_profile.packs[1].version = "1.31.0".into();
    let p = preview_update(&old, &old_profile, &new, &new_profile);
    assert!(p.image_changes && p.creates > 0 && p.deletes > 0, "{p:?}");
    g.bench_function("preview-update", |b| {
        b.iter(|| {
            preview_update(
                black_box(&old),
                black_box(&old_profile),
                black_box(&new),
                black_box(&new_profile),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
