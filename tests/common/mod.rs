//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use std::path::Path;

use std::sync::Arc;
use std::time::Duration;

use spectro::model::document::{from_text, Format};
use spectro::model::{CloudAccount, CloudType, Cluster, ClusterProfile};
use spectro::sim::{SimCloud, SimConfig};
use spectro::{Engine, EngineConfig, SqliteStore};

pub const PROFILE: &str = r#"
name: demo
version: 1.0.0
cloud: aws
packs:
  - { name: ubuntu, layer: os, version: "22.04" }
  - name: kubernetes
    layer: kubernetes
    version: 1.30.4
    values: |
      apiServer:
        extraArgs:
          audit-log-maxage: "30"
  - { name: calico, layer: cni, version: 3.28.0 }
"#;

pub const ACCOUNT: &str = r#"
name: sim
credentials:
  aws:
    accessKeyId: AKIAIOSFODNN7EXAMPLE
    secretAccessKey: super-secret-value-123
"#;

pub const CLUSTER: &str = r#"
name: demo
profile: { name: demo, version: 1.0.0 }
cloudAccount: sim
cloud:
  aws:
    region: us-east-1
nodePools:
  - name: master
    role: controlPlane
    size: 3
    instanceType: m5.large
    availabilityZones: [us-east-1a, us-east-1b, us-east-1c]
  - name: general
    role: worker
    size: 3
    instanceType: m5.xlarge
    availabilityZones: [us-east-1a, us-east-1b, us-east-1c]
  - name: batch
    role: worker
    size: 2
    instanceType: m5.large
    availabilityZones: [us-east-1a, us-east-1b]
"#;

pub fn profile() -> ClusterProfile {
    from_text(PROFILE, Format::Yaml).unwrap()
}

pub fn account() -> CloudAccount {
    from_text(ACCOUNT, Format::Yaml).unwrap()
}

pub fn cluster(name: &str) -> Cluster {
    let mut c: Cluster = from_text(CLUSTER, Format::Yaml).unwrap();
    c.name = name.to_string();
    c
}

pub fn sim(config: SimConfig) -> Arc<SimCloud> {
    Arc::new(SimCloud::new(CloudType::Aws, config))
}

pub async fn engine_on(
    store: Arc<SqliteStore>,
    sim: Arc<SimCloud>,
    config: EngineConfig,
) -> Engine {
    Engine::builder(store)
        .provider(sim)
        .config(config)
        .start()
        .await
        .unwrap()
}

/// An engine on a fresh SQLite file with the demo profile and account.
pub async fn setup(dir: &Path, sim: Arc<SimCloud>) -> (Engine, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(dir.join("spectro.db")).unwrap());
    let engine = engine_on(store.clone(), sim, EngineConfig::fast()).await;
    engine.put_profile(&profile()).await.unwrap();
    engine.put_cloud_account(&account()).await.unwrap();
    (engine, store)
}

pub mod pg;

pub const T: Duration = Duration::from_secs(30);
