//! Peers of the gateway tests: vcsim (the vSphere tests' harness), tinyproxy from Debian as
//! the only way from the agents to the engine, the engine with its gateway endpoint on
//! loopback HTTPS, and the real `spectro-gateway-agent` binary as processes.
//!
//! Addresses: vcsim on 127.0.0.1 (the agents reach it directly: NO_PROXY); the engine's
//! gateway endpoint on 127.0.0.3, accepting connections only from 127.0.0.2, the address
//! tinyproxy connects out from (`Bind`): an agent that bypassed the proxy is refused.
#![allow(dead_code)]

#[path = "../../../spectro-vsphere/tests/common/mod.rs"]
pub mod vs;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;

use vs::{inspector, vms};

use spectro_core::model::{parse_documents, CloudType, Cluster, Document, Format, GatewayState};
use spectro_core::{Engine, EngineConfig, SqliteStore};
use spectro_gateway::endpoint::{tls_config, GatewayEndpoint};
use spectro_gateway::hub::{GatewayHub, HubConfig};

/// The loopback address the endpoint listens on.
pub const ENGINE_ADDR: &str = "127.0.0.3";
/// The loopback address tinyproxy connects out from.
pub const PROXY_EGRESS: &str = "127.0.0.2";
/// The proxy's user and password.
pub const PROXY_USER: &str = "spectro";
/// The proxy's password.
pub const PROXY_PASSWORD: &str = "pr0xy-s3cret";

