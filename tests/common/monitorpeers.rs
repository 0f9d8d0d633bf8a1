//! Peers of the monitoring tests: `metrics.k8s.io` served the way a real cluster serves it
//! (an aggregated API registered in the real kube-apiserver: APIService
//! `v1beta1.metrics.k8s.io` → Service `kube-system/metrics-server`, of type ExternalName
//! `localhost`, so the aggregator reaches this HTTPS server on loopback), with node usage
//! the test sets; the engine's agent endpoint on loopback HTTPS; the real `spectro-agent`
//! binary as a process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use serde_json::json;

/// A self-signed certificate for `localhost` / 127.0.0.1: (cert PEM, key PEM).
pub fn localhost_cert() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// Node usage served by the metrics API: node → (millicores, bytes).
pub type Usage = Arc<Mutex<BTreeMap<String, (u64, u64)>>>;

/// The metrics.k8s.io server.
pub struct MetricsApi {
    pub usage: Usage,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn discovery() -> serde_json::Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.k8s.io/v1beta1",
        "resources": [
            { "name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"] },
            { "name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"] },
        ]
    })
}

fn node_metrics(name: &str, cpu: u64, mem: u64) -> serde_json::Value {
    let now = spectro::clock::system_now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "metadata": { "name": name, "creationTimestamp": now },
        "timestamp": now, "window": "20s",
        "usage": { "cpu": format!("{cpu}m"), "memory": format!("{}Ki", mem / 1024) },
    })
}

fn respond(path: &str, usage: &Usage) -> (u16, serde_json::Value) {
    let u = usage.lock().unwrap().clone();
    match path.trim_end_matches('/') {
        "/apis/metrics.k8s.io/v1beta1" => (200, discovery()),
        "/apis/metrics.k8s.io/v1beta1/nodes" => (
            200,
            json!({
                "kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
                "items": u.iter().map(|(n, (c, m))| node_metrics(n, *c, *m)).collect::<Vec<_>>(),
            }),
        ),
        "/apis/metrics.k8s.io/v1beta1/pods" => (
            200,
            json!({ "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": [] }),
        ),
        p => match p.strip_prefix("/apis/metrics.k8s.io/v1beta1/nodes/") {
            Some(n) => match u.get(n) {
                Some((c, m)) => {
                    let mut v = node_metrics(n, *c, *m);
                    v["kind"] = json!("NodeMetrics");
                    v["apiVersion"] = json!("metrics.k8s.io/v1beta1");
                    (200, v)
                }
                None => (
                    404,
                    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404 }),
                ),
            },
            None => (
                404,
                json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404 }),
            ),
        },
    }
}

/// Serves HTTPS on a loopback port with `tls`, answering `handler(path)`.
pub async fn serve_https(
    tls: Arc<rustls::ServerConfig>,
    handler: impl Fn(&str) -> (u16, serde_json::Value) + Send + Sync + 'static,
) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, handler) = (acceptor.clone(), handler.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (status, body) = handler(req.uri().path());
                    let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
                    *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    res.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    async move { Ok::<_, std::convert::Infallible>(res) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, task)
}

impl MetricsApi {
    /// Starts the server and registers it in the apiserver; returns once `kubectl get
    /// --raw /apis/metrics.k8s.io/v1beta1/nodes` answers through the aggregator.
    pub async fn start(api: &super::kubepeers::ApiServer) -> MetricsApi {
        let (cert, key) = localhost_cert();
        let tls = spectro_agent::endpoint::tls_config(&cert, &key).expect("tls");
        let usage: Usage = Arc::default();
        let u = usage.clone();
        let (port, task) = serve_https(tls, move |p| respond(p, &u)).await;
        let manifest = format!(
            r#"apiVersion: v1
kind: Service
metadata: {{ name: metrics-server, namespace: kube-system }}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{{ name: https, port: {port}, protocol: TCP }}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{ name: v1beta1.metrics.k8s.io }}
spec:
  service: {{ name: metrics-server, namespace: kube-system, port: {port} }}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
"#
        );
        let path = api.dir.path().join("metrics-api.yaml");
        std::fs::write(&path, manifest).expect("manifest");
        let out = api.kubectl(&["apply", "-f", &path.to_string_lossy()]);
        assert!(
            out.contains("created") || out.contains("configured") || out.contains("unchanged"),
            "{out}"
        );
        for _ in 0..240 {
            let out = api.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]);
            if out.contains("NodeMetricsList") {
                return MetricsApi { usage, task };
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "metrics.k8s.io not served through the aggregator: {}",
            api.kubectl(&["get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "yaml"])
        );
    }

    pub fn set(&self, node: &str, millicores: u64, bytes: u64) {
        self.usage
            .lock()
            .unwrap()
            .insert(node.to_string(), (millicores, bytes));
    }
}

