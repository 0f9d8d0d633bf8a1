//! The engine driving the Azure provider against the stateful ARM fake behind Prism (every
//! request and answer checked against Azure's compute 2024-07-01 and network 2024-03-01
//! specs): lifecycle (3 control-plane nodes, a worker pool over 3 zones, scale, add and
//! remove a pool, VM size change replaced one by one, delete: nothing left), long-running
//! operations over several polls, 429 with Retry-After, a lost answer and a crash between a
//! VM's PUT and its record (no duplicate VM, NIC or disk), static placement (the user's VNet
//! untouched), the account check, and the provider conformance kit of spectro-core.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use spectro_azure::AzureProvider;
use spectro_core::engine::status::Phase;
use spectro_core::model::document::{from_text, Format};
use spectro_core::model::{Cluster, ClusterProfile};
#[allow(unused_imports)]
use spectro_core::provider::TAG_CLUSTER_ID;
use spectro_core::provider::{CloudProvider, ClusterContext};
use spectro_core::{Engine, EngineConfig, SqliteStore};

fn cluster_yaml(name: &str, rg: &str, pools: &str, extra: &str) -> String {
    format!(
        r#"
name: {name}
tags: {{ team: storefront, "cost/center": "42" }}
profile: {{ name: az, version: '1' }}
cloudAccount: az
cloud:
  azure:
    subscriptionId: {SUB}
    region: westus2
    resourceGroup: {rg}
    sshKey: {SSH_KEY}
{extra}
nodePools:
{pools}
"#
    )
}

const LIFE_POOLS: &str = r#"
  - { name: master, role: controlPlane, size: 3, instanceType: Standard_D2s_v3, diskType: Premium_LRS, diskSizeGb: 60 }
  - { name: general, role: worker, size: 3, instanceType: Standard_D4s_v3, diskType: StandardSSD_LRS, diskSizeGb: 120, availabilityZones: ["1", "2", "3"] }
"#;

const SMALL_POOLS: &str = r#"
  - { name: master, role: controlPlane, size: 1, instanceType: Standard_D2s_v3 }
  - { name: general, role: worker, size: 2, instanceType: Standard_D2s_v3, availabilityZones: ["1", "2"] }
"#;

async fn engine_with(store: Arc<SqliteStore>, provider: Arc<dyn CloudProvider>) -> Engine {
    let engine = Engine::builder(store)
        .provider(provider)
        .config(EngineConfig::for_emulators())
        .start()
        .await
        .unwrap();
    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml).unwrap();
    engine.put_profile(&profile).await.unwrap();
    engine.put_cloud_account(&account("az")).await.unwrap();
    engine
}

fn kind(r: &serde_json::Value) -> String {
    r["type"].as_str().unwrap_or_default().to_string()
}

fn of_type<'a>(rs: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    rs.iter().filter(|r| kind(r) == t).collect()
}

const VM: &str = "Microsoft.Compute/virtualMachines";
const NIC: &str = "Microsoft.Network/networkInterfaces";
const DISK: &str = "Microsoft.Compute/disks";

fn total(c: &BTreeMap<String, u64>) -> u64 {
    c.values().sum()
}

