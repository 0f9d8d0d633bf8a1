//! spectro's vSphere cloud provider: clusters on vCenter, cloned from templates, with
//! static IPs from spectro's IP pools or DHCP.
#![warn(missing_docs)]

pub mod api;
pub mod error;
pub mod guestinfo;
pub mod privileges;
pub mod provider;
pub mod vim;

pub use error::VsphereError;
pub use provider::{VsphereConfig, VsphereProvider};

/// The cloud this crate provisions on.
pub const CLOUD: spectro_core::model::CloudType = spectro_core::model::CloudType::Vsphere;
