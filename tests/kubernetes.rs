//! The engine managing the Kubernetes cluster, not only its machines: each test runs its own
//! real kube-apiserver + etcd (built from their Go modules by `scripts/kube-peers`), kubelets
//! simulated as kwok does for the simulated cloud's machines, and the engine connected
//! through `spectro_kube::KubeConnector`. What the tests see is cross-checked with the real
//! kubectl.

mod common;
#[path = "common/kubepeers.rs"]
mod kubepeers;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use spectro::engine::status::Phase;
use spectro::engine::BlockerKind;
use spectro::model::document::{from_text, Format};
use spectro::model::{Cluster, PoolRole};
use spectro::provider::{ClusterId, MachineState};
use spectro::records::condition::ConditionType;
use spectro::sim::{SimCloud, SimConfig};
use spectro::{Engine, EngineConfig, SqliteStore};

use kubepeers::{connector, ApiServer, Budget, EtcdCluster, Kubelets, QuorumSampler};

const T: Duration = Duration::from_secs(90);

fn config() -> EngineConfig {
    EngineConfig {
        poll_interval: Duration::from_millis(100),
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_secs(1),
        ..EngineConfig::fast()
    }
}

fn spec(name: &str, cp: u32, workers: u32) -> Cluster {
    from_text(
        &format!(
            r#"
name: {name}
profile: {{ name: demo, version: 1.0.0 }}
cloudAccount: sim
cloud: {{ aws: {{ region: us-east-1 }} }}
nodePools:
  - {{ name: cp, role: controlPlane, size: {cp}, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }}
  - {{ name: workers, role: worker, size: {workers}, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b] }}
"#
        ),
        Format::Yaml,
    )
    .expect("cluster spec")
}

struct Rig {
    api: ApiServer,
    sim: Arc<SimCloud>,
    engine: Engine,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

async fn rig(etcd: Option<Arc<EtcdCluster>>) -> Rig {
    rig_with(etcd, config()).await
}

async fn rig_with(etcd: Option<Arc<EtcdCluster>>, config: EngineConfig) -> Rig {
    let api = ApiServer::start().await;
    let client = api.client().await;
    let sim = common::sim(SimConfig::default());
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("spectro.db")).expect("store"));
    let engine = Engine::builder(store)
        .provider(sim.clone())
        .workload(Arc::new(connector(&api, etcd)))
        .config(config)
        .start()
        .await
        .expect("engine");
    engine
        .put_profile(&common::profile())
        .await
        .expect("profile");
    engine
        .put_cloud_account(&common::account())
        .await
        .expect("account");
    Rig {
        api,
        sim,
        engine,
        client,
        _dir: dir,
    }
}

fn running(sim: &SimCloud, id: ClusterId, role: Option<PoolRole>) -> Vec<String> {
    let mut v: Vec<String> = sim
        .machines(id)
        .into_iter()
        .map(|i| i.machine)
        .filter(|m| m.state == MachineState::Running && role.is_none_or(|r| m.role == r))
        .map(|m| m.name)
        .collect();
    v.sort();
    v
}

async fn node_names(client: &kube::Client) -> Vec<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut v: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    v.sort();
    v
}

