//! The vcsim harness shared by the vSphere tests: each test starts its own simulator
//! (govmomi's `simulator.VPX()`, built from the Go module `tests/peers/vcsim` by
//! `scripts/vcsim`) and stops it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
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

/// The vcsim binary: `SPECTRO_VCSIM`, or built once by `scripts/vcsim --build-only` (the Go
/// module `tests/peers/vcsim`, govmomi pinned by its go.mod + go.sum; binary in
/// `~/.cache/spectro-vcsim`, Go caches in `~/.cache/spectro-go`). `None` when it cannot be
/// built (no Go, no module proxy); the build's output then went to stderr.
pub fn vcsim_binary() -> Option<PathBuf> {
    static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Ok(p) = std::env::var("SPECTRO_VCSIM") {
                return Some(PathBuf::from(p));
            }
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/vcsim");
            let out = std::process::Command::new("bash")
                .arg(script)
                .arg("--build-only")
                .stderr(Stdio::inherit())
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let path = String::from_utf8(out.stdout).ok()?;
            Some(PathBuf::from(path.trim()))
        })
        .clone()
}

/// Starts a vcsim with `args` (e.g. `-cluster 2 -pool 1`); `None` when vcsim cannot be built
/// and the user opted out of missing peers (otherwise the test fails).
pub async fn vcsim(args: &[&str]) -> Option<Vcsim> {
    let Some(bin) = vcsim_binary() else {
        spectro_core::testing::peer_missing(
            "vcsim",
            "install Go >= 1.25 (or Debian's golang-go) with access to the Go module proxy, \
             then scripts/vcsim --build-only; or set SPECTRO_VCSIM to a vcsim binary",
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
    annotations: {{ image: DC0_H0_VM0, skipK8sInstall: 'true' }}
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
    // The catalog (gateway, IP pools, account, profiles) is applied; the clusters are the
    // test's to create.
    let (clusters, catalog): (Vec<Document>, Vec<Document>) = docs
        .into_iter()
        .partition(|d| matches!(d, Document::Cluster(_)));
    engine.apply_all(&catalog).await.unwrap();
    let clusters = clusters
        .into_iter()
        .filter_map(|d| match d {
            Document::Cluster(c) => Some(c),
            _ => None,
        })
        .collect();
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
