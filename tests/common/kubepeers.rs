//! Kubernetes peers for the tests: the real kube-apiserver and etcd built from their Go
//! modules by `scripts/kube-peers`, started here on loopback for one test; an etcd cluster
//! whose members stand for a cluster's control-plane machines; and kubelets simulated as kwok
//! does (Nodes registered for the simulated cloud's running machines, their `Ready`
//! condition, pods a drain deleted confirmed gone).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use spectro::model::PoolRole;
use spectro::provider::{ClusterId, MachineState};
use spectro::sim::SimCloud;
use spectro::workload::WorkloadAccess;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The directory holding `apiserver` and `etcd`: `SPECTRO_KUBE_BIN`, else built by
/// `scripts/kube-peers --build-only`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SPECTRO_KUBE_BIN") {
        return PathBuf::from(d);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/kube-peers"))
        .arg("--build-only")
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/kube-peers runs");
    assert!(
        out.status.success(),
        "scripts/kube-peers --build-only failed: the Kubernetes peers are required"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcd_cmd(
    bin: &Path,
    name: &str,
    dir: &Path,
    client: u16,
    peer: u16,
    initial: &str,
    state: &str,
) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
    Command::new(bin.join("etcd"))
        .args([
            "--name",
            name,
            "--data-dir",
            &dir.join(name).to_string_lossy(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            state,
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts")
}

/// A real kube-apiserver on its own real etcd, for one test.
pub struct ApiServer {
    pub dir: tempfile::TempDir,
    procs: Vec<Proc>,
    /// An admin kubeconfig (YAML), also written to `kubeconfig_path`.
    pub kubeconfig: String,
    pub kubeconfig_path: PathBuf,
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let (client, peer, secure) = (free_port(), free_port(), free_port());
        let store = Proc(etcd_cmd(
            &bin,
            "store",
            d,
            client,
            peer,
            &format!("store=http://127.0.0.1:{peer}"),
            "new",
        ));
        let run = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "openssl {args:?}");
        };
        let key = d.join("sa.key");
        let pubkey = d.join("sa.pub");
        run(&["genrsa", "-out", &key.to_string_lossy(), "2048"]);
        run(&[
            "rsa",
            "-in",
            &key.to_string_lossy(),
            "-pubout",
            "-out",
            &pubkey.to_string_lossy(),
        ]);
        let token = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},spectro-admin,spectro-admin,system:masters\n"),
        )
        .expect("token file");
        let log = std::fs::File::create(d.join("apiserver.log")).expect("log");
        let api = Proc(
            Command::new(bin.join("apiserver"))
                .args([
                    "--etcd-servers",
                    &format!("http://127.0.0.1:{client}"),
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                    "--secure-port",
                    &secure.to_string(),
                    "--cert-dir",
                    &d.join("certs").to_string_lossy(),
                    "--token-auth-file",
                    &d.join("tokens.csv").to_string_lossy(),
                    "--authorization-mode",
                    "RBAC",
                    "--service-account-issuer",
                    "https://kubernetes.default.svc",
                    "--service-account-key-file",
                    &pubkey.to_string_lossy(),
                    "--service-account-signing-key-file",
                    &key.to_string_lossy(),
                    "--service-cluster-ip-range",
                    "10.96.0.0/16",
                    // No controller-manager runs: no service account controller either.
                    "--disable-admission-plugins",
                    "ServiceAccount",
                    // Loopback only: no `kubernetes` Service endpoints to reconcile.
                    "--endpoint-reconciler-type",
                    "none",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("kube-apiserver starts"),
        );
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: peers\n  cluster:\n    server: https://127.0.0.1:{secure}\n    insecure-skip-tls-verify: true\nusers:\n- name: spectro-admin\n  user:\n    token: {token}\ncontexts:\n- name: peers\n  context:\n    cluster: peers\n    user: spectro-admin\ncurrent-context: peers\n"
        );
        let kubeconfig_path = d.join("kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig).expect("kubeconfig");
        let mut s = ApiServer {
            dir,
            procs: vec![store, api],
            kubeconfig,
            kubeconfig_path,
        };
        for _ in 0..240 {
            if let Ok(Some(status)) = s.procs[1].0.try_wait() {
                let log =
                    std::fs::read_to_string(s.dir.path().join("apiserver.log")).unwrap_or_default();
                panic!("kube-apiserver exited ({status}):\n{log}");
            }
            let out = s.kubectl(&["get", "--raw", "/readyz"]);
            if out.trim() == "ok" {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let log = std::fs::read_to_string(s.dir.path().join("apiserver.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "kube-apiserver not ready after 60 s; log tail:\n{}",
            tail.join("\n")
        );
    }

    /// Runs the real kubectl against it; stdout (stderr appended on failure).
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            .args(args)
            .output()
            .expect("kubectl runs");
        let mut s = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            s.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        s
    }

    pub async fn client(&self) -> kube::Client {
        let _ = rustls_default();
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }
}

fn rustls_default() -> bool {
    // Same provider as spectro-kube installs.
    let _ = spectro_kube::KubeConnector::new();
    true
}

/// One member of the membership etcd cluster.
struct Member {
    proc: Proc,
    client: String,
}

/// An etcd cluster whose members stand for a cluster's control-plane machines (one member per
/// machine, named after it, joined as kubeadm joins one: member add, then start).
pub struct EtcdCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    members: Mutex<BTreeMap<String, Member>>,
    peers: Mutex<BTreeMap<String, String>>,
    http: reqwest::Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub id: u64,
    pub name: String,
    pub healthy: bool,
}

impl EtcdCluster {
    pub fn new() -> Arc<EtcdCluster> {
        Arc::new(EtcdCluster {
            bin: bin_dir(),
            dir: tempfile::tempdir().expect("temp dir"),
            members: Mutex::new(BTreeMap::new()),
            peers: Mutex::new(BTreeMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
        })
    }

    /// The client URLs of the members whose process runs.
    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .lock()
            .unwrap()
            .values()
            .map(|m| m.client.clone())
            .collect()
    }

    pub fn started(&self) -> BTreeSet<String> {
        self.members.lock().unwrap().keys().cloned().collect()
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Option<serde_json::Value> {
        for u in self.client_urls() {
            if let Ok(r) = self
                .http
                .post(format!("{u}{path}"))
                .json(&body)
                .send()
                .await
            {
                if r.status().is_success() {
                    return r.json().await.ok();
                }
            }
        }
        None
    }

    /// Starts the member of machine `name`: the first one creates the cluster, the others
    /// are added, then started with the existing members.
    pub async fn join(&self, name: &str) {
        if self.members.lock().unwrap().contains_key(name) {
            return;
        }
        let (client, peer) = (free_port(), free_port());
        let peer_url = format!("http://127.0.0.1:{peer}");
        let first = self.members.lock().unwrap().is_empty();
        let (initial, state) = if first {
            (format!("{name}={peer_url}"), "new")
        } else {
            let Some(added) = self
                .post("/v3/cluster/member/add", json!({ "peerURLs": [peer_url] }))
                .await
            else {
                return;
            };
            let peers = self.peers.lock().unwrap().clone();
            let mut parts = vec![format!("{name}={peer_url}")];
            for m in added["members"].as_array().cloned().unwrap_or_default() {
                let n = m["name"].as_str().unwrap_or_default();
                if let Some(p) = peers.get(n) {
                    parts.push(format!("{n}={p}"));
                }
            }
            (parts.join(","), "existing")
        };
        let child = etcd_cmd(
            &self.bin,
            name,
            self.dir.path(),
            client,
            peer,
            &initial,
            state,
        );
        self.peers
            .lock()
            .unwrap()
            .insert(name.to_string(), peer_url);
        self.members.lock().unwrap().insert(
            name.to_string(),
            Member {
                proc: Proc(child),
                client: format!("http://127.0.0.1:{client}"),
            },
        );
    }

    /// Stops machine `name`'s member process (the machine is gone).
    pub fn stop(&self, name: &str) {
        self.members.lock().unwrap().remove(name);
    }

    /// The member list with each member's health.
    pub async fn member_states(&self) -> Vec<MemberState> {
        let Some(list) = self.post("/v3/cluster/member/list", json!({})).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in list["members"].as_array().cloned().unwrap_or_default() {
            let mut healthy = false;
            for u in m["clientURLs"].as_array().cloned().unwrap_or_default() {
                if let Some(u) = u.as_str() {
                    if let Ok(r) = self.http.get(format!("{u}/health")).send().await {
                        let h: serde_json::Value = r.json().await.unwrap_or_default();
                        healthy |= h["health"] == "true";
                    }
                }
            }
            out.push(MemberState {
                id: m["ID"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default(),
                name: m["name"].as_str().unwrap_or_default().to_string(),
                healthy,
            });
        }
        out
    }

    /// True when a linearizable write commits (the cluster has quorum), within 1 s.
    pub async fn has_quorum(&self) -> bool {
        let body = json!({ "key": "cXVvcnVt", "value": "MQ==" });
        let urls = self.client_urls();
        for u in urls {
            let r = self
                .http
                .post(format!("{u}/v3/kv/put"))
                .timeout(Duration::from_secs(1))
                .json(&body)
                .send()
                .await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    return true;
                }
            }
        }
        false
    }
}

/// Kubelets simulated as kwok does, for one cluster of the simulated cloud.
pub struct Kubelets {
    /// Machines whose Node stays `NotReady`.
    pub not_ready: Arc<Mutex<BTreeSet<String>>>,
    /// Pools whose first machine seen is held `NotReady` (added to `not_ready`).
    pub hold_first_of: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelets {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn node_status(m: &spectro::provider::Machine, ready: bool) -> serde_json::Value {
    let now = spectro::clock::system_now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut addresses = vec![json!({ "type": "Hostname", "address": m.name })];
    if let Some(a) = m.address {
        addresses.push(json!({ "type": "InternalIP", "address": a.to_string() }));
    }
    json!({
        "status": {
            "addresses": addresses,
            "capacity": { "cpu": "2", "memory": "8Gi", "pods": "110" },
            "allocatable": { "cpu": "2", "memory": "8Gi", "pods": "110" },
            "conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                "message": if ready { "kubelet is posting ready status" } else { "container runtime network not ready" },
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
            "nodeInfo": {
                "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "containerd://1.7.0",
                "kernelVersion": "6.1.0", "kubeProxyVersion": "", "kubeletVersion": "v1.37.2",
                "machineID": "", "operatingSystem": "linux", "osImage": "simulated", "systemUUID": m.id,
            },
        }
    })
}

impl Kubelets {
    /// Registers every running machine of `cluster` as a Node (named after the machine, its
    /// address as `InternalIP`, `sim:///<zone>/<id>` as provider ID) and keeps its `Ready`
    /// condition; with `etcd`, starts a member for each running control-plane machine and
    /// stops it when the machine is gone; deletes terminating pods on its Nodes (what a
    /// kubelet confirms).
    pub fn spawn(
        client: kube::Client,
        sim: Arc<SimCloud>,
        cluster: ClusterId,
        etcd: Option<Arc<EtcdCluster>>,
    ) -> Kubelets {
        let not_ready: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let hold_first_of: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let (nr, hold) = (not_ready.clone(), hold_first_of.clone());
        let task = tokio::spawn(async move {
            let nodes: Api<Node> = Api::all(client.clone());
            let pods: Api<Pod> = Api::all(client.clone());
            let mut registered: BTreeMap<String, bool> = BTreeMap::new();
            let mut seen: BTreeSet<String> = BTreeSet::new();
            loop {
                let machines: Vec<_> = sim
                    .machines(cluster)
                    .into_iter()
                    .map(|i| i.machine)
                    .collect();
                for m in machines.iter().filter(|m| m.state == MachineState::Running) {
                    if seen.insert(m.name.clone()) && hold.lock().unwrap().remove(&m.pool) {
                        nr.lock().unwrap().insert(m.name.clone());
                    }
                    if m.role == PoolRole::ControlPlane {
                        if let Some(e) = &etcd {
                            e.join(&m.name).await;
                        }
                    }
                    let ready = !nr.lock().unwrap().contains(&m.name);
                    if registered.get(&m.name) == Some(&ready) {
                        continue;
                    }
                    if !registered.contains_key(&m.name) {
                        // kubeadm labels control-plane Nodes.
                        let role_label = if m.role == PoolRole::ControlPlane {
                            "node-role.kubernetes.io/control-plane"
                        } else {
                            "node-role.kubernetes.io/worker"
                        };
                        let node: Node = serde_json::from_value(json!({
                            "apiVersion": "v1",
                            "kind": "Node",
                            "metadata": {
                                "name": m.name,
                                "labels": {
                                    "kubernetes.io/hostname": m.name,
                                    "spectro.dev/pool": m.pool,
                                    "topology.kubernetes.io/zone": m.zone,
                                    role_label: "",
                                },
                            },
                            "spec": { "providerID": format!("sim:///{}/{}", m.zone, m.id) },
                        }))
                        .expect("node");
                        match nodes.create(&PostParams::default(), &node).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 409 => {}
                            Err(_) => continue,
                        }
                    }
                    if nodes
                        .patch_status(
                            &m.name,
                            &PatchParams::default(),
                            &Patch::Merge(node_status(m, ready)),
                        )
                        .await
                        .is_ok()
                    {
                        registered.insert(m.name.clone(), ready);
                    }
                }
                // Machines gone: their kubelet (and etcd member process) with them.
                let live: BTreeSet<&str> = machines
                    .iter()
                    .filter(|m| m.state != MachineState::Deleting)
                    .map(|m| m.name.as_str())
                    .collect();
                if let Some(e) = &etcd {
                    for name in e.started() {
                        if !live.contains(name.as_str()) {
                            e.stop(&name);
                        }
                    }
                }
                registered.retain(|n, _| live.contains(n.as_str()));
                // Pods on a live node run (Ready); pods being deleted there are confirmed
                // gone at once.
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list.items {
                        let on = p.spec.as_ref().and_then(|s| s.node_name.clone());
                        if !on.as_ref().is_some_and(|n| live.contains(n.as_str())) {
                            continue;
                        }
                        let ns = p.metadata.namespace.clone().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                        if p.metadata.deletion_timestamp.is_none()
                            && phase.as_deref() != Some("Running")
                        {
                            let now = spectro::clock::system_now()
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                            let status = json!({ "status": {
                                "phase": "Running",
                                "startTime": now,
                                "containerStatuses": p.spec.as_ref().map(|s| s.containers.iter().map(|c| json!({
                                    "name": c.name, "image": c.image, "imageID": "", "ready": true,
                                    "restartCount": 0, "started": true,
                                    "state": { "running": { "startedAt": now } },
                                })).collect::<Vec<_>>()).unwrap_or_default(),
                                "conditions": [
                                    { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
                                    { "type": "Initialized", "status": "True", "lastTransitionTime": now },
                                    { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                                    { "type": "Ready", "status": "True", "lastTransitionTime": now },
                                ],
                            }});
                            let _ = api
                                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                                .await;
                        }
                        if p.metadata.deletion_timestamp.is_some() {
                            let _ = api
                                .delete(
                                    p.metadata.name.as_deref().unwrap_or_default(),
                                    &DeleteParams::default().grace_period(0),
                                )
                                .await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Kubelets {
            not_ready,
            hold_first_of,
            task,
        }
    }
}

/// A connector to the test's peers: the engine's access with the peers' kubeconfig and the
/// membership etcd's live endpoints.
pub fn connector(api: &ApiServer, etcd: Option<Arc<EtcdCluster>>) -> spectro_kube::KubeConnector {
    let kubeconfig = api.kubeconfig.clone();
    spectro_kube::KubeConnector::new()
        .with_timeout(Duration::from_secs(3))
        .with_resolver(move |a: &WorkloadAccess| WorkloadAccess {
            kubeconfig: spectro::secret::Secret::new(kubeconfig.clone()),
            etcd_endpoints: etcd.as_ref().map(|e| e.client_urls()).unwrap_or_default(),
            ..a.clone()
        })
}

/// One etcd serving its clients over TLS only, requiring client certificates signed by
/// `ca_pem` (as a kubeadm cluster's etcd does).
pub struct TlsEtcd {
    _dir: tempfile::TempDir,
    _proc: Proc,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
}

impl TlsEtcd {
    pub fn start(name: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> TlsEtcd {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for (f, text) in [
            ("ca.crt", ca_pem),
            ("server.crt", cert_pem),
            ("server.key", key_pem),
        ] {
            std::fs::write(d.join(f), text).expect("write");
        }
        let (client, peer) = (free_port(), free_port());
        let url = format!("https://127.0.0.1:{client}");
        let log = std::fs::File::create(d.join("etcd.log")).expect("log");
        let child = Command::new(bin.join("etcd"))
            .args([
                "--name",
                name,
                "--data-dir",
                &d.join("data").to_string_lossy(),
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("{name}=http://127.0.0.1:{peer}"),
                "--cert-file",
                &d.join("server.crt").to_string_lossy(),
                "--key-file",
                &d.join("server.key").to_string_lossy(),
                "--trusted-ca-file",
                &d.join("ca.crt").to_string_lossy(),
                "--client-cert-auth",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        TlsEtcd {
            _dir: dir,
            _proc: Proc(child),
            url,
        }
    }
}

/// Samples etcd quorum (a linearizable write within 1 s) every 50 ms until stopped.
pub struct QuorumSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl QuorumSampler {
    pub fn start(etcd: Arc<EtcdCluster>) -> QuorumSampler {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut samples, mut lost) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                samples += 1;
                if !etcd.has_quorum().await {
                    lost += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (samples, lost)
        });
        QuorumSampler { stop, task }
    }

    /// Stops sampling: `(samples, samples without quorum)`.
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap_or((0, 0))
    }
}

/// One pod per node labelled `app`, under a PodDisruptionBudget (`minAvailable` = all of
/// them) whose status the test sets, playing the disruption controller (no controller-manager
/// runs). Created with no disruption allowed; returns once the kubelets report the pods
/// Ready (an eviction of a Pending pod ignores budgets, as it should).
pub struct Budget {
    pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    app: String,
    generation: i64,
    pods: i32,
}

impl Budget {
    pub async fn create(client: &kube::Client, app: &str, nodes: &[String]) -> Budget {
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        for n in nodes {
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": format!("{app}-{n}"), "labels": { "app": app } },
                "spec": { "nodeName": n, "containers": [{ "name": app, "image": "nginx" }] },
            }))
            .expect("pod");
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("pod");
        }
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": { "name": app },
            "spec": { "minAvailable": nodes.len(), "selector": { "matchLabels": { "app": app } } },
        }))
        .expect("pdb");
        let created = pdbs
            .create(&PostParams::default(), &pdb)
            .await
            .expect("pdb");
        let b = Budget {
            pdbs,
            app: app.to_string(),
            generation: created.metadata.generation.unwrap_or(1),
            pods: nodes.len() as i32,
        };
        b.allow(0).await;
        for _ in 0..100 {
            let list = pods.list(&ListParams::default()).await.expect("pods");
            let ready = list
                .items
                .iter()
                .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get("app")) == Some(&b.app))
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count();
            if ready == nodes.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b
    }

    /// Sets the budget's status: `allowed` disruptions.
    pub async fn allow(&self, allowed: i32) {
        let status = json!({ "status": {
            "observedGeneration": self.generation, "disruptionsAllowed": allowed,
            "currentHealthy": self.pods, "desiredHealthy": self.pods - allowed,
            "expectedPods": self.pods,
        }});
        self.pdbs
            .patch_status(&self.app, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("pdb status");
    }
}
