//! spectro: embed a multi-cloud Kubernetes cluster lifecycle engine in any Rust service.
//!
//! This facade re-exports [`spectro_core`] and, behind the features `aws`, `azure`, `gcp`
//! and `vsphere`, the cloud providers.
//!
//! An application builds an [`Engine`] on a [`Store`] and one [`CloudProvider`] per cloud,
//! writes desired state through it (profiles, accounts, clusters: parsed from YAML or built in
//! code, validated on the way in) and reads back status and events. On the embedded defaults,
//! an SQLite file and the simulated cloud ([`sim::SimCloud`]), end to end:
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use spectro::engine::status::Phase;
//! use spectro::model::document::{from_text, Format};
//! use spectro::model::{CloudAccount, CloudType, Cluster, ClusterProfile};
//! use spectro::sim::{SimCloud, SimConfig};
//! use spectro::{Engine, SqliteStore};
//!
//! const PROFILE: &str = r#"
//! name: base
//! version: 1.0.0
//! cloud: aws
//! packs:
//!   - { name: ubuntu, layer: os, version: "22.04" }
//!   - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
//!   - { name: calico, layer: cni, version: 3.28.0 }
//! "#;
//! const ACCOUNT: &str = r#"
//! name: aws-dev
//! credentials:
//!   aws: { accessKeyId: AKIAEXAMPLE000000000, secretAccessKey: not-used-by-the-simulator }
//! "#;
//! const CLUSTER: &str = r#"
//! name: demo
//! profile: { name: base, version: 1.0.0 }
//! cloudAccount: aws-dev
//! cloud: { aws: { region: us-east-1 } }
//! nodePools:
//!   - { name: cp, role: controlPlane, size: 3, instanceType: m5.large, availabilityZones: [us-east-1a, us-east-1b, us-east-1c] }
//!   - { name: workers, role: worker, size: 4, instanceType: m5.xlarge, availabilityZones: [us-east-1a, us-east-1b] }
//! "#;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//!     let store = Arc::new(SqliteStore::open("spectro.db")?);
//!     let cloud = Arc::new(SimCloud::new(CloudType::Aws, SimConfig::default()));
//!     let engine = Engine::builder(store).provider(cloud).start().await?;
//!
//!     let profile: ClusterProfile = from_text(PROFILE, Format::Yaml)?;
//!     let account: CloudAccount = from_text(ACCOUNT, Format::Yaml)?;
//!     let cluster: Cluster = from_text(CLUSTER, Format::Yaml)?;
//!     engine.put_profile(&profile).await?;
//!     engine.put_cloud_account(&account).await?;
//!     // Validated against the profile and the account (every violation at once).
//!     let id = engine.create_cluster(&cluster).await?;
//!
//!     let rec = engine.wait_for_phase(id, Phase::Running, Duration::from_secs(60)).await?;
//!     for c in &rec.status.conditions {
//!         println!("{}: {:?}", c.kind.label(), c.status);
//!     }
//!     engine.shutdown().await;
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

pub use spectro_core::*;

/// The cluster agent's endpoint (feature `monitoring`): where the agents the engine deploys
/// report heartbeats, node conditions, usage and services
/// ([`EngineBuilder::agent`](spectro_core::engine::EngineBuilder::agent)).
#[cfg(feature = "monitoring")]
pub use spectro_agent as agent;
/// The AWS provider (feature `aws`).
#[cfg(feature = "aws")]
pub use spectro_aws as aws;
/// The Azure provider (feature `azure`).
#[cfg(feature = "azure")]
pub use spectro_azure as azure;
/// The private cloud gateway (feature `gateway`): the engine's side (the remote provider that
/// forwards a gateway's clusters' calls to its agents, and the HTTPS endpoint the agents dial
/// out to); the agent itself is the `spectro-gateway-agent` binary of `spectro-gateway`.
#[cfg(feature = "gateway")]
pub use spectro_gateway as gateway;
/// The GCP provider (feature `gcp`).
#[cfg(feature = "gcp")]
pub use spectro_gcp as gcp;
/// The workload-cluster connection (feature `kubernetes`): kube-rs and etcd's v3 API, for
/// [`EngineBuilder::workload`](spectro_core::engine::EngineBuilder::workload).
#[cfg(feature = "kubernetes")]
pub use spectro_kube as kube;
/// The vSphere provider (feature `vsphere`).
#[cfg(feature = "vsphere")]
pub use spectro_vsphere as vsphere;

// The web dashboard (feature `dashboard`); its docs are the module's own (an outer doc here
// would make rustdoc resolve the module's links from the crate root).
#[cfg(feature = "dashboard")]
pub mod dashboard;
