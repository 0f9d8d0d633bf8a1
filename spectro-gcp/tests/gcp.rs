//! The engine driving the GCP provider against the stateful Compute Engine fake behind Prism
//! (every request and answer checked against Compute Engine's v1 spec): lifecycle (3
//! control-plane nodes and a worker pool over 3 zones, scale, add and remove a pool, machine
//! type change replaced one by one, delete: nothing left), operations over several waits,
//! throttling, a lost answer and a crash between a bulkInsert and its record (no duplicate
//! instance), an existing network, the account check, and the provider conformance kit of
//! spectro-core.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use spectro_core::engine::status::Phase;
use spectro_core::model::document::{from_text, Format};
use spectro_core::model::{Cluster, ClusterProfile};
use spectro_core::provider::{CloudProvider, ClusterContext};
use spectro_core::{Engine, EngineConfig, SqliteStore};
use spectro_gcp::GcpProvider;

fn cluster_yaml(name: &str, pools: &str, extra: &str) -> String {
    format!(
        r#"
name: {name}
tags: {{ team: storefront, "cost/center": "42" }}
profile: {{ name: gcp, version: '1' }}
cloudAccount: gcp
cloud:
  gcp:
    project: {PROJECT}
    region: us-west1
{extra}
nodePools:
{pools}
"#
    )
}

const ZONES: &str = r#"["us-west1-a", "us-west1-b", "us-west1-c"]"#;

fn life_pools() -> String {
    format!(
        r#"
  - {{ name: master, role: controlPlane, size: 3, instanceType: n2-standard-4, diskType: pd-ssd, diskSizeGb: 60, availabilityZones: {ZONES} }}
  - {{ name: general, role: worker, size: 3, instanceType: n2-standard-8, diskSizeGb: 120, availabilityZones: {ZONES} }}
"#
    )
}

const SMALL_POOLS: &str = r#"
  - { name: master, role: controlPlane, size: 1, instanceType: n2-standard-2, availabilityZones: ["us-west1-a"] }
  - { name: general, role: worker, size: 2, instanceType: n2-standard-2, availabilityZones: ["us-west1-a", "us-west1-b"] }
"#;

async fn engine_with(
    p: &GcpPeer,
    store: Arc<SqliteStore>,
    provider: Arc<dyn CloudProvider>,
) -> Engine {
    let engine = Engine::builder(store)
        .provider(provider)
        .config(EngineConfig::for_emulators())
        .start()
        .await
        .unwrap();
    let profile: ClusterProfile = from_text(&profile(), Format::Yaml).unwrap();
    engine.put_profile(&profile).await.unwrap();
    engine.put_cloud_account(&p.account("gcp")).await.unwrap();
    engine
}

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

/// The fake's instances of cluster `id`.
async fn instances(p: &GcpPeer, id: &str) -> Vec<serde_json::Value> {
    p.resources_with("/instances/")
        .await
        .into_iter()
        .filter(|r| r["labels"]["spectro-io_cluster-id"] == id)
        .collect()
}

/// Everything of the cluster whose names start with `prefix`, or labelled with `id`.
async fn cluster_resources(p: &GcpPeer, prefix: &str, id: &str) -> Vec<serde_json::Value> {
    p.resources()
        .await
        .into_iter()
        .filter(|r| {
            r["name"].as_str().unwrap_or_default().starts_with(prefix)
                || r["labels"]["spectro-io_cluster-id"] == id
        })
        .collect()
}

