//! The vcsim harness shared by the vSphere tests: each test starts its own simulator
//! (govmomi's `simulator.VPX()`, built from `tests/peers/vcsim/main.go`) and stops it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A running vcsim.
pub struct Vcsim {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// Its user.
    pub user: String,
    /// Its password.
    pub password: String,
    child: tokio::process::Child,
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/vcsim")
}

/// The vcsim binary: `SPECTRO_VCSIM`, or built once into `~/.cache/spectro-vcsim` from
/// Debian's golang-go + golang-github-vmware-govmomi-dev (GOPATH mode).
pub fn vcsim_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SPECTRO_VCSIM") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let dir = PathBuf::from(home).join(".cache/spectro-vcsim");
    let bin = dir.join("vcsim");
    let src = source_dir().join("main.go");
    let fresh = |b: &PathBuf| {
        let (Ok(b), Ok(s)) = (std::fs::metadata(b), std::fs::metadata(&src)) else {
            return false;
        };
        b.modified().ok() >= s.modified().ok()
    };
    if fresh(&bin) {
        return Some(bin);
    }
    if !std::path::Path::new("/usr/share/gocode/src/github.com/vmware/govmomi").exists() {
        return None;
    }
    std::fs::create_dir_all(&dir).ok()?;
    // Build into a temporary name, then rename: concurrent tests never run half a binary.
    let tmp = dir.join(format!("vcsim.{}", std::process::id()));
    let ok = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(source_dir())
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("gocache"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return None;
    }
    std::fs::rename(&tmp, &bin).ok()?;
    Some(bin)
}

