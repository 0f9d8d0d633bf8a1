//! spectro-core: the cloud-agnostic heart of spectro.
//!
//! - [`model`]: profiles, packs, clusters, node pools, IP pools, cloud accounts, gateways.
//! - [`validate`]: every rule, all violations at once, each with a field path.
//! - [`secret`]: values that never print.
//! - [`schema`]: JSON Schema of the spec documents.
#![warn(missing_docs)]

pub mod error;
pub mod model;
pub mod schema;
pub mod secret;
pub mod validate;

pub use error::{CoreError, Result};
