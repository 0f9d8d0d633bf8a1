//! spectro-core: the cloud-agnostic heart of spectro.
//!
//! - [`model`]: profiles, packs, clusters, node pools, IP pools, cloud accounts, gateways.
//! - [`validate`]: every rule, all violations at once, each with a field path.
//! - [`secret`]: values that never print.
//! - [`schema`]: JSON Schema of the spec documents.
//! - [`bootstrap`]: cluster PKI, kubeadm configuration, cloud-init user data.
//! - [`ipam`]: IP address management for static-IP clusters.
//! - [`provider`]: the `CloudProvider` trait every cloud implements.
//! - [`contract`]: the provider contract written down: rules P1–P23 with MUST/SHOULD, what the
//!   engine does with each error variant, and the contract version.
//! - [`engine`]: the reconcile engine (pure planner, executor, keyed work queue).
//! - [`store`]: the `Store` trait and the embedded SQLite store.
//! - [`sim`]: the simulated cloud (latency, quotas, faults, API-call counters).
//! - `testing` (feature `test-util`): helpers for tests against real peers.
//! - `conformance` (feature `test-util`): the provider conformance kit that checks every rule
//!   of [`contract`] against a live provider.
#![warn(missing_docs)]

pub mod bootstrap;
pub mod clock;
#[cfg(feature = "test-util")]
pub mod conformance;
pub mod contract;
pub mod engine;
pub mod error;
pub mod ipam;
pub mod model;
pub mod provider;
pub mod schema;
pub mod secret;
pub mod sim;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod validate;

pub use engine::{Engine, EngineBuilder, EngineConfig};
pub use error::{CoreError, Result};
pub use provider::{CloudProvider, ClusterId};
pub use store::{PostgresStore, SqliteStore, Store};