/// `kubectl get nodes` names, as a user would see them.
fn kubectl_nodes(api: &ApiServer) -> Vec<String> {
    let mut v: Vec<String> = api
        .kubectl(&["get", "nodes", "-o", "name"])
        .lines()
        .filter_map(|l| l.strip_prefix("node/").map(str::to_string))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_only_when_every_node_is_ready() {
    let r = rig(None).await;
    let id = r
        .engine
        .create_cluster(&spec("nodes", 3, 2))
        .await
        .expect("create");
    let kubelets = Kubelets::spawn(r.client.clone(), r.sim.clone(), id, None);
    kubelets
        .hold_first_of
        .lock()
        .unwrap()
        .insert("workers".into());

    // All five machines run and register; one Node stays NotReady.
    let rec = r
        .engine
        .wait_for(id, T, |_| running(&r.sim, id, None).len() == 5)
        .await
        .expect("wait");
    assert_eq!(running(&r.sim, id, None).len(), 5, "{:?}", rec.status);
    let held = kubelets
        .not_ready
        .lock()
        .unwrap()
        .iter()
        .next()
        .cloned()
        .expect("a worker held NotReady");
    let rec = r
        .engine
        .wait_for(id, T, |rec| {
            rec.status.conditions.iter().any(|c| {
                c.kind == ConditionType::WorkersReady
                    && c.reason == "NodeNotReady"
                    && c.message.contains(&held)
            })
        })
        .await
        .expect("wait");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rec2 = r.engine.cluster(id).await.expect("cluster");
    assert_eq!(
        rec2.status.phase,
        Phase::Provisioning,
        "{:?}",
        rec.status.conditions
    );
    let workers = rec2
        .status
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::WorkersReady)
        .expect("workers condition");
    assert!(
        workers.message.contains("1/2 worker nodes ready") && workers.message.contains(&held),
        "{workers:?}"
    );
    let why = r.engine.explain(id).await.expect("explain");
    assert!(
        why.blockers
            .iter()
            .any(|b| b.kind == BlockerKind::NodeNotReady && b.message.contains("not Ready")),
        "{:?}",
        why.blockers
    );
    // The real kubectl agrees: 5 Nodes, one NotReady.
    let wide = r.api.kubectl(&["get", "nodes", "--no-headers"]);
    assert_eq!(wide.lines().count(), 5, "{wide}");
    assert_eq!(
        wide.lines().filter(|l| l.contains(" NotReady ")).count(),
        1,
        "{wide}"
    );

    kubelets.not_ready.lock().unwrap().clear();
    let rec = r
        .engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running once the Node is Ready");
    assert!(rec.status.conditions.iter().all(|c| c.reason == "Ready"));
    assert_eq!(kubectl_nodes(&r.api), running(&r.sim, id, None));
    let wide = r.api.kubectl(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        wide.lines().filter(|l| l.contains(" Ready ")).count(),
        5,
        "{wide}"
    );
    // The joins refreshed the bootstrap token's expiration: kubeadm's 24 h from now, not
    // "never" (a token with `ttl: 0s` would stay valid for ever).
    let expiration = r.api.kubectl(&[
        "get",
        "secrets",
        "-n",
        "kube-system",
        "--field-selector",
        "type=bootstrap.kubernetes.io/token",
        "-o",
        "jsonpath={.items[*].data.expiration}",
    ]);
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(expiration.trim())
        .expect("one token, base64");
    let at = chrono::DateTime::parse_from_rfc3339(std::str::from_utf8(&decoded).expect("utf-8"))
        .expect("RFC 3339 expiration");
    let left = at.signed_duration_since(spectro::clock::system_now());
    assert!(
        left > chrono::Duration::hours(23) && left <= chrono::Duration::hours(24),
        "expires in {left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_drains_through_the_eviction_api_and_respects_the_budget() {
    let r = rig(None).await;
    let id = r
        .engine
        .create_cluster(&spec("drain", 1, 3))
        .await
        .expect("create");
    let _kubelets = Kubelets::spawn(r.client.clone(), r.sim.clone(), id, None);
    r.engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running");
    let workers = running(&r.sim, id, Some(PoolRole::Worker));
    assert_eq!(workers.len(), 3);

    // One `web` pod per worker, all under a budget that allows no disruption.
    let budget = Budget::create(&r.client, "web", &workers).await;
    let pods: Api<Pod> = Api::namespaced(r.client.clone(), "default");
    let rec = r.engine.cluster(id).await.expect("cluster");
    let mut smaller = rec.spec.clone();
    smaller.node_pools[1].size = 2;
    r.engine.update_cluster(id, &smaller).await.expect("update");

    // The drain waits: the condition and the explanation say why; no machine went.
    let rec = r
        .engine
        .wait_for(id, T, |rec| {
            rec.status.conditions.iter().any(|c| {
                c.kind == ConditionType::WorkersReady
                    && c.reason == "Draining"
                    && c.message.contains("disruption budget")
            })
        })
        .await
        .expect("wait");
    let cond = rec
        .status
        .conditions
        .iter()
        .find(|c| c.kind == ConditionType::WorkersReady)
        .expect("condition");
    if cond.reason != "Draining" {
        let why = r.engine.explain(id).await.expect("explain");
        let events = r.engine.events(Some(id), 0, 10_000).await.expect("events");
        panic!(
            "{cond:?}\nphase {:?} gen {} observed {}\nblockers: {:#?}\npods: {}\npdb: {}\nevents: {:#?}",
            rec.status.phase,
            rec.generation,
            rec.status.observed_generation,
            why.blockers,
            r.api.kubectl(&["get", "pods", "-o", "wide"]),
            r.api.kubectl(&["get", "pdb", "web", "-o", "yaml"]),
            events.iter().rev().take(12).map(|e| format!("{} {}", e.reason, e.message)).collect::<Vec<_>>()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running(&r.sim, id, Some(PoolRole::Worker)).len(), 3);
    let why = r.engine.explain(id).await.expect("explain");
    let draining = why
        .blockers
        .iter()
        .find(|b| b.kind == BlockerKind::Draining)
        .unwrap_or_else(|| panic!("{:?}", why.blockers));
    let nodes: Api<Node> = Api::all(r.client.clone());
    let cordoned: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(cordoned.len(), 1, "one node cordoned: {cordoned:?}");
    let victim = cordoned[0].clone();
    assert!(draining.message.contains(&victim), "{draining:?}");
    let kubectl = r.api.kubectl(&["get", "node", &victim, "--no-headers"]);
    assert!(kubectl.contains("SchedulingDisabled"), "{kubectl}");
    // The victim's pod is still there (the budget refused its eviction).
    assert!(pods
        .get_opt(&format!("web-{victim}"))
        .await
        .expect("get")
        .is_some());

    // The budget allows one disruption: the drain goes through, the Node and the machine go.
    budget.allow(1).await;
    let rec = r
        .engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running after the drain");
    assert_eq!(rec.status.pools["workers"].current, 2);
    let left = running(&r.sim, id, Some(PoolRole::Worker));
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&victim));
    assert!(
        !node_names(&r.client).await.contains(&victim),
        "the victim's Node is gone"
    );
    assert_eq!(kubectl_nodes(&r.api), running(&r.sim, id, None));
    assert!(pods
        .get_opt(&format!("web-{victim}"))
        .await
        .expect("get")
        .is_none());
    // The other workers' pods were never touched.
    for w in &left {
        assert!(pods
            .get_opt(&format!("web-{w}"))
            .await
            .expect("get")
            .is_some());
    }
    let events = r.engine.events(Some(id), 0, 10_000).await.expect("events");
    for reason in ["NodeCordoned", "DrainBlocked", "NodeDrained", "NodeDeleted"] {
        assert!(
            events.iter().any(|e| e.reason == reason),
            "event {reason} missing: {:?}",
            events.iter().map(|e| &e.reason).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_replacement_keeps_etcd_quorum() {
    let etcd = EtcdCluster::new();
    let r = rig(Some(etcd.clone())).await;
    let id = r
        .engine
        .create_cluster(&spec("quorum", 3, 1))
        .await
        .expect("create");
    let _kubelets = Kubelets::spawn(r.client.clone(), r.sim.clone(), id, Some(etcd.clone()));
    let rec = r
        .engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running");
    let old_cp = running(&r.sim, id, Some(PoolRole::ControlPlane));
    assert_eq!(old_cp.len(), 3);
    let members = etcd.member_states().await;
    let mut names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(names, old_cp, "one member per control-plane machine");
    assert!(members.iter().all(|m| m.healthy), "{members:?}");

    // Sample quorum continuously while the control plane is replaced.
    let sampler = QuorumSampler::start(etcd.clone());
    let mut bigger = rec.spec.clone();
    bigger.node_pools[0].instance_type = Some("m5.xlarge".into());
    r.engine.update_cluster(id, &bigger).await.expect("update");
    let rec = match r
        .engine
        .wait_for_phase(id, Phase::Running, Duration::from_secs(120))
        .await
    {
        Ok(rec) => rec,
        Err(e) => {
            let why = r.engine.explain(id).await.expect("explain");
            let events = r.engine.events(Some(id), 0, 10_000).await.expect("events");
            panic!(
                "{e}\nblockers: {:#?}\nmembers: {:?}\nnodes: {}\nmachines: {:?}\nevents: {:#?}",
                why.blockers,
                etcd.member_states().await,
                r.api.kubectl(&["get", "nodes"]),
                r.sim
                    .machines(id)
                    .into_iter()
                    .map(|i| (i.machine.name, i.machine.state))
                    .collect::<Vec<_>>(),
                events
                    .iter()
                    .rev()
                    .take(15)
                    .map(|e| format!("{} {}", e.reason, e.message))
                    .collect::<Vec<_>>()
            );
        }
    };
    let (n, lost) = sampler.finish().await;
    println!("quorum samples during the replacement: {n}, lost: {lost}");
    assert!(n > 10, "the sampler ran ({n} samples)");
    assert_eq!(lost, 0, "quorum lost in {lost} of {n} samples");

    let new_cp = running(&r.sim, id, Some(PoolRole::ControlPlane));
    assert_eq!(new_cp.len(), 3);
    assert!(
        new_cp.iter().all(|m| !old_cp.contains(m)),
        "every machine replaced"
    );
    // Health as etcd reports it (a leader election on these 2 cores can make a member
    // answer unhealthy for a moment).
    let mut members = etcd.member_states().await;
    for _ in 0..50 {
        if members.iter().all(|m| m.healthy) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        members = etcd.member_states().await;
    }
    let mut names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    names.sort();
    assert_eq!(
        names, new_cp,
        "exactly the new machines' members: {members:?}"
    );
    assert!(members.iter().all(|m| m.healthy), "{members:?}");
    assert_eq!(kubectl_nodes(&r.api), running(&r.sim, id, None));
    let events = r.engine.events(Some(id), 0, 10_000).await.expect("events");
    let removals: Vec<&str> = events
        .iter()
        .filter(|e| e.reason == "EtcdMemberRemoved")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        removals.len(),
        3,
        "one member removal per replaced machine: {removals:#?}"
    );
    for old in &old_cp {
        assert!(
            removals
                .iter()
                .any(|m| m.contains(&format!("of machine {old} removed"))),
            "{old}: {removals:#?}"
        );
    }
    assert_eq!(rec.status.pools["cp"].current, 3);
}

const PACKS_PROFILE: &str = r#"
name: packs
version: 1.0.0
cloud: aws
packs:
  - { name: ubuntu, layer: os, version: "22.04" }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - name: calico
    layer: cni
    version: 3.28.0
    values: |
      mtu: 1440
      ipPools: [10.244.0.0/16]
    manifests: |
      apiVersion: v1
      kind: Namespace
      metadata: { name: calico-system }
      ---
      apiVersion: v1
      kind: ConfigMap
      metadata: { name: calico-config, namespace: calico-system }
      data:
        mtu: "{{ .Values.mtu }}"
        pools: '{{ .Values.ipPools }}'
  - name: hello
    layer: addon
    version: 1.0.0
    values: "greeting: hi"
    manifests: |
      apiVersion: v1
      kind: ConfigMap
      metadata: { name: hello, namespace: default }
      data: { greeting: "{{ .Values.greeting }}" }
      ---
      apiVersion: v1
      kind: ServiceAccount
      metadata: { name: hello, namespace: default }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pack_values_and_profile_updates_reach_the_running_cluster() {
    let r = rig(None).await;
    let mut profile: spectro::model::ClusterProfile =
        from_text(PACKS_PROFILE, Format::Yaml).expect("profile");
    r.engine.put_profile(&profile).await.expect("profile");
    let mut cluster = spec("packs", 1, 1);
    cluster.profile.name = "packs".into();
    let id = r.engine.create_cluster(&cluster).await.expect("create");
    let _kubelets = Kubelets::spawn(r.client.clone(), r.sim.clone(), id, None);
    let rec = r
        .engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running");
    let mtu = || {
        r.api.kubectl(&[
            "get",
            "configmap",
            "calico-config",
            "-n",
            "calico-system",
            "-o",
            "jsonpath={.data.mtu}",
        ])
    };
    assert_eq!(mtu(), "1440");
    assert_eq!(
        r.api.kubectl(&[
            "get",
            "configmap",
            "calico-config",
            "-n",
            "calico-system",
            "-o",
            "jsonpath={.data.pools}"
        ]),
        r#"["10.244.0.0/16"]"#
    );
    assert_eq!(
        r.api.kubectl(&[
            "get",
            "configmap",
            "hello",
            "-o",
            "jsonpath={.data.greeting}"
        ]),
        "hi"
    );
    // Applied by server-side apply, field manager `spectro`, labelled with pack and cluster.
    let yaml = r.api.kubectl(&[
        "get",
        "configmap",
        "hello",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        yaml.contains("manager: spectro") && yaml.contains("operation: Apply"),
        "{yaml}"
    );
    assert!(yaml.contains("spectro.dev/pack: hello"), "{yaml}");
    let first = rec.status.packs["calico"].revision.clone();
    assert_eq!(rec.status.packs["hello"].objects.len(), 2);

    // An override on the running cluster: the object changes before the generation counts
    // as applied.
    let generation = r
        .engine
        .set_pack_values(id, "calico", "mtu: 9000")
        .await
        .expect("override");
    let rec = r
        .engine
        .wait_for(id, T, |rec| rec.status.observed_generation >= generation)
        .await
        .expect("wait");
    assert_eq!(rec.status.observed_generation, generation);
    assert_eq!(mtu(), "9000", "the override reached the API server");
    assert_ne!(rec.status.packs["calico"].revision, first);
    assert_eq!(rec.status.phase, Phase::Running);

    // A profile revision without the add-on: applying the update prunes its objects.
    profile.packs.retain(|p| p.name != "hello");
    r.engine.put_profile(&profile).await.expect("new revision");
    r.engine
        .wait_for(id, T, |rec| rec.status.profile_update.is_some())
        .await
        .expect("notified");
    let generation = r
        .engine
        .apply_profile_update(id, None)
        .await
        .expect("apply the update");
    let rec = r
        .engine
        .wait_for(id, T, |rec| {
            rec.status.observed_generation >= generation && rec.status.phase == Phase::Running
        })
        .await
        .expect("wait");
    assert_eq!(rec.status.observed_generation, generation);
    assert!(
        !rec.status.packs.contains_key("hello"),
        "{:?}",
        rec.status.packs
    );
    let gone = r.api.kubectl(&["get", "configmap", "hello"]);
    assert!(gone.contains("NotFound"), "{gone}");
    let gone = r.api.kubectl(&["get", "serviceaccount", "hello"]);
    assert!(gone.contains("NotFound"), "{gone}");
    assert_eq!(mtu(), "9000", "the other pack and its override stay");
    let events = r.engine.events(Some(id), 0, 10_000).await.expect("events");
    assert!(events.iter().any(|e| e.reason == "PackRemoved"));

    // An override that references nothing the manifests can render is named, with the pack.
    let mut bad = profile.clone();
    bad.version = "1.0.1".into();
    if let Some(p) = bad.packs.iter_mut().find(|p| p.name == "calico") {
        p.manifests.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: extra, namespace: calico-system }\ndata: { x: '{{ .Values.notDefined }}' }\n");
    }
    r.engine.put_profile(&bad).await.expect("profile 1.0.1");
    let mut next = rec.spec.clone();
    next.profile.version = "1.0.1".into();
    r.engine.update_cluster(id, &next).await.expect("update");
    let _ = r.engine.apply_profile_update(id, None).await;
    let rec = r
        .engine
        .wait_for(id, T, |rec| {
            rec.status.conditions.iter().any(|c| {
                c.reason == "InvalidPackValues"
                    && c.message.contains("calico")
                    && c.message.contains("notDefined")
            })
        })
        .await
        .expect("wait");
    assert!(
        rec.status
            .conditions
            .iter()
            .any(|c| c.reason == "InvalidPackValues"),
        "{:?}",
        rec.status.conditions
    );
}

/// The production path of etcd membership: TLS with client-certificate authentication, the
/// client certificate minted by the engine from the cluster's etcd CA (`ClusterPki::etcd_client`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_membership_over_tls_with_a_certificate_from_the_cluster_etcd_ca() {
    use spectro::bootstrap::ClusterPki;
    use spectro::workload::{WorkloadAccess, WorkloadConnector, WorkloadError};

    let pki = ClusterPki::generate().expect("pki");
    // The etcd server's certificate, signed by the same etcd CA (as kubeadm issues it).
    let ca_key = rcgen::KeyPair::from_pem(pki.etcd_ca.key_pem.expose()).expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "etcd-ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let server_key = rcgen::KeyPair::generate().expect("key");
    let mut sp = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    sp.subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    sp.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server = sp.signed_by(&server_key, &issuer).expect("server cert");
    let etcd = kubepeers::TlsEtcd::start(
        "tls-cp-1",
        &pki.etcd_ca.cert_pem,
        &server.pem(),
        &server_key.serialize_pem(),
    );
    let access = |pki: &ClusterPki, ca_pem: &str| {
        let (cert, key) = pki.etcd_client().expect("client cert");
        WorkloadAccess {
            cluster: ClusterId::new(),
            name: "tls".into(),
            endpoint: "127.0.0.1:6443".into(),
            ca_pem: pki.ca.cert_pem.clone(),
            kubeconfig: pki.admin_kubeconfig("tls", "127.0.0.1:6443"),
            etcd_endpoints: vec![etcd.url.clone()],
            etcd_ca_pem: ca_pem.to_string(),
            etcd_client_cert_pem: cert,
            etcd_client_key: key,
        }
    };
    let conn = spectro_kube::KubeConnector::new()
        .with_timeout(Duration::from_secs(2))
        .connect(&access(&pki, &pki.etcd_ca.cert_pem))
        .await
        .expect("connect");
    let mut members = Vec::new();
    for _ in 0..100 {
        if let Ok(Some(m)) = conn.etcd_members().await {
            if m.iter().any(|m| m.healthy) {
                members = m;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].name, "tls-cp-1");
    assert!(members[0].healthy && !members[0].learner);
    // Removing a member that is not there: nothing to do, not an error.
    assert_eq!(conn.remove_etcd_member(12345).await, Ok(false));
    // The quorum rule refuses the last member before any call.
    assert!(!spectro::workload::quorum_after_removal(
        &members,
        members[0].id
    ));

    // A client certificate from another cluster's etcd CA is refused by the server.
    let other = ClusterPki::generate().expect("pki");
    let stranger = spectro_kube::KubeConnector::new()
        .with_timeout(Duration::from_secs(2))
        .connect(&access(&other, &pki.etcd_ca.cert_pem))
        .await
        .expect("connect");
    let refused = stranger.etcd_members().await;
    assert!(
        matches!(refused, Err(WorkloadError::Unreachable { .. })),
        "{refused:?}"
    );
    // And the error names no credential.
    let text = format!("{refused:?}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stays_not_ready_is_replaced_when_the_health_check_is_on() {
    let mut cfg = config();
    cfg.nodes.ready_timeout = Duration::from_secs(2);
    cfg.nodes.replace_unready = true;
    let r = rig_with(None, cfg).await;
    let id = r
        .engine
        .create_cluster(&spec("mhc", 1, 2))
        .await
        .expect("create");
    let kubelets = Kubelets::spawn(r.client.clone(), r.sim.clone(), id, None);
    // The first worker's kubelet never reports Ready.
    kubelets
        .hold_first_of
        .lock()
        .unwrap()
        .insert("workers".into());
    let rec = r
        .engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running with a replacement");
    let sick = kubelets
        .not_ready
        .lock()
        .unwrap()
        .iter()
        .next()
        .cloned()
        .expect("a worker was held NotReady");
    let workers = running(&r.sim, id, Some(PoolRole::Worker));
    assert_eq!(workers.len(), 2);
    assert!(!workers.contains(&sick), "{sick} replaced: {workers:?}");
    assert!(
        !node_names(&r.client).await.contains(&sick),
        "its Node deleted"
    );
    assert_eq!(kubectl_nodes(&r.api), running(&r.sim, id, None));
    let events = r.engine.events(Some(id), 0, 10_000).await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.reason == "NodeNotReady" && e.message.contains(&sick)),
        "{:?}",
        events
            .iter()
            .map(|e| (&e.reason, &e.message))
            .collect::<Vec<_>>()
    );
    assert!(events
        .iter()
        .any(|e| e.reason == "MachinesDeleted" && e.message.contains("Unhealthy")));
    assert_eq!(rec.status.pools["workers"].current, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_blocked_past_the_drain_timeout_gives_up_with_a_warning() {
    let mut cfg = config();
    cfg.nodes.drain_timeout = Some(Duration::from_secs(2));
    let r = rig_with(None, cfg).await;
    let id = r
        .engine
        .create_cluster(&spec("timeout", 1, 2))
        .await
        .expect("create");
    let _kubelets = Kubelets::spawn(r.client.clone(), r.sim.clone(), id, None);
    let rec = r
        .engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running");
    let workers = running(&r.sim, id, Some(PoolRole::Worker));
    // A budget that never allows the eviction.
    let _budget = Budget::create(&r.client, "db", &workers).await;
    let mut smaller = rec.spec.clone();
    smaller.node_pools[1].size = 1;
    r.engine.update_cluster(id, &smaller).await.expect("update");
    // The budget never allows the eviction: after the drain timeout the node goes anyway.
    let rec = r
        .engine
        .wait_for_phase(id, Phase::Running, T)
        .await
        .expect("running after the drain timeout");
    assert_eq!(rec.status.pools["workers"].current, 1);
    let events = r.engine.events(Some(id), 0, 10_000).await.expect("events");
    let blocked = events
        .iter()
        .find(|e| e.reason == "DrainBlocked")
        .expect("the drain was blocked first");
    let gave_up = events
        .iter()
        .find(|e| e.reason == "DrainTimeout")
        .expect("a DrainTimeout warning");
    assert!(gave_up.time >= blocked.time + chrono::Duration::seconds(2));
    assert!(
        gave_up.message.contains("removed anyway"),
        "{}",
        gave_up.message
    );
    assert_eq!(kubectl_nodes(&r.api), running(&r.sim, id, None));
}
