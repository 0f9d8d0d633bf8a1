//! Static-IP clusters (the vSphere path) on the simulated cloud: node addresses and the
//! control-plane VIP come from IP pools, are unique, are released on scale-down and delete,
//! and an address allocated for a machine that never got created is collected.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use spectro::engine::status::Phase;
use spectro::model::document::{from_text, Format};
use spectro::model::{CloudType, Cluster, IpPool};
use spectro::sim::{SimCloud, SimConfig};
use spectro::store::{IpRequest, Store};
use spectro::{Engine, EngineConfig, SqliteStore};

const SPECS: &str = r#"
kind: PrivateCloudGateway
name: gw
size: 1
ipPools: [cp-pool, worker-pool]
---
kind: IpPool
name: cp-pool
gatewayName: gw
range: { start: 10.10.0.10, end: 10.10.0.20 }
prefix: 24
gateway: 10.10.0.1
nameservers: [10.10.0.2]
---
kind: IpPool
name: worker-pool
gatewayName: gw
subnet: 10.10.1.0/28
prefix: 24
gateway: 10.10.1.1
---
kind: CloudAccount
name: vc
credentials:
  vsphere: { gateway: gw, vcenterHost: vcenter.example.org, username: admin, password: secret-pw }
---
kind: ClusterProfile
name: vs
version: '1'
cloud: vsphere
packs:
  - { name: ubuntu, layer: os, version: '22.04' }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - { name: calico, layer: cni, version: 3.28.0 }
---
kind: Cluster
name: edge
profile: { name: vs, version: '1' }
cloudAccount: vc
cloud:
  vsphere: { datacenter: DC0, folder: /DC0/vm, ipAllocation: static }
nodePools:
  - name: master
    role: controlPlane
    size: 3
    cpu: 2
    memoryGb: 4
    diskSizeGb: 40
    placements: [{ computeCluster: C0, datastore: DS0, network: VM Network, ipPool: cp-pool }]
  - name: workers
    role: worker
    size: 4
    cpu: 2
    memoryGb: 4
    diskSizeGb: 40
    placements:
      - { computeCluster: C0, datastore: DS0, network: VM Network, ipPool: worker-pool }
      - { computeCluster: C1, datastore: DS1, network: VM Network, ipPool: worker-pool }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_ip_cluster_takes_addresses_and_vip_from_its_pools() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
    let sim = Arc::new(SimCloud::new(CloudType::Vsphere, SimConfig::default()));
    let engine = Engine::builder(store.clone())
        .provider(sim.clone())
        .config(EngineConfig::fast())
        .start()
        .await
        .unwrap();
    // Gateway, IP pools, account, profile, then the cluster: one call.
    let applied = engine.apply_text(SPECS, Format::Yaml).await.unwrap();
    let id = applied.iter().find_map(|a| a.cluster).unwrap();
    let mut spec: Cluster = engine.cluster(id).await.unwrap().spec;
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();

    // The endpoint is the VIP: the first address of the control-plane pool.
    let endpoint = rec.status.infrastructure.unwrap().endpoint.unwrap();
    assert_eq!(endpoint, "10.10.0.10:6443");
    let machines = sim.machines(id);
    let mut seen = BTreeSet::new();
    for m in &machines {
        let a = m.machine.address.unwrap().to_string();
        assert!(seen.insert(a.clone()), "{a} handed out twice");
        if m.machine.pool == "master" {
            assert!(a.starts_with("10.10.0.") && a != "10.10.0.10", "{a}");
        } else {
            assert!(
                a.starts_with("10.10.1.") && a != "10.10.1.0" && a != "10.10.1.1",
                "{a}"
            );
        }
    }
    assert_eq!(seen.len(), 7);
    // Nodes are spread round-robin over the two placement domains.
    let zones: BTreeSet<String> = machines
        .iter()
        .filter(|m| m.machine.pool == "workers")
        .map(|m| m.machine.zone.clone())
        .collect();
    assert_eq!(zones.len(), 2);
    // The static network reaches the nodes' user data through the batch (kubeadm endpoint).
    assert!(machines
        .iter()
        .all(|m| String::from_utf8_lossy(&m.user_data).contains("10.10.0.10:6443")));
    assert_eq!(
        store.ip_leases(None, Some(id)).await.unwrap().len(),
        8,
        "7 nodes + VIP"
    );

    // A crash between allocation and intent leaves an address with no machine: collected.
    let pool: IpPool = from_text(
        "name: worker-pool\ngatewayName: gw\nsubnet: 10.10.1.0/28\nprefix: 24\ngateway: 10.10.1.1\n",
        Format::Yaml,
    )
    .unwrap();
    store
        .allocate_ip(&IpRequest {
            pool: "worker-pool".into(),
            range: spectro::ipam::PoolRange::of(&pool).unwrap(),
            cluster: id,
            owner: "edge-workers-ghost".into(),
            restrict_to_single_cluster: false,
            fence: None,
        })
        .await
        .unwrap();
    // Scale the workers down: their addresses go back too.
    spec.node_pools[1].size = 2;
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let leases = store.ip_leases(None, Some(id)).await.unwrap();
    assert_eq!(
        leases.len(),
        6,
        "5 nodes + VIP, the ghost collected: {leases:?}"
    );
    assert!(leases.iter().all(|l| l.owner != "edge-workers-ghost"));

    // Exhaustion is shown on the milestone with the pool's name.
    spec.node_pools[1].size = 20;
    engine.update_cluster(id, &spec).await.unwrap();
    let rec = engine
        .wait_for(id, T, |r| {
            r.status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("exhausted"))
        })
        .await
        .unwrap();
    assert!(rec
        .status
        .last_error
        .as_deref()
        .unwrap()
        .contains("IP pool `worker-pool` is exhausted"));
    // The engine's own failure, with its own reason: not disguised as a cloud quota.
    let failed = rec
        .status
        .conditions
        .iter()
        .find(|c| c.status == spectro::engine::condition::ConditionStatus::Failed)
        .expect("a failed milestone");
    assert_eq!(failed.reason, "PoolExhausted", "{failed:?}");
    spec.node_pools[1].size = 3;
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();

    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        store.ip_leases(None, None).await.unwrap().is_empty(),
        "every address released"
    );
    assert_eq!(sim.total_resources(), 0);
    engine.shutdown().await;
}