/// The `spectro-agent` binary built next to this test (scripts/test builds it:
/// `cargo build -p spectro-agent --bin spectro-agent`).
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SPECTRO_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    for dir in exe.ancestors().skip(1).take(3) {
        let p = dir.join("spectro-agent");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the spectro-agent binary is not built next to {} (run `cargo build -p spectro-agent --bin spectro-agent`, as scripts/test does, or set SPECTRO_AGENT_BIN)",
        exe.display()
    );
}

/// The agent as a process (killed when dropped).
pub struct AgentProcess(pub Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl AgentProcess {
    /// Starts the agent against the apiserver of `kubeconfig`, reporting to `endpoint`.
    pub fn start(
        kubeconfig: &std::path::Path,
        endpoint: &str,
        cluster: &str,
        token: &str,
        ca_file: &std::path::Path,
        interval_secs: u64,
        log: &std::path::Path,
    ) -> AgentProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("agent log");
        AgentProcess(
            Command::new(agent_bin())
                .env("KUBECONFIG", kubeconfig)
                .env("SPECTRO_ENDPOINT", endpoint)
                .env("SPECTRO_CLUSTER_ID", cluster)
                .env("SPECTRO_TOKEN", token)
                .env("SPECTRO_CA_FILE", ca_file)
                .env("SPECTRO_INTERVAL_SECS", interval_secs.to_string())
                .env("SPECTRO_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spectro-agent starts"),
        )
    }
}

/// A monitored cluster on the real apiserver: the engine (simulated cloud, workload
/// connection, agent deployment to its loopback HTTPS endpoint), metrics.k8s.io, kwok-like
/// kubelets, the cluster Running with its agent pack applied.
pub struct MonitorRig {
    pub api: super::kubepeers::ApiServer,
    pub metrics: MetricsApi,
    pub client: kube::Client,
    pub sim: Arc<spectro::sim::SimCloud>,
    pub engine: spectro::Engine,
    pub id: spectro::provider::ClusterId,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub ca_file: PathBuf,
    pub agent_log: PathBuf,
    pub kubeconfig: PathBuf,
    /// The endpoint's TLS configuration (to serve it on another port too).
    pub tls: Arc<rustls::ServerConfig>,
    _kubelets: super::kubepeers::Kubelets,
}

