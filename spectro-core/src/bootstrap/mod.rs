//! Node bootstrap: the cluster PKI, kubeadm configuration and cloud-init user data that turn
//! the machines a provider creates into a Kubernetes cluster. Cloud-agnostic: providers get
//! the rendered bytes in [`crate::provider::MachineBatch::user_data`].
//!
//! ```
//! use spectro_core::bootstrap::{user_data, ClusterPki, NodeBootstrap};
//! use spectro_core::model::document::{from_text, Format};
//! use spectro_core::model::{Cluster, ClusterProfile};
//! use spectro_core::provider::BootstrapRole;
//!
//! let profile: ClusterProfile = from_text(
//!     r#"
//! name: base
//! version: 1.0.0
//! cloud: aws
//! packs:
//!   - { name: ubuntu, layer: os, version: "22.04" }
//!   - { name: kubernetes, layer: kubernetes, version: 1.30.4 }
//!   - { name: calico, layer: cni, version: 3.28.0 }
//! "#,
//!     Format::Yaml,
//! )?;
//! let cluster: Cluster = from_text(
//!     r#"
//! name: demo
//! profile: { name: base, version: 1.0.0 }
//! cloudAccount: aws-dev
//! cloud: { aws: { region: us-east-1 } }
//! nodePools:
//!   - { name: cp, role: controlPlane, size: 1, allowWorkerCapability: true, instanceType: m5.large, availabilityZones: [us-east-1a] }
//! "#,
//!     Format::Yaml,
//! )?;
//! // Once per cluster (the engine stores it with every key a `Secret`).
//! let pki = ClusterPki::generate()?;
//! let init = user_data(&NodeBootstrap {
//!     cluster: &cluster,
//!     profile: &profile,
//!     pki: &pki,
//!     endpoint: "demo-api.example:6443",
//!     role: BootstrapRole::Init,
//! })?;
//! assert!(init.starts_with("#cloud-config") && init.contains("kind: InitConfiguration"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cloud_init;
pub mod kube_vip;
pub mod kubeadm;
pub mod manifests;
pub mod pki;

pub use cloud_init::{
    encode_user_data, proxy_cloud_config, ssh_keys, user_data, user_data_with_vip, NodeBootstrap,
    ProxyCloudConfig,
};
pub use kube_vip::KubeVip;
pub use kubeadm::{KubeadmApi, KubernetesSettings};
pub use pki::{CertKey, ClusterPki};