/// Pre-check of the IP pools: a cluster needs 1 address per node + the VIP + 1 spare from
/// its pools; one the pools cannot hold (what other clusters hold counted) is refused by the
/// dry run and, created anyway, fails its `Creating Infrastructure` condition with the pool
/// and the shortfall named, before any machine exists. Made to fit, it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_its_ip_pools_cannot_hold_is_stopped_before_anything_is_created() {
    use spectro::engine::condition::{ConditionStatus, ConditionType};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
    let sim = Arc::new(SimCloud::new(CloudType::Vsphere, SimConfig::default()));
    let engine = Engine::builder(store.clone())
        .provider(sim.clone())
        .config(EngineConfig::fast())
        .start()
        .await
        .unwrap();
    let applied = engine.apply_text(SPECS, Format::Yaml).await.unwrap();
    let first = applied.iter().find_map(|a| a.cluster).unwrap();
    let spec: Cluster = engine.cluster(first).await.unwrap().spec;
    engine
        .wait_for_phase(first, Phase::Running, T)
        .await
        .unwrap();
    // The first cluster fits: nothing short.
    assert!(engine.precheck(&spec).await.unwrap().passed());

    // worker-pool (10.10.1.0/28: 13 usable addresses) holds the first cluster's 4 workers;
    // 9 more workers need 9 + 1 spare = 10, 9 are left.
    let mut big = spec.clone();
    big.name = "edge2".into();
    big.node_pools[1].size = 9;
    let found = engine.precheck(&big).await.unwrap();
    assert!(!found.passed());
    assert_eq!(found.shortfalls.len(), 1, "{found:?}");
    let s = &found.shortfalls[0];
    assert!(s.resource.contains("worker-pool"), "{s}");
    assert_eq!(
        (s.needed, s.available, s.unit.as_str()),
        (10, 9, "addresses")
    );
    assert!(
        found.message().contains("short by 1"),
        "{}",
        found.message()
    );

    let id = engine.create_cluster(&big).await.unwrap();
    let rec = engine
        .wait_for(id, T, |r| {
            r.status.has_condition(
                ConditionType::InfrastructureReady,
                ConditionStatus::Failed,
                "PrecheckFailed",
            )
        })
        .await
        .unwrap();
    let c = rec
        .status
        .condition(ConditionType::InfrastructureReady)
        .unwrap();
    assert!(
        c.message.contains("worker-pool") && c.message.contains("needs 10 addresses, 9 left"),
        "{}",
        c.message
    );
    assert!(rec.status.infrastructure.is_none());
    assert!(sim.machines(id).is_empty(), "nothing created");
    let events = engine.events(Some(id), 0, 1000).await.unwrap();
    assert!(events.iter().any(|e| e.reason == "PrecheckFailed"));

    // Made to fit: it runs.
    big.node_pools[1].size = 8;
    engine.update_cluster(id, &big).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let events = engine.events(Some(id), 0, 1000).await.unwrap();
    assert!(events.iter().any(|e| e.reason == "PrecheckPassed"));
    engine.shutdown().await;
}