/// Waits up to 90 s for the cluster's health to satisfy `pred`.
pub async fn wait_health(
    engine: &spectro::Engine,
    id: spectro::provider::ClusterId,
    what: &str,
    pred: impl Fn(&spectro::monitoring::Health) -> bool,
) -> Result<spectro::monitoring::Health, String> {
    let deadline = spectro::clock::instant_now() + Duration::from_secs(90);
    loop {
        let h = engine.health(id).await.map_err(|e| e.to_string())?;
        if pred(&h) {
            return Ok(h);
        }
        if spectro::clock::instant_now() >= deadline {
            return Err(format!("{what}: health stayed {h:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl MonitorRig {
    pub async fn start(
        profile: &spectro::model::ClusterProfile,
        account: &spectro::model::CloudAccount,
        spec: &spectro::model::Cluster,
        monitoring: spectro::engine::MonitoringConfig,
        interval: Duration,
    ) -> MonitorRig {
        use spectro::engine::AgentSettings;
        use spectro::monitoring::agent_pack::AgentDeployment;
        use spectro::monitoring::credential::AgentKey;
        let api = super::kubepeers::ApiServer::start().await;
        let metrics = MetricsApi::start(&api).await;
        let client = api.client().await;
        let sim = Arc::new(spectro::sim::SimCloud::new(
            spectro::model::CloudType::Aws,
            spectro::sim::SimConfig::default(),
        ));
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Arc::new(spectro::SqliteStore::open(dir.path().join("spectro.db")).expect("store"));
        // The endpoint needs the engine, the engine's agent deployment the endpoint's URL:
        // bind first, then start the engine with the URL.
        let (cert, key) = localhost_cert();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().expect("addr").port()
        );
        let mut deployment = AgentDeployment::new(url.clone());
        deployment.ca_pem = Some(cert.clone());
        deployment.interval = interval;
        let engine = spectro::Engine::builder(store)
            .provider(sim.clone())
            .workload(Arc::new(super::kubepeers::connector(&api, None)))
            .agent(AgentSettings {
                key: AgentKey::random(),
                deployment: Some(deployment),
            })
            .config(spectro::EngineConfig {
                poll_interval: Duration::from_millis(100),
                backoff_base: Duration::from_millis(50),
                backoff_cap: Duration::from_secs(1),
                monitoring,
                ..spectro::EngineConfig::fast()
            })
            .start()
            .await
            .expect("engine");
        let tls = spectro_agent::endpoint::tls_config(&cert, &key).expect("tls");
        tokio::spawn(
            spectro_agent::endpoint::AgentEndpoint::new(engine.clone())
                .serve(listener, tls.clone()),
        );
        engine.put_profile(profile).await.expect("profile");
        engine.put_cloud_account(account).await.expect("account");
        let id = engine.create_cluster(spec).await.expect("cluster");
        let kubelets = super::kubepeers::Kubelets::spawn(client.clone(), sim.clone(), id, None);
        engine
            .wait_for_phase(
                id,
                spectro::engine::status::Phase::Running,
                Duration::from_secs(90),
            )
            .await
            .expect("running");
        engine
            .wait_for(id, Duration::from_secs(90), |r| {
                r.status.packs.contains_key("spectro-agent")
            })
            .await
            .expect("agent pack applied");
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, &cert).expect("ca");
        let kubeconfig = agent_kubeconfig(&api);
        MonitorRig {
            agent_log: dir.path().join("agent.log"),
            api,
            metrics,
            client,
            sim,
            engine,
            id,
            dir,
            url,
            ca_file,
            kubeconfig,
            tls,
            _kubelets: kubelets,
        }
    }

    /// Starts the agent as a process, reporting every second.
    pub fn start_agent(&self) -> AgentProcess {
        let token = self.engine.agent_token(self.id).expect("agent token");
        AgentProcess::start(
            &self.kubeconfig,
            &self.url,
            &self.id.to_string(),
            token.expose(),
            &self.ca_file,
            1,
            &self.agent_log,
        )
    }

    /// Running machines of a role, sorted.
    pub fn machines(&self, role: spectro::model::PoolRole) -> Vec<spectro::provider::Machine> {
        let mut v: Vec<_> = self
            .sim
            .machines(self.id)
            .into_iter()
            .map(|i| i.machine)
            .filter(|m| m.state == spectro::provider::MachineState::Running && m.role == role)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Sets a Node condition as the kubelet would.
    pub async fn set_condition(&self, node: &str, kind: &str, status: &str) {
        let now = spectro::clock::system_now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = json!({ "status": { "conditions": [{
            "type": kind, "status": status, "reason": format!("Kubelet{kind}{status}"),
            "message": format!("{kind} is {status}"), "lastHeartbeatTime": now, "lastTransitionTime": now,
        }]}});
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(self.client.clone());
        nodes
            .patch_status(
                node,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(patch),
            )
            .await
            .expect("node condition");
    }

    /// Creates a Service of `kind` with port 80 in `default`.
    pub async fn create_service(&self, name: &str, kind: &str) {
        let svcs: kube::Api<k8s_openapi::api::core::v1::Service> =
            kube::Api::namespaced(self.client.clone(), "default");
        let s = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "type": kind, "selector": { "app": name }, "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }] },
        }))
        .expect("service");
        svcs.create(&kube::api::PostParams::default(), &s)
            .await
            .expect("service");
    }
}

/// A kubeconfig for the agent's service account (a token from the TokenRequest API, as a
/// pod's projected token): the agent gets exactly the agent pack's RBAC.
pub fn agent_kubeconfig(api: &super::kubepeers::ApiServer) -> PathBuf {
    let token = api.kubectl(&[
        "create",
        "token",
        "spectro-agent",
        "-n",
        "spectro-system",
        "--duration",
        "1h",
    ]);
    let token = token.trim();
    assert!(
        !token.is_empty() && !token.contains(' '),
        "token request: {token}"
    );
    let server = api
        .kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server");
    let kc = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: agent\ncurrent-context: c\n"
    );
    let path = api.dir.path().join("agent.kubeconfig");
    std::fs::write(&path, kc).expect("agent kubeconfig");
    path
}