fn delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .filter_map(|(k, v)| {
            let d = v - a.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_lifecycle_behind_prism_leaves_nothing_behind() {
    let Some(p) = peer() else { return };
    let rg = "rg-life";
    let provider = Arc::new(AzureProvider::new(p.connector()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("az.db")).unwrap());
    let engine = engine_with(store, provider.clone()).await;
    engine.verify_cloud_account("az").await.unwrap();
    let mut spec: Cluster =
        from_text(&cluster_yaml("web", rg, LIFE_POOLS, ""), Format::Yaml).unwrap();
    let before = provider.calls().snapshot();
    let id = engine.create_cluster(&spec).await.unwrap();
    let rec = engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    let created = delta(&before, &provider.calls().snapshot());
    eprintln!("create: {} ARM calls: {created:?}", total(&created));
    let endpoint = rec
        .status
        .infrastructure
        .as_ref()
        .unwrap()
        .endpoint
        .clone()
        .unwrap();
    assert!(
        endpoint.ends_with(".westus2.cloudapp.azure.com:6443"),
        "{endpoint}"
    );

    // What the fake holds: 3 control-plane VMs without zones, 3 workers over zones 1-3,
    // each with its NIC and OS disk; the control-plane NICs in the API server's backend pool.
    let rs = p.resources_in(rg).await;
    let vms = of_type(&rs, VM);
    assert_eq!(vms.len(), 6, "{vms:#?}");
    assert_eq!(of_type(&rs, NIC).len(), 6);
    assert_eq!(of_type(&rs, DISK).len(), 6);
    let zones: BTreeSet<String> = vms
        .iter()
        .filter(|v| v["tags"]["spectro.io_pool"] == "general")
        .map(|v| v["zones"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(zones, BTreeSet::from(["1".into(), "2".into(), "3".into()]));
    for v in &vms {
        let cp = v["tags"]["spectro.io_pool"] == "master";
        assert_eq!(
            v["zones"].as_array().is_none_or(|z| z.is_empty()),
            cp,
            "{v}"
        );
        assert_eq!(v["tags"]["spectro.io_cluster-id"], id.to_string());
        assert_eq!(
            v["tags"]["cost_center"], "42",
            "user tags with Azure-safe names"
        );
        let disk = &v["properties"]["storageProfile"]["osDisk"];
        assert_eq!(disk["diskSizeGB"], if cp { 60 } else { 120 });
        assert_eq!(disk["deleteOption"], "Delete");
        assert!(
            v["properties"]["osProfile"]["customData"]
                .as_str()
                .unwrap()
                .len()
                > 100
        );
        assert_eq!(
            v["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"],
            true
        );
    }
    let lb = of_type(&rs, "Microsoft.Network/loadBalancers");
    assert_eq!(lb.len(), 1);
    let members = lb[0]["properties"]["backendAddressPools"][0]["properties"]
        ["backendIPConfigurations"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        members, 3,
        "the control-plane NICs joined the pool when they were made"
    );
    for r in &rs {
        let t = kind(r);
        if t == NIC || t == DISK {
            continue; // made by the VM's PUT, named after it
        }
        assert_eq!(r["tags"]["spectro.io_cluster-id"], id.to_string(), "{r}");
    }
    assert_eq!(of_type(&rs, "Microsoft.Network/natGateways").len(), 1);
    assert_eq!(of_type(&rs, "Microsoft.Network/virtualNetworks").len(), 1);

    // Steady-state resync: the resource group's VMs and NICs, one paginated list each.
    let before = provider.calls().snapshot();
    engine.resync(id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let resync = delta(&before, &provider.calls().snapshot());
    eprintln!("resync: {} ARM call(s): {resync:?}", total(&resync));
    assert!(
        resync
            .keys()
            .all(|k| k == "VirtualMachines.List" || k == "NetworkInterfaces.List"),
        "{resync:?}"
    );
    // The fake pages by 5: 6 VMs and 6 NICs are two pages each.
    assert_eq!(total(&resync), 4, "{resync:?}");

    // Scale the worker pool.
    spec.node_pools[1].size = 4;
    engine.update_cluster(id, &spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(of_type(&p.resources_in(rg).await, VM).len(), 7);

    // Add a pool, then remove it: its VMs, NICs and disks go.
    let mut with_gpu = spec.clone();
    with_gpu.node_pools.push(
        from_text(
            r#"{ name: gpu, role: worker, size: 2, instanceType: Standard_NC12s_v3, availabilityZones: ["1", "2"] }"#,
            Format::Yaml,
        )
        .unwrap(),
    );
    engine.update_cluster(id, &with_gpu).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let rs = p.resources_in(rg).await;
    assert_eq!(of_type(&rs, VM).len(), 9);
    assert_eq!(
        of_type(&rs, VM)
            .iter()
            .filter(|v| v["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC12s_v3")
            .count(),
        2
    );
    engine.update_cluster(id, &spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let settle = async {
        loop {
            let rs = p.resources_in(rg).await;
            if of_type(&rs, VM).len() == 7 {
                return rs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let rs = tokio::time::timeout(Duration::from_secs(30), settle)
        .await
        .unwrap();
    assert_eq!(of_type(&rs, NIC).len(), 7);
    assert_eq!(of_type(&rs, DISK).len(), 7);

    // VM size change: the pool's VMs are replaced one by one.
    spec.node_pools[1].instance_type = Some("Standard_D8s_v3".into());
    engine.update_cluster(id, &spec).await.unwrap();
    let most_deleting = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let fake = p.fake.clone();
        let most = most_deleting.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(r) = reqwest::get(format!("{fake}/_fake/resources")).await {
                    let rs: serde_json::Value = r.json().await.unwrap_or_default();
                    let deleting = rs
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| kind(r) == VM && r["tags"]["spectro.io_pool"] == "general")
                        .filter(|r| r["properties"]["provisioningState"] == "Deleting")
                        .count();
                    most.fetch_max(deleting, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let replace = async {
        loop {
            let rs = p.resources_in(rg).await;
            let general: Vec<_> = of_type(&rs, VM)
                .into_iter()
                .filter(|v| v["tags"]["spectro.io_pool"] == "general")
                .cloned()
                .collect();
            if general.len() == 4
                && general.iter().all(|v| {
                    v["properties"]["hardwareProfile"]["vmSize"] == "Standard_D8s_v3"
                        && v["properties"]["provisioningState"] == "Succeeded"
                })
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(240), replace)
        .await
        .expect("the pool is replaced");
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(60))
        .await
        .unwrap();
    watch.abort();
    let most = most_deleting.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= 1,
        "{most} VMs of the pool were being deleted at once"
    );

    // Delete: nothing of the cluster is left in the resource group.
    let before = provider.calls().snapshot();
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    let deleted = delta(&before, &provider.calls().snapshot());
    eprintln!("delete: {} ARM calls: {deleted:?}", total(&deleted));
    let left = p.resources_in(rg).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
    let v = p.violations_in(rg);
    assert!(v.is_empty(), "Prism refused: {v:#?}");
    engine.shutdown().await;
}