/// Starts a vcsim with `args` (e.g. `-cluster 2 -pool 1`), or explains why the test skips.
pub async fn vcsim(args: &[&str]) -> Option<Vcsim> {
    let Some(bin) = vcsim_binary() else {
        assert!(
            std::env::var("SPECTRO_REQUIRE_TOOLS").is_err(),
            "vcsim is required: apt-get install golang-go golang-github-vmware-govmomi-dev"
        );
        eprintln!(
            "SKIPPED: vcsim unavailable (apt-get install golang-go golang-github-vmware-govmomi-dev)"
        );
        return None;
    };
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(if std::env::var("SPECTRO_VCSIM_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("start vcsim");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("vcsim printed its URL in time")
        .expect("read vcsim output")
        .expect("vcsim printed a URL");
    // https://user:pass@127.0.0.1:PORT/sdk
    let rest = url.trim_start_matches("https://");
    let (cred, hostpath) = rest.split_once('@').expect("credentials in the URL");
    let (user, password) = cred.split_once(':').expect("user:pass");
    let host = hostpath.trim_end_matches("/sdk").to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(Vcsim {
        host,
        user: user.into(),
        password: password.into(),
        child,
    })
}

impl Vcsim {
    /// The connection for [`spectro_vsphere::vim::VimVcenter::connect`].
    pub fn connection(&self) -> spectro_vsphere::vim::Connection {
        spectro_vsphere::vim::Connection {
            host: self.host.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            insecure: true,
        }
    }
}

use std::collections::BTreeMap;
use std::sync::Arc;

use spectro_core::model::document::Format;
use spectro_core::model::{parse_documents, Cluster, Document};
use spectro_core::{Engine, EngineConfig, SqliteStore};
use spectro_vsphere::api::{ObjRef, PowerState, Reconfigure, Vcenter, VmDetails};
use spectro_vsphere::vim::VimVcenter;

/// The gateway, IP pools, account and profile of the tests, for a vcsim at `host`.
pub fn documents(host: &str) -> String {
    format!(
        r#"
kind: PrivateCloudGateway
name: gw
size: 1
ipPools: [cp-pool, worker-pool]
---
kind: IpPool
name: cp-pool
gatewayName: gw
range: {{ start: 10.10.0.10, end: 10.10.0.20 }}
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
kind: CloudAccount
name: vc
credentials:
  vsphere: {{ gateway: gw, vcenterHost: '{host}', username: user, password: pass, insecure: true }}
---
kind: ClusterProfile
name: vs
version: '1'
cloud: vsphere
packs:
  - name: ubuntu
    layer: os
    version: '22.04'
    annotations: {{ image: DC0_C0_RP0_VM0, skipK8sInstall: 'true' }}
  - {{ name: kubernetes, layer: kubernetes, version: 1.30.4 }}
  - {{ name: calico, layer: cni, version: 3.28.0 }}
"#
    )
}

/// A static-IP cluster: 3 control-plane nodes in one domain, workers over two domains
/// (DC0_C0's root pool on "VM Network", DC0_C1's child pool on the distributed port group).
pub const STATIC_CLUSTER: &str = r#"
kind: Cluster
name: edge
profile: { name: vs, version: '1' }
cloudAccount: vc
cloud:
  vsphere: { datacenter: DC0, folder: vm, ipAllocation: static, ntpServers: [pool.ntp.org] }
nodePools:
  - name: master
    role: controlPlane
    size: 3
    cpu: 2
    memoryGb: 4
    diskSizeGb: 20
    placements: [{ computeCluster: DC0_C0, datastore: LocalDS_0, network: VM Network, ipPool: cp-pool }]
  - name: workers
    role: worker
    size: 3
    cpu: 2
    memoryGb: 8
    diskSizeGb: 40
    placements:
      - { computeCluster: DC0_C0, datastore: LocalDS_0, network: VM Network, ipPool: worker-pool }
      - { computeCluster: DC0_C1, resourcePool: DC0_C1_RP1, datastore: LocalDS_0, network: DC0_DVPG0, ipPool: worker-pool }
"#;

/// An engine on `store` with `provider`, loaded with [`documents`] (+ `extra` documents);
/// returns the clusters found in them.
pub async fn engine_with(
    store: Arc<SqliteStore>,
    provider: Arc<dyn spectro_core::CloudProvider>,
    sim: &Vcsim,
    extra: &str,
) -> (Engine, Vec<Cluster>) {
    let engine = Engine::builder(store)
        .provider(provider)
        .config(EngineConfig::for_emulators())
        .start()
        .await
        .unwrap();
    let text = format!("{}---{extra}", documents(&sim.host));
    let (docs, failures) = parse_documents(&text, Format::Yaml);
    assert!(failures.is_empty(), "{failures:?}");
    let mut clusters = Vec::new();
    for d in docs {
        match d {
            Document::PrivateCloudGateway(g) => {
                engine.put_gateway(&g).await.unwrap();
            }
            Document::IpPool(p) => {
                engine.put_ip_pool(&p).await.unwrap();
            }
            Document::CloudAccount(a) => {
                engine.put_cloud_account(&a).await.unwrap();
            }
            Document::ClusterProfile(p) => {
                engine.put_profile(&p).await.unwrap();
            }
            Document::Cluster(c) => clusters.push(c),
        }
    }
    (engine, clusters)
}

/// An inspector's own session on the simulator (not the provider's).
pub async fn inspector(sim: &Vcsim) -> VimVcenter {
    VimVcenter::connect(&sim.connection()).await.unwrap()
}

/// Every VM of the folder `DC0/vm` whose name starts with `prefix`, with its details.
pub async fn vms(vc: &VimVcenter, prefix: &str) -> BTreeMap<String, (ObjRef, VmDetails)> {
    let folder = vc.find_by_path("DC0/vm").await.unwrap().unwrap();
    let mut out = BTreeMap::new();
    for v in vc.list_vms(&[folder]).await.unwrap() {
        if v.name.starts_with(prefix) {
            // A VM deleted between the listing and this read is simply gone.
            if let Some(d) = vc.vm_details(&v.vm).await.unwrap() {
                out.insert(v.name.clone(), (v.vm, d));
            }
        }
    }
    out
}

/// Plays DHCP + VMware Tools: every powered-on VM of the folder without an address gets
/// one from 192.168.50.0/24 (vcsim's `SET.guest.ipAddress`).
pub fn guest_agent(sim: &Vcsim) -> tokio::task::JoinHandle<()> {
    let conn = sim.connection();
    tokio::spawn(async move {
        let vc = VimVcenter::connect(&conn).await.unwrap();
        let folder = vc.find_by_path("DC0/vm").await.unwrap().unwrap();
        let mut next = 10u8;
        loop {
            if let Ok(list) = vc.list_vms(std::slice::from_ref(&folder)).await {
                for v in list {
                    if v.power == PowerState::On && v.ip.is_none() && !v.name.starts_with("DC0_") {
                        let ip = format!("192.168.50.{next}");
                        next = next.wrapping_add(1);
                        let _ = vc
                            .reconfigure(
                                &v.vm,
                                &Reconfigure {
                                    extra_config: vec![("SET.guest.ipAddress".into(), ip)],
                                    ..Default::default()
                                },
                            )
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