fn prefix(id: &spectro_core::ClusterId) -> String {
    spectro_gcp::names::prefix_of(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_lifecycle_behind_prism_leaves_nothing_behind() {
    let Some(p) = peer() else { return };
    let provider = Arc::new(GcpProvider::new(p.connector()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("gcp.db")).unwrap());
    let engine = engine_with(p, store, provider.clone()).await;
    engine.verify_cloud_account("gcp").await.unwrap();
    let mut spec: Cluster =
        from_text(&cluster_yaml("web", &life_pools(), ""), Format::Yaml).unwrap();
    let before = provider.calls().snapshot();
    let id = engine.create_cluster(&spec).await.unwrap();
    let rec = engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    let created = delta(&before, &provider.calls().snapshot());
    eprintln!("create: {} Compute calls: {created:?}", total(&created));
    let endpoint = rec
        .status
        .infrastructure
        .as_ref()
        .unwrap()
        .endpoint
        .clone()
        .unwrap();
    assert!(
        endpoint.starts_with("34.120.") && endpoint.ends_with(":443"),
        "{endpoint}"
    );
    let pre = prefix(&id);
    let ids = id.to_string();

    // 3 control-plane and 3 worker instances, one per zone each, no external address, the
    // cloud-init in `user-data`, labelled; the control plane in its zones' instance groups.
    let vms = instances(p, &ids).await;
    assert_eq!(vms.len(), 6, "{vms:#?}");
    for pool in ["master", "general"] {
        let zones: BTreeSet<String> = vms
            .iter()
            .filter(|v| v["labels"]["spectro-io_pool"] == pool)
            .map(|v| {
                v["zone"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(zones.len(), 3, "{pool}: {zones:?}");
    }
    for v in &vms {
        let cp = v["labels"]["spectro-io_pool"] == "master";
        assert_eq!(v["labels"]["cost_center"], "42", "user tags as labels");
        assert!(v["networkInterfaces"][0].get("accessConfigs").is_none());
        assert_eq!(v["disks"][0]["diskSizeGb"], if cp { "60" } else { "120" });
        let md = v["metadata"]["items"].as_array().unwrap();
        let ud = md.iter().find(|i| i["key"] == "user-data").unwrap();
        assert!(ud["value"].as_str().unwrap().starts_with("#cloud-config"));
        let tags = v["tags"]["items"].as_array().unwrap();
        assert_eq!(tags.len(), if cp { 2 } else { 1 }, "{tags:?}");
    }
    let groups = p.resources_with("/instanceGroups/").await;
    let groups: Vec<_> = groups
        .iter()
        .filter(|g| g["name"].as_str().unwrap().starts_with(&pre))
        .collect();
    assert_eq!(groups.len(), 3);
    for g in &groups {
        assert_eq!(g["size"], 1, "one control-plane node per zone's group: {g}");
    }
    let rs = cluster_resources(p, &pre, &ids).await;
    let kinds: BTreeMap<String, usize> = rs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    eprintln!("resources: {kinds:?}");
    for (k, n) in [
        ("compute#network", 1),
        ("compute#subnetwork", 1),
        ("compute#router", 1),
        ("compute#firewall", 3),
        ("compute#address", 1),
        ("compute#healthCheck", 1),
        ("compute#backendService", 1),
        ("compute#targetTcpProxy", 1),
        ("compute#forwardingRule", 1),
        ("compute#instanceGroup", 3),
    ] {
        assert_eq!(kinds.get(k).copied().unwrap_or(0), n, "{k}: {kinds:?}");
    }
    for r in &rs {
        if r["kind"] == "compute#instance" {
            continue;
        }
        let d: BTreeMap<String, String> =
            serde_json::from_str(r["description"].as_str().unwrap_or("{}")).unwrap();
        assert_eq!(d.get("spectro.io/cluster-id"), Some(&ids), "{r}");
    }

    // Steady-state resync: one aggregated list of the project's instances.
    let before = provider.calls().snapshot();
    engine.resync(id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.wait_idle().await;
    let resync = delta(&before, &provider.calls().snapshot());
    eprintln!("resync: {} Compute call(s): {resync:?}", total(&resync));
    assert!(
        resync.keys().all(|k| k == "Instances.AggregatedList"),
        "{resync:?}"
    );
    // The fake pages by 5: 6 instances are two pages.
    assert_eq!(total(&resync), 2, "{resync:?}");

    // Scale the worker pool.
    spec.node_pools[1].size = 4;
    engine.update_cluster(id, &spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(instances(p, &ids).await.len(), 7);

    // Add a pool, then remove it.
    let mut with_gpu = spec.clone();
    with_gpu.node_pools.push(
        from_text(
            r#"{ name: gpu, role: worker, size: 2, instanceType: a2-highgpu-1g, availabilityZones: ["us-west1-a", "us-west1-b"] }"#,
            Format::Yaml,
        )
        .unwrap(),
    );
    engine.update_cluster(id, &with_gpu).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let vms = instances(p, &ids).await;
    assert_eq!(vms.len(), 9);
    assert_eq!(
        vms.iter()
            .filter(|v| v["machineType"]
                .as_str()
                .unwrap()
                .ends_with("/a2-highgpu-1g"))
            .count(),
        2
    );
    engine.update_cluster(id, &spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
        .unwrap();
    let settle = async {
        while instances(p, &ids).await.len() != 7 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), settle)
        .await
        .unwrap();

    // Machine type change: the pool's instances are replaced one by one.
    spec.node_pools[1].instance_type = Some("n2-standard-16".into());
    engine.update_cluster(id, &spec).await.unwrap();
    let bounds = Arc::new(std::sync::Mutex::new((usize::MAX, 0usize)));
    let watch = {
        let fake = p.fake.clone();
        let bounds = bounds.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(r) = reqwest::get(format!("{fake}/_fake/resources")).await {
                    let rs: serde_json::Value = r.json().await.unwrap_or_default();
                    let live = rs
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|r| r["kind"] == "compute#instance")
                        .filter(|r| r["labels"]["spectro-io_cluster-id"] == ids.as_str())
                        .filter(|r| r["labels"]["spectro-io_pool"] == "general")
                        .filter(|r| r["status"] != "STOPPING")
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
            let vms = instances(p, &ids).await;
            let general: Vec<_> = vms
                .iter()
                .filter(|v| v["labels"]["spectro-io_pool"] == "general")
                .collect();
            if general.len() == 4
                && general.iter().all(|v| {
                    v["machineType"]
                        .as_str()
                        .unwrap()
                        .ends_with("/n2-standard-16")
                        && v["status"] == "RUNNING"
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
    let (low, high) = *bounds.lock().unwrap();
    assert!(low >= 4, "the pool went down to {low} live instances");
    assert!(
        high <= 5,
        "{high} live instances: more than one replacement at a time"
    );

    // Delete: nothing of the cluster is left.
    let before = provider.calls().snapshot();
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    let deleted = delta(&before, &provider.calls().snapshot());
    eprintln!("delete: {} Compute calls: {deleted:?}", total(&deleted));
    let left = cluster_resources(p, &pre, &ids).await;
    assert!(left.is_empty(), "left behind: {left:#?}");
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_operations_throttling_and_a_lost_answer_converge_without_duplicates() {
    let Some(p) = peer() else { return };
    // A project of its own: the faults match only this test's requests. The next 3 firewall
    // inserts are throttled (403 rateLimitExceeded, Retry-After 1 s); the answer to the first
    // bulkInsert is lost after the instances were made; the router's first insert ends with
    // an error and is sent again (with a new request id) by the next pass.
    let fp = format!("/projects/{FAULTS_PROJECT}/");
    p.hook("throttle", serde_json::json!({"count": 3, "status": 403, "retryAfter": 1, "method": "POST", "path": format!("{fp}global/firewalls")})).await;
    p.hook("lose", serde_json::json!({"count": 1, "method": "POST", "path": format!("{fp}zones/us-west1-a/instances/bulkInsert")})).await;
    p.hook("fail", serde_json::json!({"count": 1, "path": format!("projects/{FAULTS_PROJECT}/regions/us-west1/routers/"), "code": "RESOURCE_OPERATION_RATE_EXCEEDED"})).await;
    let key = p
        .hook("service-account", serde_json::json!({"email": format!("spectro@{FAULTS_PROJECT}.iam.gserviceaccount.com"), "project": FAULTS_PROJECT}))
        .await
        .to_string();
    let provider = Arc::new(GcpProvider::new(p.connector()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("gcp.db")).unwrap());
    let engine = engine_with(p, store, provider.clone()).await;
    engine
        .put_cloud_account(&account_with_key("gcp", &key))
        .await
        .unwrap();
    let spec: Cluster = from_text(
        &cluster_yaml("faults", SMALL_POOLS, "").replace(PROJECT, FAULTS_PROJECT),
        Format::Yaml,
    )
    .unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    let calls = provider.calls().snapshot();
    eprintln!("faults: {calls:?}");
    // Every operation took several reads (the fake ends them after 0.3 s, the provider reads
    // after 50 ms, doubling).
    let inserts: u64 = calls
        .iter()
        .filter(|(k, _)| k.ends_with(".Insert") || k.ends_with(".BulkInsert"))
        .map(|(_, v)| v)
        .sum();
    let polls: u64 = calls
        .iter()
        .filter(|(k, _)| k.ends_with("Operations.Get"))
        .map(|(_, v)| v)
        .sum();
    // No operation is done at its first read (the fake ends them after 0.3 s, the first read
    // comes after 50 ms): at least one read per insert sent, throttled ones included.
    assert!(
        polls >= inserts,
        "{polls} operation reads for {inserts} inserts"
    );
    let reqs: Vec<_> = p
        .requests()
        .await
        .into_iter()
        .filter(|(_, path, _)| path.contains(&fp))
        .collect();
    let throttled = reqs.iter().filter(|(_, _, s)| *s == 403).count();
    assert_eq!(throttled, 3, "{reqs:?}");
    let budget = provider.connector().budgets().stats();
    assert!(
        budget[&format!("gcp/{FAULTS_PROJECT}")].throttled >= 3,
        "{budget:?}"
    );
    // The lost bulkInsert was not sent again for its names: its instances exist once.
    let lost: Vec<_> = reqs
        .iter()
        .filter(|(m, path, s)| m == "POST" && *s == 503 && path.ends_with("/bulkInsert"))
        .collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let ids = id.to_string();
    let vms = instances(p, &ids).await;
    assert_eq!(vms.len(), 3, "no duplicate instance: {vms:#?}");
    let names: BTreeSet<&str> = vms.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3);
    // The router failed once and was made on the next pass.
    let routers = reqs
        .iter()
        .filter(|(m, path, _)| m == "POST" && path.ends_with("/routers"))
        .count();
    assert_eq!(routers, 2, "the failed router insert was sent again once");
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(cluster_resources(p, &prefix(&id), &ids).await.is_empty());
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
    engine.shutdown().await;
}

fn context(p: &GcpPeer, name: &str, pools: &str) -> ClusterContext {
    let mut spec: Cluster = from_text(&cluster_yaml(name, pools, ""), Format::Yaml).unwrap();
    spec.tags.remove("cost/center");
    ClusterContext {
        cluster_id: spectro_core::ClusterId::new(),
        spec,
        profile: from_text(&profile(), Format::Yaml).unwrap(),
        account: p.account("gcp"),
        vip: None,
        image: None,
        deleting: false,
    }
}

/// A crash between a `bulkInsert` and its record: a restarted engine (a provider without
/// memory) re-issues the batch with its token and gets the same instances, no second insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_bulk_insert_and_its_record_makes_no_duplicate() {
    let Some(p) = peer() else { return };
    let first = GcpProvider::new(p.connector());
    let ctx = context(p, "crash", SMALL_POOLS);
    let spec = spectro_core::engine::planner::image_spec(&ctx.profile).unwrap();
    let image = first.ensure_image(&ctx, &spec).await.unwrap();
    let infra = loop {
        let i = first.ensure_infrastructure(&ctx).await.unwrap();
        if i.ready {
            break i;
        }
    };
    let batch = spectro_core::provider::MachineBatch {
        token: spectro_core::ClusterId::new().to_string(),
        pool: ctx.spec.node_pools[1].clone(),
        zone: "us-west1-f".into(),
        shape: "0123456789ab".into(),
        image,
        names: vec!["crash-general-aaaaaa".into(), "crash-general-bbbbbb".into()],
        bootstrap: spectro_core::provider::BootstrapRole::JoinWorker,
        user_data: b"#cloud-config\n".to_vec(),
        network: Vec::new(),
        first_attempt: true,
    };
    // (A zone no other test of the binary uses: its requests are this test's.)
    // Its operation runs 5 s, so the re-issue below meets it running.
    p.hook(
        "slow",
        serde_json::json!({"count": 1, "path": "/zones/us-west1-f/instances/", "delay": 5}),
    )
    .await;
    // The first engine sends the bulkInsert and dies while its operation runs (the instances
    // are not listed before the operation is done).
    let task = {
        let (ctx, infra, batch) = (ctx.clone(), infra.clone(), batch.clone());
        tokio::spawn(async move { first.create_machines(&ctx, &infra, &batch).await })
    };
    let sent = async {
        loop {
            let reqs = p.requests().await;
            if reqs.iter().any(|(m, path, s)| {
                m == "POST" && path.ends_with("/zones/us-west1-f/instances/bulkInsert") && *s == 200
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), sent)
        .await
        .unwrap();
    task.abort();
    // A new process re-issues the batch: the same request id, the same operation.
    let fresh = GcpProvider::new(p.connector());
    let reissue = spectro_core::provider::MachineBatch {
        first_attempt: false,
        ..batch.clone()
    };
    let again = fresh.create_machines(&ctx, &infra, &reissue).await.unwrap();
    assert_eq!(again.len(), 2);
    let posts = p
        .requests()
        .await
        .into_iter()
        .filter(|(m, path, _)| {
            m == "POST" && path.ends_with("/zones/us-west1-f/instances/bulkInsert")
        })
        .count();
    assert_eq!(posts, 2, "sent by each process, made once");
    // And once more after it is done: found by its label, nothing sent.
    let third = GcpProvider::new(p.connector());
    let made = third.create_machines(&ctx, &infra, &reissue).await.unwrap();
    let key = |ms: &[spectro_core::provider::Machine]| -> BTreeSet<(String, String)> {
        ms.iter().map(|m| (m.id.clone(), m.name.clone())).collect()
    };
    assert_eq!(key(&made), key(&again));
    assert_eq!(
        third.calls().matching("Instances.BulkInsert"),
        0,
        "{:?}",
        third.calls().snapshot()
    );
    let ids = ctx.cluster_id.to_string();
    assert_eq!(instances(p, &ids).await.len(), 2);
    let listed = fresh.list_machines(&ctx).await.unwrap();
    assert_eq!(key(&listed), key(&made));
    fresh.delete_machines(&ctx, &listed).await.unwrap();
    loop {
        let d = fresh.delete_infrastructure(&ctx).await.unwrap();
        if d.done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cluster_resources(p, &prefix(&ctx.cluster_id), &ids)
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_check_names_what_failed_and_never_the_key() {
    let Some(p) = peer() else { return };
    let provider = GcpProvider::new(p.connector());
    provider.validate_account(&p.account("good")).await.unwrap();
    // A key the fake never registered: the token is refused.
    let unknown = p
        .hook("service-account", serde_json::json!({"email": "stranger@spectro-tests.iam.gserviceaccount.com", "project": PROJECT, "registered": false}))
        .await
        .to_string();
    let e = provider
        .validate_account(&account_with_key("bad", &unknown))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert_eq!(e.reason(), "Unauthorized", "{text}");
    assert!(
        text.contains("stranger@spectro-tests.iam.gserviceaccount.com") && text.contains(PROJECT),
        "{text}"
    );
    assert!(
        !text.contains("PRIVATE KEY") && !format!("{e:?}").contains("PRIVATE KEY"),
        "{e:?}"
    );
    // A key of a project the fake does not have.
    let elsewhere = p
        .hook("service-account", serde_json::json!({"email": "x@nowhere.iam.gserviceaccount.com", "project": "no-such-project"}))
        .await
        .to_string();
    let e = provider
        .validate_account(&account_with_key("elsewhere", &elsewhere))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "Unauthorized");
    assert!(e.to_string().contains("no-such-project"), "{e}");
    // Not a key at all: the field is named.
    let e = provider
        .validate_account(&account_with_key("junk", "{\"type\": \"authorized_user\"}"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("credentials.gcp.serviceAccountJson"),
        "{e}"
    );
    let acct = p.account("debug");
    assert!(!format!("{acct:?}").contains("PRIVATE KEY"));
}

/// The provider conformance kit's harness for GCP on the fake behind Prism.
struct GcpHarness {
    peer: &'static GcpPeer,
    provider: Arc<GcpProvider>,
}

#[async_trait::async_trait]
impl spectro_core::conformance::ProviderHarness for GcpHarness {
    fn name(&self) -> String {
        "gcp on the Compute Engine fake behind Prism".into()
    }

    fn provider(&self) -> Arc<dyn CloudProvider> {
        self.provider.clone()
    }

    fn fresh_provider(&self) -> Option<Arc<dyn CloudProvider>> {
        Some(Arc::new(GcpProvider::new(self.peer.connector())))
    }

    fn cluster(&self, name: &str) -> ClusterContext {
        context(self.peer, name, SMALL_POOLS)
    }

    fn rejected_account(&self) -> Option<spectro_core::model::CloudAccount> {
        let key = common::raw::post(
            &self.peer.fake,
            "service-account",
            &format!("{{\"email\": \"rejected@{PROJECT}.iam.gserviceaccount.com\", \"project\": \"{PROJECT}\", \"registered\": false}}"),
        );
        Some(account_with_key("rejected", &key))
    }

    fn missing_image(&self) -> Option<String> {
        Some("projects/spectro-images/global/images/no-such-image".into())
    }

    /// The tags of a resource: its `description` (a JSON object of the cluster's tags, on
    /// every resource: most take no labels).
    async fn tags(
        &self,
        _ctx: &ClusterContext,
        r: &spectro_core::provider::CloudResource,
    ) -> Option<Result<BTreeMap<String, String>, String>> {
        let all = self.peer.resources().await;
        let found = all
            .iter()
            .find(|x| x["_path"].as_str() == Some(r.id.as_str()));
        Some(match found {
            None => Err(format!("{} {} is not in the fake", r.kind, r.id)),
            Some(x) => serde_json::from_str(x["description"].as_str().unwrap_or("{}"))
                .map_err(|e| e.to_string()),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gcp_provider_conforms_to_the_provider_contract() {
    let Some(p) = peer() else { return };
    let harness = GcpHarness {
        peer: p,
        provider: Arc::new(GcpProvider::new(p.connector())),
    };
    let report = spectro_core::conformance::run(&harness).await;
    eprintln!("{report}");
    eprintln!(
        "Compute calls of the run: {:?}",
        harness.provider.calls().snapshot()
    );
    report.assert_conforms();
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
}

/// An existing network (`cloud.gcp.network`): read, never written; the cluster's nodes go in
/// its subnetwork of the region, the cluster's own firewall rules are added to it and
/// removed with the cluster; no router or NAT is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_network_is_used_and_left_intact() {
    let Some(p) = peer() else { return };
    let net = format!("projects/{PROJECT}/global/networks/shared-vpc");
    let sub = format!("projects/{PROJECT}/regions/us-west1/subnetworks/shared-west");
    let base = "https://www.googleapis.com/compute/v1/";
    let network = serde_json::json!({"kind": "compute#network", "id": "77", "name": "shared-vpc",
        "autoCreateSubnetworks": false, "selfLink": format!("{base}{net}"),
        "subnetworks": [format!("{base}{sub}")]});
    let subnet = serde_json::json!({"kind": "compute#subnetwork", "id": "78", "name": "shared-west",
        "network": format!("{base}{net}"), "ipCidrRange": "172.20.0.0/20",
        "region": format!("{base}projects/{PROJECT}/regions/us-west1"), "selfLink": format!("{base}{sub}")});
    p.hook(
        "seed",
        serde_json::json!({"path": net, "resource": network}),
    )
    .await;
    p.hook("seed", serde_json::json!({"path": sub, "resource": subnet}))
        .await;
    let before: Vec<_> = p.resources_with("shared-").await;
    let provider = Arc::new(GcpProvider::new(p.connector()));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("gcp.db")).unwrap());
    let engine = engine_with(p, store, provider.clone()).await;
    let spec: Cluster = from_text(
        &cluster_yaml("shared", SMALL_POOLS, "    network: shared-vpc"),
        Format::Yaml,
    )
    .unwrap();
    let id = engine.create_cluster(&spec).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(180))
        .await
        .unwrap();
    let ids = id.to_string();
    let vms = instances(p, &ids).await;
    assert_eq!(vms.len(), 3);
    for v in &vms {
        let s = v["networkInterfaces"][0]["subnetwork"].as_str().unwrap();
        assert!(s.ends_with("/subnetworks/shared-west"), "{s}");
        let ip: std::net::Ipv4Addr = v["networkInterfaces"][0]["networkIP"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ip.octets()[..2], [172, 20]);
    }
    let pre = prefix(&id);
    let mine = cluster_resources(p, &pre, &ids).await;
    assert!(
        mine.iter().all(|r| r["kind"] != "compute#router"
            && r["kind"] != "compute#network"
            && r["kind"] != "compute#subnetwork"),
        "{mine:#?}"
    );
    let rules: Vec<_> = mine
        .iter()
        .filter(|r| r["kind"] == "compute#firewall")
        .collect();
    assert_eq!(rules.len(), 3);
    assert!(rules.iter().all(|r| r["network"]
        .as_str()
        .unwrap()
        .ends_with("/networks/shared-vpc")));
    engine.delete_cluster(id).await.unwrap();
    engine
        .wait_for_phase(id, Phase::Deleted, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(cluster_resources(p, &pre, &ids).await.is_empty());
    // The user's network and subnetwork: unchanged, never written.
    assert_eq!(p.resources_with("shared-").await, before);
    let writes: Vec<_> = p
        .requests()
        .await
        .into_iter()
        .filter(|(m, path, _)| {
            m != "GET" && (path.contains("shared-vpc") || path.contains("shared-west"))
        })
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    let v = p.violations();
    assert!(v.is_empty(), "Prism refused: {v:#?}");
    engine.shutdown().await;
}
