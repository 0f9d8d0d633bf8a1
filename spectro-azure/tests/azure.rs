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
    // Live VMs of the pool (not being deleted), lowest and highest while it is replaced.
    let bounds = Arc::new(std::sync::Mutex::new((usize::MAX, 0usize)));
    let watch = {
        let fake = p.fake.clone();
        let bounds = bounds.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(r) = reqwest::get(format!("{fake}/_fake/resources")).await {
                    let rs: serde_json::Value = r.json().await.unwrap_or_default();
                    let live = rs
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| kind(r) == VM && r["tags"]["spectro.io_pool"] == "general")
                        .filter(|r| {
                            r["id"]
                                .as_str()
                                .is_some_and(|i| i.contains("/resourceGroups/rg-life/"))
                        })
                        .filter(|r| r["properties"]["provisioningState"] != "Deleting")
                        .count();
                    let mut b = bounds.lock().unwrap();
                    *b = (b.0.min(live), b.1.max(live));
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
    // One by one: a new VM first, then an old one goes (surge 1, never below the pool's size).
    let (low, high) = *bounds.lock().unwrap();
    assert!(low >= 4, "the pool went down to {low} live VMs");
    assert!(
        high <= 5,
        "{high} live VMs: more than one replacement at a time"
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
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
    engine.shutdown().await;
}

/// Successful writes per resource path in `rg` (PUT answered 200/201).
async fn writes_in(p: &AzurePeer, rg: &str) -> BTreeMap<String, usize> {
    let needle = format!("/resourcegroups/{rg}/");
    let mut out = BTreeMap::new();
    for (m, path, status) in p.requests().await {
        if m == "PUT"
            && (status == 200 || status == 201)
            && path.to_ascii_lowercase().contains(&needle)
        {
            *out.entry(path).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_operations_throttling_and_a_lost_answer_converge_without_duplicates() {
    let Some(p) = peer() else { return };
    let rg = "rg-faults";
    // The next 3 writes in the group are throttled (Retry-After: 1 s); the answer to the
    // first VM's PUT is lost after the VM was made.
    p.hook("throttle", serde_json::json!({"count": 3, "retryAfter": 1, "method": "PUT", "path": format!("/resourceGroups/{rg}/")})).await;
    p.hook("lose", serde_json::json!({"count": 1, "method": "PUT", "path": format!("/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/")})).await;
    // ...and the NAT gateway's first create ends Failed: the next pass sends it again.
    p.hook("fail", serde_json::json!({"count": 1, "path": format!("/resourceGroups/{rg}/providers/Microsoft.Network/natGateways/")})).await;
    let provider = Arc::new(AzureProvider::new(p.connector()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("az.db")).unwrap());
    let engine = engine_with(store, provider.clone()).await;
    let spec: Cluster =
        from_text(&cluster_yaml("faults", rg, SMALL_POOLS, ""), Format::Yaml).unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    let calls = provider.calls().snapshot();
    eprintln!("faults: {calls:?}");

    // Long-running operations: the fake finishes each after 0.2 s and its third poll, the
    // provider polls every 50 ms: several polls per write, never a second PUT of the same
    // resource.
    let most_polls = calls
        .iter()
        .filter(|(k, _)| k.ends_with(".poll"))
        .map(|(_, v)| *v)
        .max()
        .unwrap_or(0);
    assert!(
        most_polls >= 3,
        "an operation followed over several polls: {calls:?}"
    );
    let writes = writes_in(p, rg).await;
    // Every kind written was followed by polling its operation (at least 3 polls, the fake's
    // minimum, unless its wave was cut short: the NAT gateway's failure or a 429 ends the
    // wave, and operations still running then end on time without being polled further).
    for (kind, op) in [
        ("publicIPAddresses", "PublicIPAddresses"),
        ("networkSecurityGroups", "NetworkSecurityGroups"),
        ("natGateways", "NatGateways"),
        ("loadBalancers", "LoadBalancers"),
        ("virtualNetworks", "VirtualNetworks"),
    ] {
        let written: usize = writes
            .iter()
            .filter(|(path, _)| path.contains(&format!("/{kind}/")))
            .map(|(_, n)| n)
            .sum();
        let polls = calls
            .get(&format!("{op}.CreateOrUpdate.poll"))
            .copied()
            .unwrap_or(0);
        assert!(
            written == 0 || polls >= 1,
            "{op}: {polls} polls for {written} writes"
        );
    }
    // The failed NAT gateway was written again (the repair); nothing else twice.
    for (path, n) in &writes {
        let expected = if path.contains("/natGateways/") { 2 } else { 1 };
        assert_eq!(*n, expected, "{path}: {writes:#?}");
    }
    // The VM whose answer was lost (the fake made it, then answered 500) was never sent
    // again: 7 infrastructure resources and 2 VMs answered, 1 VM lost, 10 resources.
    let lost: Vec<String> = p
        .requests()
        .await
        .into_iter()
        .filter(|(m, path, s)| m == "PUT" && *s == 500 && path.contains(rg))
        .map(|(_, path, _)| path)
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(!writes.contains_key(&lost[0]), "the lost VM was sent again");
    assert_eq!(writes.len() + lost.len(), 10, "{writes:#?}");
    let throttled = p
        .requests()
        .await
        .iter()
        .filter(|(_, path, s)| *s == 429 && path.contains(rg))
        .count();
    assert_eq!(throttled, 3);
    let rs = p.resources_in(rg).await;
    assert_eq!(of_type(&rs, VM).len(), 3, "no duplicate VM");
    assert_eq!(of_type(&rs, NIC).len(), 3, "no duplicate NIC");
    assert_eq!(of_type(&rs, DISK).len(), 3, "no duplicate disk");
    // The three 429s reached the subscription's budget (every cluster of it paused).
    let budget = provider.connector().budgets().stats();
    eprintln!("budgets: {budget:?}");
    assert!(budget[&format!("azure/{SUB}")].throttled >= 3, "{budget:?}");
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(p.resources_in(rg).await.is_empty());
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
    engine.shutdown().await;
}

/// Hangs the engine forever right after the first successful `create_machines`: the VM
/// exists, the engine never records the answer (a crash).
struct HangAfterFirstCreate {
    inner: Arc<AzureProvider>,
    hung: std::sync::atomic::AtomicBool,
    crashed: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl CloudProvider for HangAfterFirstCreate {
    fn cloud(&self) -> spectro_core::model::CloudType {
        self.inner.cloud()
    }
    fn user_data_limit(&self) -> Option<usize> {
        self.inner.user_data_limit()
    }
    async fn validate_account(
        &self,
        a: &spectro_core::model::CloudAccount,
    ) -> Result<(), spectro_core::provider::ProviderError> {
        self.inner.validate_account(a).await
    }
    async fn ensure_image(
        &self,
        c: &ClusterContext,
        s: &spectro_core::provider::ImageSpec,
    ) -> Result<spectro_core::provider::ImageRef, spectro_core::provider::ProviderError> {
        self.inner.ensure_image(c, s).await
    }
    async fn ensure_infrastructure(
        &self,
        c: &ClusterContext,
    ) -> Result<spectro_core::provider::InfraStatus, spectro_core::provider::ProviderError> {
        self.inner.ensure_infrastructure(c).await
    }
    async fn list_machines(
        &self,
        c: &ClusterContext,
    ) -> Result<Vec<spectro_core::provider::Machine>, spectro_core::provider::ProviderError> {
        self.inner.list_machines(c).await
    }
    async fn create_machines(
        &self,
        c: &ClusterContext,
        i: &spectro_core::provider::InfraStatus,
        b: &spectro_core::provider::MachineBatch,
    ) -> Result<Vec<spectro_core::provider::Machine>, spectro_core::provider::ProviderError> {
        let r = self.inner.create_machines(c, i, b).await;
        if r.is_ok() && !self.hung.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        r
    }
    async fn delete_machines(
        &self,
        c: &ClusterContext,
        m: &[spectro_core::provider::Machine],
    ) -> Result<(), spectro_core::provider::ProviderError> {
        self.inner.delete_machines(c, m).await
    }
    async fn delete_infrastructure(
        &self,
        c: &ClusterContext,
    ) -> Result<spectro_core::provider::DeleteStatus, spectro_core::provider::ProviderError> {
        self.inner.delete_infrastructure(c).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_vm_put_and_its_record_makes_no_duplicate() {
    let Some(p) = peer() else { return };
    let rg = "rg-net";
    let azure = Arc::new(AzureProvider::new(p.connector()));
    let crashed = Arc::new(tokio::sync::Notify::new());
    let hanging = Arc::new(HangAfterFirstCreate {
        inner: azure.clone(),
        hung: std::sync::atomic::AtomicBool::new(false),
        crashed: crashed.clone(),
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("crash.db")).unwrap());
    let engine = engine_with(store.clone(), hanging).await;
    let spec: Cluster =
        from_text(&cluster_yaml("crash", rg, SMALL_POOLS, ""), Format::Yaml).unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), crashed.notified())
        .await
        .unwrap();
    drop(engine); // the first control-plane VM exists; the engine never heard

    // A restarted engine with a new provider (no memory of the first).
    let fresh = Arc::new(AzureProvider::new(p.connector()));
    let engine = Engine::builder(store)
        .provider(fresh.clone())
        .config(EngineConfig::for_emulators())
        .start()
        .await
        .unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    let rs = p.resources_in(rg).await;
    assert_eq!(of_type(&rs, VM).len(), 3, "exactly the desired VMs");
    assert_eq!(of_type(&rs, NIC).len(), 3);
    assert_eq!(of_type(&rs, DISK).len(), 3);
    let writes = writes_in(p, rg).await;
    assert!(
        writes.values().all(|n| *n == 1),
        "a resource written twice: {writes:#?}"
    );
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(p.resources_in(rg).await.is_empty());
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_placement_leaves_the_users_vnet_intact() {
    let Some(p) = peer() else { return };
    let (rg, net_rg) = ("rg-static", "rg-fleet");
    // The user's network, in another resource group: two subnets, their own tags.
    let vnet_id = format!("/subscriptions/{SUB}/resourceGroups/{net_rg}/providers/Microsoft.Network/virtualNetworks/corp-vnet");
    let subnet = |name: &str, cidr: &str| {
        serde_json::json!({"id": format!("{vnet_id}/subnets/{name}"), "name": name,
            "type": "Microsoft.Network/virtualNetworks/subnets",
            "properties": {"addressPrefix": cidr, "provisioningState": "Succeeded"}})
    };
    let user_vnet = serde_json::json!({
        "id": vnet_id, "name": "corp-vnet", "type": "Microsoft.Network/virtualNetworks",
        "location": "westus2", "tags": {"owner": "network-team"}, "etag": "W/\"u1\"",
        "properties": {"addressSpace": {"addressPrefixes": ["10.8.0.0/16"]},
            "subnets": [subnet("k8s-cp", "10.8.1.0/24"), subnet("k8s-nodes", "10.8.2.0/24")],
            "provisioningState": "Succeeded"}
    });
    p.hook(
        "seed",
        serde_json::json!({"id": vnet_id, "resource": user_vnet}),
    )
    .await;
    let provider = Arc::new(AzureProvider::new(p.connector()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("az.db")).unwrap());
    let engine = engine_with(store, provider.clone()).await;
    let vnet = format!(
        "    vnet: {{ name: corp-vnet, resourceGroup: {net_rg}, controlPlaneSubnet: k8s-cp, workerSubnet: k8s-nodes }}"
    );
    let spec: Cluster = from_text(
        &cluster_yaml("static", rg, SMALL_POOLS, &vnet),
        Format::Yaml,
    )
    .unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    let rs = p.resources_in(rg).await;
    assert!(
        of_type(&rs, "Microsoft.Network/virtualNetworks").is_empty(),
        "no network of ours"
    );
    assert!(
        of_type(&rs, "Microsoft.Network/natGateways").is_empty(),
        "outbound is the user's network's"
    );
    // The security groups sit on the NICs, in the user's subnets.
    for nic in of_type(&rs, NIC) {
        let nsg = nic["properties"]["networkSecurityGroup"]["id"]
            .as_str()
            .unwrap();
        assert!(
            nsg.ends_with("-cp-nsg") || nsg.ends_with("-node-nsg"),
            "{nsg}"
        );
        let subnet = nic["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"]
            .as_str()
            .unwrap();
        assert!(subnet.starts_with(&vnet_id), "{subnet}");
    }
    // etcd only from the control-plane subnet of the user's network.
    let cp_nsg = of_type(&rs, "Microsoft.Network/networkSecurityGroups")
        .into_iter()
        .find(|r| r["name"].as_str().unwrap().ends_with("-cp-nsg"))
        .unwrap();
    let etcd = cp_nsg["properties"]["securityRules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "allow-etcd-control-plane")
        .unwrap();
    assert_eq!(etcd["properties"]["sourceAddressPrefix"], "10.8.1.0/24");
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(
        p.resources_in(rg).await.is_empty(),
        "{:#?}",
        p.resources_in(rg).await
    );
    // Never a write to the user's resource group; the network is as it was.
    let writes: Vec<_> = p
        .requests()
        .await
        .into_iter()
        .filter(|(m, path, _)| {
            m != "GET"
                && path
                    .to_ascii_lowercase()
                    .contains(&format!("/resourcegroups/{net_rg}/"))
        })
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    let now = p
        .resources()
        .await
        .into_iter()
        .find(|r| r["id"] == vnet_id)
        .expect("the user's network is still there");
    assert_eq!(now, user_vnet, "the user's network is unchanged");
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_check_names_what_failed_and_never_the_secret() {
    let Some(p) = peer() else { return };
    let provider = AzureProvider::new(p.connector());
    provider.validate_account(&account("ok")).await.unwrap();
    // A wrong secret: Entra ID refuses the token.
    let mut bad = account("bad");
    if let spectro_core::model::Credentials::Azure(c) = &mut bad.credentials {
        c.client_secret = spectro_core::secret::Secret::new("Wr0ng~secretValue0123456789abcdefg");
    }
    let e = provider.validate_account(&bad).await.unwrap_err();
    assert_eq!(e.reason(), "Unauthorized", "{e}");
    let text = e.to_string();
    assert!(
        text.contains(CLIENT_ID) && text.contains("Entra ID"),
        "{text}"
    );
    assert!(!text.contains("Wr0ng~secret") && !format!("{e:?}").contains("Wr0ng~secret"));
    // A subscription the principal cannot see.
    let mut other = account("other");
    if let spectro_core::model::Credentials::Azure(c) = &mut other.credentials {
        c.subscription_id = Some("0b1f6471-1bf0-4dda-aec3-cb9272f09590".into());
    }
    let e = provider.validate_account(&other).await.unwrap_err();
    assert_eq!(e.reason(), "Unauthorized", "{e}");
    assert!(
        e.to_string()
            .contains("0b1f6471-1bf0-4dda-aec3-cb9272f09590"),
        "{e}"
    );
    assert!(!e.to_string().contains(SECRET));
}

/// The provider conformance kit's harness for Azure on the fake behind Prism.
struct AzureHarness {
    peer: &'static AzurePeer,
    provider: Arc<AzureProvider>,
}

const CONFORMANCE_POOLS: &str = r#"
  - { name: master, role: controlPlane, size: 1, instanceType: Standard_D2s_v3 }
  - { name: general, role: worker, size: 1, instanceType: Standard_D2s_v3, availabilityZones: ["1"] }
"#;

#[async_trait::async_trait]
impl spectro_core::conformance::ProviderHarness for AzureHarness {
    fn name(&self) -> String {
        "azure on the ARM fake behind Prism".into()
    }

    fn provider(&self) -> Arc<dyn CloudProvider> {
        self.provider.clone()
    }

    fn fresh_provider(&self) -> Option<Arc<dyn CloudProvider>> {
        Some(Arc::new(AzureProvider::new(self.peer.connector())))
    }

    fn cluster(&self, name: &str) -> ClusterContext {
        let mut spec: Cluster = from_text(
            &cluster_yaml(name, "rg-conform", CONFORMANCE_POOLS, ""),
            Format::Yaml,
        )
        .unwrap();
        spec.tags.remove("cost/center");
        ClusterContext {
            cluster_id: spectro_core::ClusterId::new(),
            spec,
            profile: from_text(PROFILE, Format::Yaml).unwrap(),
            account: account("az"),
            vip: None,
            image: None,
            deleting: false,
        }
    }

    fn rejected_account(&self) -> Option<spectro_core::model::CloudAccount> {
        let mut bad = account("rejected");
        if let spectro_core::model::Credentials::Azure(c) = &mut bad.credentials {
            c.client_secret =
                spectro_core::secret::Secret::new("Rej3cted~secret0123456789abcdefgh");
        }
        Some(bad)
    }

    fn missing_image(&self) -> Option<String> {
        Some("spectrocloud:no-such-offer:none:latest".into())
    }

    /// The tags the fake holds for the resource (VMs for machines), with spectro's keys
    /// translated back from their Azure-safe names.
    async fn tags(
        &self,
        _ctx: &ClusterContext,
        r: &spectro_core::provider::CloudResource,
    ) -> Option<Result<BTreeMap<String, String>, String>> {
        let all = self.peer.resources().await;
        let found = all.iter().find(|x| {
            x["id"]
                .as_str()
                .is_some_and(|i| i.eq_ignore_ascii_case(&r.id))
        });
        Some(match found {
            None => Err(format!("{} {} is not in the fake", r.kind, r.id)),
            Some(x) => Ok(x["tags"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let k = match k.strip_prefix("spectro.io_") {
                        Some(rest) => format!("spectro.io/{rest}"),
                        None => k.clone(),
                    };
                    (k, v.as_str().unwrap_or_default().to_string())
                })
                .collect()),
        })
    }

    fn known_deviations(&self) -> Vec<(spectro_core::contract::Rule, String)> {
        vec![(
            spectro_core::contract::Rule::P6,
            "ensure_image checks the image reference's form only: the image APIs are outside the compute and network specs the provider is validated against, so a missing image is the VM create's final refusal (P18)".into(),
        )]
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_provider_conforms_to_the_provider_contract() {
    let Some(p) = peer() else { return };
    let harness = AzureHarness {
        peer: p,
        provider: Arc::new(AzureProvider::new(p.connector())),
    };
    let report = spectro_core::conformance::run(&harness).await;
    eprintln!("{report}");
    eprintln!(
        "ARM calls of the run: {:?}",
        harness.provider.calls().snapshot()
    );
    report.assert_conforms();
    // One request budget for the subscription, shared by the kit's three clusters.
    let budgets: Vec<String> = harness
        .provider
        .connector()
        .budgets()
        .stats()
        .into_keys()
        .collect();
    assert_eq!(budgets, vec![format!("azure/{SUB}")]);
    let left = p.resources_in("rg-conform").await;
    assert!(left.is_empty(), "{left:#?}");
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_once_part_of_a_batch_exists_is_not_final() {
    let Some(p) = peer() else { return };
    let provider = AzureProvider::new(p.connector());
    let spec: Cluster = from_text(
        &cluster_yaml("batch", "rg-batch", SMALL_POOLS, ""),
        Format::Yaml,
    )
    .unwrap();
    let profile: ClusterProfile = from_text(PROFILE, Format::Yaml).unwrap();
    let ctx = ClusterContext {
        cluster_id: spectro_core::ClusterId::new(),
        spec: spec.clone(),
        profile,
        account: account("az"),
        vip: None,
        image: None,
        deleting: false,
    };
    let infra = loop {
        match provider.ensure_infrastructure(&ctx).await {
            Ok(i) if i.ready => break i,
            Ok(_) => {}
            Err(e) => assert_eq!(e.reason(), "TransientError", "{e}"),
        }
    };
    let batch = |names: &[&str], image: &str| spectro_core::provider::MachineBatch {
        token: "t-1".into(),
        pool: spec.node_pools[1].clone(),
        zone: "1".into(),
        shape: "s".into(),
        image: spectro_core::provider::ImageRef {
            id: image.into(),
            customized: false,
        },
        names: names.iter().map(|n| n.to_string()).collect(),
        bootstrap: spectro_core::provider::BootstrapRole::JoinWorker,
        user_data: b"#cloud-config\n".to_vec(),
        network: Vec::new(),
        // Re-issues among these calls: the provider looks for what came before.
        first_attempt: false,
    };
    // Nothing of the batch exists: the cloud's refusal is final.
    let e = provider
        .create_machines(
            &ctx,
            &infra,
            &batch(&["batch-general-a"], "spectrocloud:gone:none:latest"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "Failed", "{e}");
    // One VM of the batch exists (made by an earlier attempt with the token): a refusal of
    // the next is not final, the engine must keep the token.
    provider
        .create_machines(&ctx, &infra, &batch(&["batch-general-a"], IMAGE))
        .await
        .unwrap();
    let e = provider
        .create_machines(
            &ctx,
            &infra,
            &batch(
                &["batch-general-a", "batch-general-b"],
                "spectrocloud:gone:none:latest",
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "TransientError", "{e}");
    let ms = provider.list_machines(&ctx).await.unwrap();
    assert_eq!(ms.len(), 1, "{ms:?}");
    provider.delete_machines(&ctx, &ms).await.unwrap();
    // Repeated as the engine does: until done, transient failures included.
    loop {
        match provider.delete_infrastructure(&ctx).await {
            Ok(d) if d.done => break,
            Ok(_) => {}
            Err(e) => assert_eq!(e.reason(), "TransientError", "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(p.resources_in("rg-batch").await.is_empty());
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
}
