//! The engine driving the vSphere provider against vcsim (govmomi's vCenter simulator).
//! Static-IP lifecycle (create, scale, reconfigure one by one, delete), a DHCP cluster with
//! its HAProxy VM, and a crash between clone and record. Prints the vCenter calls.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use spectro_core::engine::status::Phase;
use spectro_core::model::CloudAccount;
use spectro_core::store::Store;
use spectro_core::SqliteStore;
use spectro_vsphere::api::{
    CallCounts, CloneSpec, NicBacking, ObjRef, Reconfigure, TemplateDevices, Vcenter, VmDetails,
    VmSummary,
};
use spectro_vsphere::{VsphereConfig, VsphereProvider};

const T: Duration = Duration::from_secs(120);

fn total(c: &CallCounts) -> u64 {
    c.values().sum()
}

fn diff(after: &CallCounts, before: &CallCounts) -> CallCounts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn metadata_address(d: &VmDetails) -> String {
    let md = d.extra_config.get("guestinfo.metadata").expect("metadata");
    let text = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(md)
            .unwrap(),
    )
    .unwrap();
    let v: serde_json::Value = serde_norway::from_str(&text).unwrap();
    v["network"]["ethernets"]["id0"]["addresses"][0]
        .as_str()
        .unwrap()
        .to_string()
}

/// A VM's user data (plain base64: control-plane user data stays below the gzip limit).
fn user_data(d: &VmDetails) -> String {
    assert_eq!(
        d.extra_config
            .get("guestinfo.userdata.encoding")
            .map(String::as_str),
        Some("base64")
    );
    let ud = d.extra_config.get("guestinfo.userdata").expect("user data");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ud)
            .unwrap(),
    )
    .unwrap()
}

/// The kube-vip static pod a user data writes, parsed, if any.
fn kube_vip_pod(user_data: &str) -> Option<serde_json::Value> {
    let doc: serde_json::Value = serde_norway::from_str(
        user_data
            .strip_prefix("#cloud-config\n")
            .expect("a cloud-config"),
    )
    .unwrap();
    let f = doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/kubernetes/manifests/kube-vip.yaml")?;
    Some(serde_norway::from_str(f["content"].as_str().unwrap()).unwrap())
}

fn pod_env(pod: &serde_json::Value, name: &str) -> Option<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