/// tinyproxy (Debian's), with basic auth, logging every CONNECT.
pub struct Tinyproxy {
    pub port: u16,
    pub log: PathBuf,
    child: tokio::process::Child,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Tinyproxy {
    /// `http://user:pass@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!(
            "http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// The CONNECT requests it logged.
    pub fn connects(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Request") && l.contains("CONNECT "))
            .map(str::to_string)
            .collect()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts tinyproxy in `dir` (fails the test when Debian's tinyproxy is missing, unless the
/// user opted out of missing peers).
pub async fn tinyproxy(dir: &Path) -> Option<Tinyproxy> {
    let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(bin) = bin else {
        spectro_core::testing::peer_missing("tinyproxy", "apt-get install tinyproxy");
        return None;
    };
    let port = free_port();
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nBind {PROXY_EGRESS}\nTimeout 600\nLogFile \"{}\"\n\
             LogLevel Connect\nMaxClients 200\nBasicAuth {PROXY_USER} {PROXY_PASSWORD}\n\
             DisableViaHeader Yes\n",
            log.display()
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tinyproxy");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(Tinyproxy { port, log, child });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tinyproxy did not listen on {port}");
}

/// The engine, its hub and its gateway endpoint.
pub struct Control {
    pub engine: Engine,
    pub hub: GatewayHub,
    pub endpoint: GatewayEndpoint,
    /// `https://127.0.0.3:PORT`.
    pub url: String,
    /// The CA file the agents trust (the endpoint's self-signed certificate).
    pub ca: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an engine on SQLite whose only vSphere provider is the gateway hub's remote
/// provider, and its endpoint on 127.0.0.3 accepting only the proxy's egress address.
pub async fn control(dir: &Path, hub_config: HubConfig, config: EngineConfig) -> Control {
    let store = Arc::new(SqliteStore::open(dir.join("engine.db")).unwrap());
    let hub = GatewayHub::new(hub_config);
    let engine = Engine::builder(store)
        .provider(hub.provider(CloudType::Vsphere))
        .config(config)
        .start()
        .await
        .unwrap();
    let ck = rcgen::generate_simple_self_signed(vec![ENGINE_ADDR.into()]).expect("certificate");
    let ca = dir.join("engine-ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let tls = tls_config(&ck.cert.pem(), &ck.signing_key.serialize_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind((ENGINE_ADDR, 0))
        .await
        .unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let egress: IpAddr = PROXY_EGRESS.parse().unwrap();
    let endpoint = GatewayEndpoint::new(hub.clone(), engine.clone()).allow_only(vec![egress]);
    let serving = endpoint.clone();
    let task = tokio::spawn(async move {
        let _ = serving.serve(listener, tls).await;
    });
    Control {
        engine,
        hub,
        endpoint,
        url,
        ca,
        task,
    }
}

/// One agent process.
pub struct AgentProcess {
    pub replica: String,
    pub state_dir: PathBuf,
    pub child: tokio::process::Child,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl AgentProcess {
    /// SIGKILL.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// How to start an agent.
pub struct AgentSpec<'a> {
    pub control: &'a Control,
    pub sim: &'a vs::Vcsim,
    pub gateway: &'a str,
    pub replica: &'a str,
    pub state_dir: PathBuf,
    pub code: Option<String>,
    /// `HTTPS_PROXY` (None: no proxy: the direct route the endpoint refuses).
    pub proxy: Option<String>,
    /// Report this version (an older release).
    pub version: Option<&'a str>,
}

/// Starts `spectro-gateway-agent`.
pub fn start_agent(spec: AgentSpec<'_>) -> AgentProcess {
    std::fs::create_dir_all(&spec.state_dir).unwrap();
    // The agent binary in the gateway crate's tests; elsewhere (the demo) the running program
    // is asked to act as one (`<program> agent ...`).
    let mut cmd = match option_env!("CARGO_BIN_EXE_spectro-gateway-agent") {
        Some(bin) => tokio::process::Command::new(bin),
        None => {
            let mut c = tokio::process::Command::new(std::env::current_exe().unwrap());
            c.arg("agent");
            c
        }
    };
    cmd.arg("--endpoint")
        .arg(&spec.control.url)
        .arg("--gateway")
        .arg(spec.gateway)
        .arg("--replica")
        .arg(spec.replica)
        .arg("--state-dir")
        .arg(&spec.state_dir)
        .arg("--ca")
        .arg(&spec.control.ca)
        .arg("--vcenter")
        .arg(&spec.sim.host)
        .arg("--vcenter-user")
        .arg(&spec.sim.user)
        .arg("--vcenter-insecure")
        .arg("true")
        .env("VCENTER_PASSWORD", &spec.sim.password)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env(
            "SPECTRO_LOG",
            std::env::var("SPECTRO_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(if std::env::var("SPECTRO_GATEWAY_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    if let Some(code) = &spec.code {
        cmd.env("SPECTRO_GATEWAY_PAIRING_CODE", code);
    }
    if let Some(p) = &spec.proxy {
        cmd.env("HTTPS_PROXY", p);
    }
    if let Some(v) = spec.version {
        cmd.env("SPECTRO_GATEWAY_AGENT_VERSION", v);
    }
    let child = cmd.spawn().expect("start spectro-gateway-agent");
    AgentProcess {
        replica: spec.replica.to_string(),
        state_dir: spec.state_dir,
        child,
    }
}

/// Waits until `f` holds, polling every 100 ms; an error naming `what` after `timeout`.
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = spectro_core::clock::instant_now() + timeout;
    while !f().await {
        if spectro_core::clock::instant_now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The gateway (proxy settings for the nodes), its IP pools and the profile; clusters on the
/// account pairing creates (`gw-default`).
pub fn catalog() -> String {
    r#"
kind: PrivateCloudGateway
name: gw
size: 1
ipPools: [cp-pool, worker-pool]
proxy: { httpProxy: 'http://10.10.9.9:3128', httpsProxy: 'http://10.10.9.9:3128', noProxy: [.corp.internal] }
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
subnet: 10.10.1.0/27
prefix: 24
gateway: 10.10.1.1
---
kind: ClusterProfile
name: vs
version: '1'
cloud: vsphere
packs:
  - name: ubuntu
    layer: os
    version: '22.04'
    annotations: { image: DC0_H0_VM0, skipK8sInstall: 'true' }
  - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
  - { name: calico, layer: cni, version: 3.28.0 }
"#
    .to_string()
}

pub fn cluster(name: &str, workers: u32) -> Cluster {
    let text = format!(
        r#"
kind: Cluster
name: {name}
profile: {{ name: vs, version: '1' }}
cloudAccount: gw-default
cloud:
  vsphere: {{ datacenter: DC0, folder: vm, ipAllocation: static }}
nodePools:
  - name: master
    role: controlPlane
    size: 1
    cpu: 2
    memoryGb: 4
    diskSizeGb: 20
    placements: [{{ computeCluster: DC0_C0, datastore: LocalDS_0, network: VM Network, ipPool: cp-pool }}]
  - name: workers
    role: worker
    size: {workers}
    cpu: 2
    memoryGb: 4
    diskSizeGb: 20
    placements: [{{ computeCluster: DC0_C0, datastore: LocalDS_0, network: VM Network, ipPool: worker-pool }}]
"#
    );
    let (docs, failures) = parse_documents(&text, Format::Yaml);
    assert!(failures.is_empty(), "{failures:?}");
    match docs.into_iter().next() {
        Some(Document::Cluster(c)) => c,
        other => panic!("not a cluster: {other:?}"),
    }
}

pub async fn load_catalog(engine: &spectro_core::Engine) {
    let (docs, failures) = parse_documents(&catalog(), Format::Yaml);
    assert!(failures.is_empty(), "{failures:?}");
    engine.apply_all(&docs).await.unwrap();
}

/// The engine's settings of the tests and the demo: emulator pacing, a 10 s replica TTL.
pub fn demo_config() -> EngineConfig {
    let mut c = EngineConfig::for_emulators();
    c.gateways.replica_ttl = Duration::from_secs(10);
    c
}

pub async fn state(engine: &spectro_core::Engine) -> GatewayState {
    engine.gateway_status("gw").await.unwrap().1.state
}

/// Every address handed out once, every VM name once, each VM's user data carrying the
/// gateway's proxy with vCenter and the node networks in NO_PROXY.
pub async fn check_vcenter(sim: &vs::Vcsim, prefix: &str, expect: usize) {
    let vc = inspector(sim).await;
    let all = vms(&vc, prefix).await;
    assert_eq!(all.len(), expect, "{prefix}: {:?}", all.keys());
    let mut addresses = BTreeSet::new();
    let vcenter_host = sim.host.split(':').next().unwrap().to_string();
    for (name, (_, d)) in &all {
        let meta = d
            .extra_config
            .get("guestinfo.metadata")
            .cloned()
            .unwrap_or_default();
        let meta = decode_guestinfo(&meta);
        let addr = meta
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("- ")
                    .filter(|a| a.starts_with("10.10."))
            })
            .unwrap_or_else(|| panic!("{name}: no address in {meta}"))
            .to_string();
        assert!(addresses.insert(addr.clone()), "{addr} handed out twice");
        let ud = decode_guestinfo(
            d.extra_config
                .get("guestinfo.userdata")
                .map(String::as_str)
                .unwrap_or(""),
        );
        assert!(
            ud.contains("HTTPS_PROXY=http://10.10.9.9:3128"),
            "{name}: no proxy"
        );
        let no_proxy = ud
            .lines()
            .find(|l| l.contains("NO_PROXY="))
            .unwrap_or_else(|| panic!("{name}: no NO_PROXY"));
        for needed in [
            vcenter_host.as_str(),
            "10.10.0.0/24",
            "10.10.1.0/24",
            ".corp.internal",
        ] {
            assert!(
                no_proxy.contains(needed),
                "{name}: {needed} not in {no_proxy}"
            );
        }
    }
    vc.close().await;
}

pub fn decode_guestinfo(v: &str) -> String {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .unwrap_or_else(|_| v.as_bytes().to_vec());
    if raw.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read as _;
        let mut out = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        String::from_utf8_lossy(&raw).into_owned()
    }
}
