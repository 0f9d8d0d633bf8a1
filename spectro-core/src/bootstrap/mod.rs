//! Node bootstrap: the cluster PKI, kubeadm configuration and cloud-init user data that turn
//! the machines a provider creates into a Kubernetes cluster. Cloud-agnostic: providers get
//! the rendered bytes in [`crate::provider::MachineBatch::user_data`].

pub mod cloud_init;
pub mod kube_vip;
pub mod kubeadm;
pub mod pki;

pub use cloud_init::{
    encode_user_data, proxy_cloud_config, ssh_keys, user_data, user_data_with_vip, NodeBootstrap,
    ProxyCloudConfig,
};
pub use kube_vip::KubeVip;
pub use kubeadm::{KubeadmApi, KubernetesSettings};
pub use pki::{CertKey, ClusterPki};