async fn account(engine: &spectro_core::Engine) -> CloudAccount {
    let _ = engine;
    let text = documents("x");
    let (docs, _) = spectro_core::model::parse_documents(&text, spectro_core::model::Format::Yaml);
    docs.into_iter()
        .find_map(|d| match d {
            spectro_core::model::Document::CloudAccount(a) => Some(a),
            _ => None,
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_ip_cluster_lifecycle_on_vcsim() {
    let Some(sim) = vcsim(&["-cluster", "2", "-pool", "1"]).await else {
        return;
    };
    let provider = Arc::new(VsphereProvider::new(VsphereConfig::default()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("vs.db")).unwrap());
    let (engine, clusters) =
        engine_with(store.clone(), provider.clone(), &sim, STATIC_CLUSTER).await;
    engine.verify_cloud_account("vc").await.unwrap();
    let mut acct = account(&engine).await;
    if let spectro_core::model::Credentials::Vsphere(v) = &mut acct.credentials {
        v.vcenter_host = sim.host.clone();
    }
    let mut spec = clusters[0].clone();
    let id = engine.create_cluster(&spec).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let created = provider.calls(&acct).await;
    eprintln!(
        "create (3 CP + 3 workers): {} vCenter calls: {created:?}",
        total(&created)
    );
    assert_eq!(
        rec.status.infrastructure.unwrap().endpoint.as_deref(),
        Some("10.10.0.10:6443"),
        "the VIP is the first address of the control-plane pool"
    );

    // Every VM where its placement domain says, with the pool's hardware and its address.
    let vc = inspector(&sim).await;
    let folder = vc.find_by_path("DC0/vm").await.unwrap().unwrap();
    let rp0 = vc
        .find_by_path("DC0/host/DC0_C0/Resources")
        .await
        .unwrap()
        .unwrap();
    let rp1 = vc
        .find_by_path("DC0/host/DC0_C1/Resources/DC0_C1_RP1")
        .await
        .unwrap()
        .unwrap();
    let ds = vc
        .find_by_path("DC0/datastore/LocalDS_0")
        .await
        .unwrap()
        .unwrap();
    let net = vc
        .find_by_path("DC0/network/VM Network")
        .await
        .unwrap()
        .unwrap();
    let dvpg = vc
        .find_by_path("DC0/network/DC0_DVPG0")
        .await
        .unwrap()
        .unwrap();
    let all = vms(&vc, "edge-").await;
    assert_eq!(all.len(), 6, "{:?}", all.keys());
    let mut addresses = BTreeSet::new();
    let mut domains = BTreeMap::<String, usize>::new();
    let mut kube_vip_nodes = 0;
    for (name, (_, d)) in &all {
        assert_eq!(d.folder.as_ref(), Some(&folder), "{name}");
        assert_eq!(d.datastores, vec![ds.clone()], "{name}");
        assert_eq!(
            d.power,
            Some(spectro_vsphere::api::PowerState::On),
            "{name}"
        );
        let addr = metadata_address(d);
        assert!(addresses.insert(addr.clone()), "{addr} handed out twice");
        assert!(d.extra_config.contains_key("guestinfo.userdata"), "{name}");
        assert_eq!(
            d.extra_config.get("spectro.cluster-id"),
            Some(&id.to_string())
        );
        let kube_vip = kube_vip_pod(&user_data(d));
        if name.starts_with("edge-master-") {
            // kube-vip serves the VIP from the control plane, on the netplan's interface.
            let pod = kube_vip.unwrap_or_else(|| panic!("{name}: no kube-vip"));
            assert_eq!(pod_env(&pod, "address").as_deref(), Some("10.10.0.10"));
            assert_eq!(pod_env(&pod, "port").as_deref(), Some("6443"));
            assert_eq!(pod_env(&pod, "vip_interface").as_deref(), Some("eth0"));
            kube_vip_nodes += 1;
            assert_eq!((d.cpus, d.memory_mb), (2, 4096), "{name}");
            assert_eq!(d.resource_pool.as_ref(), Some(&rp0), "{name}");
            assert_eq!(d.networks, vec![net.clone()], "{name}");
            assert!(
                addr.starts_with("10.10.0.") && addr.ends_with("/24") && addr != "10.10.0.10/24",
                "{addr}"
            );
            assert_eq!(
                d.disk.as_ref().map(|x| x.capacity_kb),
                Some(20 * 1024 * 1024)
            );
        } else {
            assert!(kube_vip.is_none(), "{name}: workers do not serve the VIP");
            assert_eq!((d.cpus, d.memory_mb), (2, 8192), "{name}");
            assert!(addr.starts_with("10.10.1."), "{addr}");
            let domain = if d.resource_pool.as_ref() == Some(&rp1) {
                assert_eq!(d.networks, vec![dvpg.clone()], "{name}");
                "DC0_C1_RP1/DC0_DVPG0"
            } else {
                assert_eq!(d.resource_pool.as_ref(), Some(&rp0), "{name}");
                assert_eq!(d.networks, vec![net.clone()], "{name}");
                "DC0_C0/VM Network"
            };
            *domains.entry(domain.into()).or_default() += 1;
        }
    }
    assert_eq!(kube_vip_nodes, 3, "every control-plane node runs kube-vip");
    assert_eq!(
        domains.values().copied().collect::<Vec<_>>(),
        vec![2, 1],
        "round robin: {domains:?}"
    );
    let leases = store.ip_leases(None, Some(id)).await.unwrap();
    assert_eq!(leases.len(), 7, "6 nodes + VIP: {leases:?}");

    // Steady state: one property-collector query per reconcile.
    let before = provider.calls(&acct).await;
    engine.resync(id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let resync = diff(&provider.calls(&acct).await, &before);
    eprintln!("resync: {resync:?}");
    assert_eq!(
        resync,
        BTreeMap::from([("RetrievePropertiesEx".to_string(), 1)])
    );

    // Scale the workers 3 → 4.
    spec.node_pools[1].size = 4;
    engine.update_cluster(id, &spec).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    assert_eq!(vms(&vc, "edge-workers-").await.len(), 4);

    // Reconfigure the workers (CPU 2 → 4): replaced one by one.
    let old: BTreeSet<String> = vms(&vc, "edge-workers-").await.into_keys().collect();
    spec.node_pools[1].cpu = Some(4);
    engine.update_cluster(id, &spec).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = {
        let conn = sim.connection();
        let stop = stop.clone();
        tokio::spawn(async move {
            let vc = spectro_vsphere::vim::VimVcenter::connect(&conn)
                .await
                .unwrap();
            let mut most = 0;
            while !stop.load(Ordering::SeqCst) {
                most = most.max(vms(&vc, "edge-workers-").await.len());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };
    engine
        .wait_for(id, T, |r| {
            let w = r.status.pools.get("workers").cloned().unwrap_or_default();
            r.status.phase == Phase::Running
                && r.status.observed_generation == r.generation
                && w.ready == 4
                && w.outdated == 0
                && w.current == 4
        })
        .await
        .unwrap();
    let workers = vms(&vc, "edge-workers-").await;
    assert_eq!(workers.len(), 4);
    assert!(workers.values().all(|(_, d)| d.cpus == 4));
    assert!(workers.keys().all(|n| !old.contains(n)));
    stop.store(true, Ordering::SeqCst);
    let most = watch.await.unwrap();
    eprintln!("most worker VMs during the replacement: {most}");
    assert!(
        most <= 5,
        "one by one: at most one extra worker at a time, saw {most}"
    );

    // Delete: no VM, no address left.
    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    assert!(vms(&vc, "edge-").await.is_empty());
    assert!(store.ip_leases(None, Some(id)).await.unwrap().is_empty());
    let all = provider.calls(&acct).await;
    eprintln!("whole lifecycle: {} vCenter calls: {all:?}", total(&all));
}

const DHCP_CLUSTER: &str = r#"
kind: Cluster
name: lab
profile: { name: vs, version: '1' }
cloudAccount: vc
cloud:
  vsphere: { datacenter: DC0, folder: vm, ipAllocation: dhcp }
proxy: { httpProxy: 'http://proxy.lab:3128', httpsProxy: 'http://proxy.lab:3128', noProxy: [registry.lab] }
nodePools:
  - { name: master, role: controlPlane, size: 1, cpu: 2, memoryGb: 4, diskSizeGb: 20, placements: [{ computeCluster: DC0_C0, datastore: LocalDS_0, network: VM Network }] }
  - { name: workers, role: worker, size: 2, cpu: 2, memoryGb: 4, diskSizeGb: 20, placements: [{ computeCluster: DC0_C0, datastore: LocalDS_0, network: VM Network }] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhcp_cluster_gets_a_load_balancer_vm() {
    let Some(sim) = vcsim(&[]).await else {
        return;
    };
    let agent = guest_agent(&sim);
    let provider = Arc::new(VsphereProvider::default());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("vs.db")).unwrap());
    let (engine, clusters) = engine_with(store, provider.clone(), &sim, DHCP_CLUSTER).await;
    let id = engine.create_cluster(&clusters[0]).await.unwrap();
    let rec = engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let vc = inspector(&sim).await;
    let all = vms(&vc, "lab-").await;
    assert_eq!(all.len(), 4, "LB + 1 CP + 2 workers: {:?}", all.keys());
    let (_, lb) = all.get("lab-lb").expect("the load balancer VM");
    let endpoint = rec.status.infrastructure.unwrap().endpoint.unwrap();
    assert!(
        endpoint.starts_with("192.168.50.") && endpoint.ends_with(":6443"),
        "{endpoint}"
    );
    let ud = user_data(lb);
    assert!(ud.contains("haproxy"));
    // The load balancer gets the cluster's proxy, as the nodes do.
    let doc: serde_json::Value =
        serde_norway::from_str(ud.strip_prefix("#cloud-config\n").unwrap()).unwrap();
    assert_eq!(doc["apt"]["http_proxy"], "http://proxy.lab:3128");
    assert!(
        ud.contains("NO_PROXY=") && ud.contains("registry.lab"),
        "{ud}"
    );
    // DHCP: the endpoint is the load balancer, no node runs kube-vip.
    for (name, (_, d)) in &all {
        if name != "lab-lb" {
            assert!(kube_vip_pod(&user_data(d)).is_none(), "{name}");
        }
    }
    // The load balancer's backends follow the control plane's DHCP address.
    let folder = vc.find_by_path("DC0/vm").await.unwrap().unwrap();
    let mut seen = (None, None);
    for _ in 0..100 {
        engine.resync(id);
        engine.wait_idle().await;
        let cp_ip = vc
            .list_vms(std::slice::from_ref(&folder))
            .await
            .unwrap()
            .into_iter()
            .find(|v| v.name.starts_with("lab-master-"))
            .and_then(|v| v.ip);
        let backends = vms(&vc, "lab-lb")
            .await
            .values()
            .next()
            .and_then(|(_, d)| d.extra_config.get("guestinfo.spectro.lb-backends").cloned());
        seen = (cp_ip.map(|ip| format!("{ip}:6443")), backends);
        if seen.0.is_some() && seen.0 == seen.1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.0.is_some() && seen.0 == seen.1,
        "backends vs control plane: {seen:?}"
    );

    // Shared observation: with a second cluster on the vCenter, resyncing both is one
    // property-collector query over the inventory (the fleet listing), not one per cluster,
    // and each still shows its own nodes.
    let mut acct = account(&engine).await;
    if let spectro_core::model::Credentials::Vsphere(v) = &mut acct.credentials {
        v.vcenter_host = sim.host.clone();
    }
    let mut other = clusters[0].clone();
    other.name = "lab2".into();
    let id2 = engine.create_cluster(&other).await.unwrap();
    engine.wait_for_phase(id2, Phase::Running, T).await.unwrap();
    assert_eq!(vms(&vc, "lab2-").await.len(), 4, "its own LB and nodes");
    let before = provider.calls(&acct).await;
    engine.resync(id);
    engine.resync(id2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let resync = diff(&provider.calls(&acct).await, &before);
    eprintln!("resync of both clusters: {resync:?}");
    // (The second cluster's control plane may just have got its DHCP address: then its
    // balancer's backends are repaired too, a reconfigure and its task.)
    assert_eq!(
        resync.get("RetrievePropertiesEx"),
        Some(&1),
        "one listing for the vCenter: {resync:?}"
    );
    assert!(
        resync.keys().all(|k| [
            "RetrievePropertiesEx",
            "RetrievePropertiesEx(task)",
            "ReconfigVM_Task",
            "SetField"
        ]
        .contains(&k.as_str())),
        "{resync:?}"
    );
    // Settled: the next resync of both is the one listing and nothing else (the fleet
    // listing and each cluster's own agree on the backends).
    let before = provider.calls(&acct).await;
    engine.resync(id);
    engine.resync(id2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let again = diff(&provider.calls(&acct).await, &before);
    assert_eq!(
        again,
        BTreeMap::from([("RetrievePropertiesEx".to_string(), 1)]),
        "one listing for the vCenter"
    );
    for (cid, name) in [(id, "lab"), (id2, "lab2")] {
        let rec = engine.cluster(cid).await.unwrap();
        assert_eq!(rec.status.phase, Phase::Running, "{name}");
        assert_eq!(
            rec.status.machines.len(),
            3,
            "{name}: {:?}",
            rec.status.machines
        );
    }
    engine.delete_cluster(id2).await.unwrap();
    engine.wait_for_phase(id2, Phase::Deleted, T).await.unwrap();

    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    assert!(
        vms(&vc, "lab-").await.is_empty(),
        "the load balancer goes too"
    );
    agent.abort();
}

/// vcsim with hooks: `die` makes the first clone succeed and then never return (the
/// process "dies" after CloneVM_Task, before the VM is powered on, marked or recorded);
/// `clone_delay` stretches clones to measure how many run at once.
struct Hooked {
    inner: Arc<dyn Vcenter>,
    die: bool,
    died: AtomicBool,
    notify: Arc<tokio::sync::Notify>,
    clone_delay: Duration,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Hooked {
    async fn new(sim: &Vcsim, die: bool, clone_delay: Duration) -> Arc<Self> {
        Arc::new(Hooked {
            inner: Arc::new(inspector(sim).await),
            die,
            died: AtomicBool::new(false),
            notify: Arc::new(tokio::sync::Notify::new()),
            clone_delay,
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl Vcenter for Hooked {
    async fn root_folder(&self) -> spectro_vsphere::error::Result<ObjRef> {
        self.inner.root_folder().await
    }
    async fn missing_privileges(
        &self,
        e: &[ObjRef],
        p: &[String],
    ) -> spectro_vsphere::error::Result<Vec<(ObjRef, Vec<String>)>> {
        self.inner.missing_privileges(e, p).await
    }
    async fn datastore_free(&self, d: &ObjRef) -> spectro_vsphere::error::Result<Option<u64>> {
        self.inner.datastore_free(d).await
    }
    async fn find_by_path(&self, p: &str) -> spectro_vsphere::error::Result<Option<ObjRef>> {
        self.inner.find_by_path(p).await
    }
    async fn nic_backing(
        &self,
        n: &ObjRef,
        name: &str,
    ) -> spectro_vsphere::error::Result<NicBacking> {
        self.inner.nic_backing(n, name).await
    }
    async fn template_devices(
        &self,
        t: &ObjRef,
    ) -> spectro_vsphere::error::Result<TemplateDevices> {
        self.inner.template_devices(t).await
    }
    async fn list_vms(&self, f: &[ObjRef]) -> spectro_vsphere::error::Result<Vec<VmSummary>> {
        self.inner.list_vms(f).await
    }
    async fn vm_details(&self, vm: &ObjRef) -> spectro_vsphere::error::Result<Option<VmDetails>> {
        self.inner.vm_details(vm).await
    }
    async fn custom_field(&self, name: &str) -> spectro_vsphere::error::Result<i32> {
        self.inner.custom_field(name).await
    }
    async fn set_field(
        &self,
        vm: &ObjRef,
        key: i32,
        value: &str,
    ) -> spectro_vsphere::error::Result<()> {
        self.inner.set_field(vm, key, value).await
    }
    async fn clone_vm(&self, spec: &CloneSpec) -> spectro_vsphere::error::Result<ObjRef> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.clone_delay).await;
        let r = self.inner.clone_vm(spec).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.die && !self.died.swap(true, Ordering::SeqCst) {
            self.notify.notify_one();
            std::future::pending::<()>().await;
        }
        r
    }
    async fn reconfigure(
        &self,
        vm: &ObjRef,
        c: &Reconfigure,
    ) -> spectro_vsphere::error::Result<()> {
        self.inner.reconfigure(vm, c).await
    }
    async fn power_on(&self, vm: &ObjRef) -> spectro_vsphere::error::Result<()> {
        self.inner.power_on(vm).await
    }
    async fn power_off(&self, vm: &ObjRef) -> spectro_vsphere::error::Result<()> {
        self.inner.power_off(vm).await
    }
    async fn destroy(&self, vm: &ObjRef) -> spectro_vsphere::error::Result<()> {
        self.inner.destroy(vm).await
    }
    fn calls(&self) -> CallCounts {
        self.inner.calls()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_clone_and_record_duplicates_nothing() {
    let Some(sim) = vcsim(&["-cluster", "2", "-pool", "1"]).await else {
        return;
    };
    let dying = Hooked::new(&sim, true, Duration::ZERO).await;
    let notify = dying.notify.clone();
    let provider = Arc::new(VsphereProvider::default());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("vs.db")).unwrap());
    let (engine, clusters) =
        engine_with(store.clone(), provider.clone(), &sim, STATIC_CLUSTER).await;
    let mut acct = account(&engine).await;
    if let spectro_core::model::Credentials::Vsphere(v) = &mut acct.credentials {
        v.vcenter_host = sim.host.clone();
    }
    provider.attach(&acct, dying).await.unwrap();
    let id = engine.create_cluster(&clusters[0]).await.unwrap();
    tokio::time::timeout(T, notify.notified()).await.unwrap();
    let vc = inspector(&sim).await;
    let orphan = vms(&vc, "edge-").await;
    assert_eq!(orphan.len(), 1, "the first control-plane node was cloned");
    let (name, (_, d)) = orphan.iter().next().unwrap();
    assert_eq!(
        d.power,
        Some(spectro_vsphere::api::PowerState::Off),
        "{name} never powered on"
    );
    assert!(d.fields.is_empty(), "{name} never marked");
    drop(engine); // the crash

    let provider = Arc::new(VsphereProvider::default());
    let (engine, _) = engine_with(store.clone(), provider.clone(), &sim, "").await;
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let all = vms(&vc, "edge-").await;
    assert_eq!(all.len(), 6, "no duplicate: {:?}", all.keys());
    assert!(
        all.contains_key(name),
        "the orphan was adopted, not replaced"
    );
    let mut seen = BTreeSet::new();
    for (n, (_, d)) in &all {
        assert!(
            seen.insert(metadata_address(d)),
            "{n}: address double-booked"
        );
    }
    assert_eq!(store.ip_leases(None, Some(id)).await.unwrap().len(), 7);
    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
    assert!(vms(&vc, "edge-").await.is_empty());
    assert!(store.ip_leases(None, Some(id)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vcenter_tasks_are_limited_per_vcenter() {
    let Some(sim) = vcsim(&["-cluster", "2", "-pool", "1"]).await else {
        return;
    };
    let hooked = Hooked::new(&sim, false, Duration::from_millis(200)).await;
    let provider = Arc::new(VsphereProvider::new(VsphereConfig {
        max_concurrent_tasks: 2,
        ..Default::default()
    }));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("vs.db")).unwrap());
    // Workers: 6 nodes, 3 per domain; two batches of 3 clones each may run together.
    let spec = STATIC_CLUSTER.replace(
        "    size: 3\n    cpu: 2\n    memoryGb: 8",
        "    size: 6\n    cpu: 2\n    memoryGb: 8",
    );
    let (engine, clusters) = engine_with(store, provider.clone(), &sim, &spec).await;
    let mut acct = account(&engine).await;
    if let spectro_core::model::Credentials::Vsphere(v) = &mut acct.credentials {
        v.vcenter_host = sim.host.clone();
    }
    provider.attach(&acct, hooked.clone()).await.unwrap();
    assert_eq!(clusters[0].node_pools[1].size, 6);
    let id = engine.create_cluster(&clusters[0]).await.unwrap();
    engine.wait_for_phase(id, Phase::Running, T).await.unwrap();
    let most = hooked.most_in_flight.load(Ordering::SeqCst);
    eprintln!("most clones in flight: {most}");
    assert_eq!(most, 2, "never more than the limit, and the limit is used");
    engine.delete_cluster(id).await.unwrap();
    engine.wait_for_phase(id, Phase::Deleted, T).await.unwrap();
}

/// The pre-check against vcsim: privileges through the real HasPrivilegeOnEntities call
/// (the project's vcsim answers "not granted" for the privileges `-deny` names; stock vcsim
/// grants everything), each named with the object it is missing on; the datastore's free
/// space through `summary.freeSpace`. Created anyway, the cluster stops before any clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precheck_names_every_missing_privilege_and_the_datastore_shortfall() {
    use spectro_core::engine::condition::{ConditionStatus, ConditionType};
    let Some(sim) = vcsim(&[
        "-cluster",
        "2",
        "-pool",
        "1",
        "-deny",
        "user=Datastore.AllocateSpace,Network.Assign,VirtualMachine.Inventory.CreateFromExisting,VApp.Import",
    ])
    .await
    else {
        return;
    };
    let provider = Arc::new(VsphereProvider::default());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("vs.db")).unwrap());
    let (engine, clusters) =
        engine_with(store.clone(), provider.clone(), &sim, STATIC_CLUSTER).await;
    let spec = clusters[0].clone();
    let found = engine.precheck(&spec).await.unwrap();
    assert!(!found.passed());
    let missing = &found.missing_permissions;
    // One datastore, two networks, the folder and two resource pools.
    for want in [
        "Datastore.AllocateSpace on datastore DC0/datastore/LocalDS_0",
        "Network.Assign on network DC0/network/VM Network",
        "Network.Assign on network DC0/network/DC0_DVPG0",
    ] {
        assert!(
            missing.iter().any(|m| m == want),
            "{want} not in {missing:?}"
        );
    }
    let create: Vec<&String> = missing
        .iter()
        .filter(|m| m.starts_with("VirtualMachine.Inventory.CreateFromExisting on "))
        .collect();
    assert_eq!(create.len(), 3, "folder + 2 resource pools: {create:?}");
    assert!(
        create.iter().any(|m| m.contains(" on folder ")),
        "{create:?}"
    );
    assert_eq!(missing.len(), 6, "{missing:?}");
    assert!(found.shortfalls.is_empty(), "{:?}", found.shortfalls);
    assert!(
        found.message().contains("lacks 6 permissions"),
        "{}",
        found.message()
    );

    let id = engine.create_cluster(&spec).await.unwrap();
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
    assert!(rec.status.infrastructure.is_none());
    let vc = inspector(&sim).await;
    assert!(vms(&vc, "edge-").await.is_empty(), "nothing cloned");

    // Disks larger than the datastore's free space (vcsim reports its host's file system:
    // read it the same way first): 3 masters at the largest disk allowed (62 TiB) + 3 × 40 GiB
    // workers, all on LocalDS_0.
    let ds = vc
        .find_by_path("DC0/datastore/LocalDS_0")
        .await
        .unwrap()
        .unwrap();
    let free_gib = vc.datastore_free(&ds).await.unwrap().unwrap() / (1 << 30);
    let needed = 3 * 62 * 1024 + 3 * 40;
    let mut big = spec.clone();
    big.name = "big".into();
    big.node_pools[0].disk_size_gb = Some(62 * 1024);
    let found = engine.precheck(&big).await.unwrap();
    if free_gib < needed {
        assert_eq!(found.shortfalls.len(), 1, "{found:?}");
        let s = &found.shortfalls[0];
        assert!(s.resource.contains("LocalDS_0"), "{s}");
        assert_eq!((s.needed, s.unit.as_str()), (needed, "GiB"));
        assert!(s.available < needed, "{s}");
    }
    // The cluster as given fits.
    assert!(engine.precheck(&spec).await.unwrap().shortfalls.is_empty());
    engine.shutdown().await;
}
