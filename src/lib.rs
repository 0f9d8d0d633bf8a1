//! spectro: embed a multi-cloud Kubernetes cluster lifecycle engine in any Rust service.
//!
//! This facade re-exports [`spectro_core`] and, behind the features `aws`, `azure`, `gcp`
//! and `vsphere`, the cloud providers.
#![warn(missing_docs)]

pub use spectro_core::*;

/// The AWS provider (feature `aws`).
#[cfg(feature = "aws")]
pub use spectro_aws as aws;
/// The Azure provider (feature `azure`).
#[cfg(feature = "azure")]
pub use spectro_azure as azure;
/// The GCP provider (feature `gcp`).
#[cfg(feature = "gcp")]
pub use spectro_gcp as gcp;
/// The vSphere provider (feature `vsphere`).
#[cfg(feature = "vsphere")]
pub use spectro_vsphere as vsphere;
