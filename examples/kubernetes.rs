//! The engine managing a Kubernetes cluster, not only its machines: the real kube-apiserver
//! and etcd (built from their Go modules by `scripts/kube-peers`, started here on loopback),
//! kubelets simulated as kwok does for the simulated cloud's machines, and an etcd cluster
//! whose members stand for the control-plane machines.
//!
//! `cargo run --example kubernetes` creates a 3 + 2 cluster whose Nodes become Ready, replaces
//! the control plane (instance type change) while sampling etcd quorum, scales the workers
//! down through a drain that a PodDisruptionBudget first blocks, and changes a pack override;
//! after each step it prints `kubectl get nodes` and the etcd member list. Exits non-zero if
//! quorum was ever lost, a removed Node remains, or the override did not reach the apiserver.

#[path = "../tests/common/kubepeers.rs"]
mod kubepeers;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use spectro::engine::status::Phase;
use spectro::model::document::{from_text, Format};
use spectro::model::{CloudAccount, CloudType, Cluster, ClusterProfile, PoolRole};
use spectro::provider::{ClusterId, MachineState};
use spectro::sim::{SimCloud, SimConfig};
use spectro::{Engine, EngineConfig, SqliteStore};

use kubepeers::{connector, ApiServer, Budget, EtcdCluster, Kubelets, QuorumSampler};

const PROFILE: &str = r#"
name: kube-demo
version: 1.0.0
cloud: aws
packs:
  - { name: ubuntu, layer: os, version: "22.04" }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - name: calico
    layer: cni
    version: 3.28.0
    values: "mtu: 1440"
    manifests: |
      apiVersion: v1
      kind: Namespace
      metadata: { name: calico-system }
      ---
      apiVersion: v1
      kind: ConfigMap
      metadata: { name: calico-config, namespace: calico-system }
      data: { mtu: "{{ .Values.mtu }}" }
"#;

const ACCOUNT: &str = r#"
name: sim
credentials:
  aws: { accessKeyId: AKIAEXAMPLE000000000, secretAccessKey: not-used-by-the-simulator }
"#;

const CLUSTER: &str = r#"
name: kube-demo
profile: { name: kube-demo, version: 1.0.0 }
cloudAccount: sim
cloud: { aws: { region: us-east-1 } }
nodePools:
  - { name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
  - { name: workers, role: worker, size: 2, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b] }
"#;

type Failure = Box<dyn std::error::Error + Send + Sync>;

async fn show(step: &str, api: &ApiServer, etcd: &EtcdCluster) {
    println!("\n== {step}\n$ kubectl get nodes");
    print!("{}", api.kubectl(&["get", "nodes"]));
    println!("etcd members:");
    for m in etcd.member_states().await {
        println!(
            "  {:x}  {}  {}",
            m.id,
            m.name,
            if m.healthy { "healthy" } else { "unhealthy" }
        );
    }
}

fn running(sim: &SimCloud, id: ClusterId, role: PoolRole) -> Vec<String> {
    sim.machines(id)
        .into_iter()
        .map(|i| i.machine)
        .filter(|m| m.state == MachineState::Running && m.role == role)
        .map(|m| m.name)
        .collect()
}

#[tokio::main]
async fn main() -> Result<ExitCode, Failure> {
    let api = ApiServer::start().await;
    let client = api.client().await;
    let etcd = EtcdCluster::new();
    let sim = Arc::new(SimCloud::new(CloudType::Aws, SimConfig::default()));
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db"))?);
    let engine = Engine::builder(store)
        .provider(sim.clone())
        .workload(Arc::new(connector(&api, Some(etcd.clone()))))
        .config(EngineConfig {
            poll_interval: Duration::from_millis(100),
            ..EngineConfig::fast()
        })
        .start()
        .await?;
    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml)?;
    let account: CloudAccount = from_text(ACCOUNT, Format::Yaml)?;
    let cluster: Cluster = from_text(CLUSTER, Format::Yaml)?;
    engine.put_profile(&profile).await?;
    engine.put_cloud_account(&account).await?;
    let id = engine.create_cluster(&cluster).await?;
    let _kubelets = Kubelets::spawn(client.clone(), sim.clone(), id, Some(etcd.clone()));
    let t = Duration::from_secs(180);
    let rec = engine.wait_for_phase(id, Phase::Running, t).await?;
    show("cluster running: every Node Ready", &api, &etcd).await;
    let mut ok = true;

    // Control-plane replacement, quorum sampled all along.
    let old_cp = running(&sim, id, PoolRole::ControlPlane);
    let sampler = QuorumSampler::start(etcd.clone());
    let mut spec = rec.spec.clone();
    spec.node_pools[0].instance_type = Some("m5.xlarge".into());
    engine.update_cluster(id, &spec).await?;
    let rec = engine.wait_for_phase(id, Phase::Running, t).await?;
    let (n, l) = sampler.finish().await;
    show(
        "control plane replaced (m5.large -> m5.xlarge)",
        &api,
        &etcd,
    )
    .await;
    println!("quorum samples: {n}, lost: {l}");
    if l > 0 {
        eprintln!("FAIL: etcd quorum lost in {l} of {n} samples");
        ok = false;
    }
    let nodes = api.kubectl(&["get", "nodes", "-o", "name"]);
    for m in &old_cp {
        if nodes.contains(&format!("node/{m}\n")) {
            eprintln!("FAIL: the Node of removed machine {m} remains");
            ok = false;
        }
    }

    // Worker scale-down: one pod per worker under a budget; the drain waits until it allows.
    let workers = running(&sim, id, PoolRole::Worker);
    let budget = Budget::create(&client, "web", &workers).await;
    let mut spec = rec.spec.clone();
    spec.node_pools[1].size = 1;
    engine.update_cluster(id, &spec).await?;
    let blocked = engine
        .wait_for(id, t, |r| {
            r.status.conditions.iter().any(|c| c.reason == "Draining")
        })
        .await?;
    if let Some(c) = blocked
        .status
        .conditions
        .iter()
        .find(|c| c.reason == "Draining")
    {
        println!("\n{}: {}", c.kind.label(), c.message);
    }
    budget.allow(1).await;
    let rec = engine.wait_for_phase(id, Phase::Running, t).await?;
    show("workers scaled down 2 -> 1 after the drain", &api, &etcd).await;
    let left = running(&sim, id, PoolRole::Worker);
    let nodes = api.kubectl(&["get", "nodes", "-o", "name"]);
    for w in workers.iter().filter(|w| !left.contains(w)) {
        if nodes.contains(&format!("node/{w}\n")) {
            eprintln!("FAIL: the Node of removed machine {w} remains");
            ok = false;
        }
    }

    // A pack override on the running cluster.
    engine.set_pack_values(id, "calico", "mtu: 9000").await?;
    engine.wait_for_phase(id, Phase::Running, t).await?;
    let mtu = api.kubectl(&[
        "get",
        "configmap",
        "calico-config",
        "-n",
        "calico-system",
        "-o",
        "jsonpath={.data.mtu}",
    ]);
    println!("\n== calico override mtu=9000: calico-config data.mtu = {mtu}");
    if mtu != "9000" {
        eprintln!("FAIL: the override did not reach the API server ({mtu})");
        ok = false;
    }
    let rec2 = engine.cluster(id).await?;
    for (name, p) in &rec2.status.packs {
        println!(
            "pack {name} {} revision {} ({} objects)",
            p.version,
            p.revision,
            p.objects.len()
        );
    }
    let _ = rec;
    engine.shutdown().await;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
