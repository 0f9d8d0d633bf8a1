//! spectro-core: the cloud-agnostic heart of spectro.
//!
//! - [`model`]: profiles, packs, clusters, node pools, IP pools, cloud accounts, gateways.
//! - [`validate`]: every rule, all violations at once, each with a field path.
//! - [`secret`]: values that never print.
//! - [`schema`]: JSON Schema of the spec documents.
//! - [`bootstrap`]: cluster PKI, kubeadm configuration, cloud-init user data.
//! - [`ipam`]: IP address management for static-IP clusters.
//! - [`provider`]: the `CloudProvider` trait every cloud implements.
//! - [`budget`]: request budgets: one rate limit per cloud account and region, shared by
//!   every cluster, fair between them.
//! - [`contract`]: the provider contract written down: rules P1–P24 with MUST/SHOULD, what the
//!   engine does with each error variant, and the contract version; `conformance` (feature
//!   `test-util`) checks a provider against it.
//! - [`records`]: what the store keeps and the engine reads (cluster record, status,
//!   conditions, events, intents).
//! - `engine` (feature `engine`): the reconcile engine (pure planner, executor, keyed work
//!   queue).
//! - [`store`]: the `Store` trait; `SqliteStore` (feature `sqlite`) and `PostgresStore`
//!   (feature `postgres`, TLS through rustls).
//! - [`sim`]: the simulated cloud (latency, quotas, faults, API-call counters).
//! - `testing` (feature `test-util`): helpers for tests against real peers.
//!
//! # Features
//! | feature | default | brings |
//! | --- | --- | --- |
//! | `engine` | yes | the reconcile engine; generates cluster PKIs (rcgen, ring) |
//! | `sqlite` | yes | `SqliteStore` (rusqlite, bundled C SQLite) |
//! | `postgres` | yes | `PostgresStore` (tokio-postgres, deadpool-postgres, rustls, ring) |
//! | `test-util` | no | helpers for tests against real peers |
//!
//! With `default-features = false` the crate is model, validation, schema, provider
//! contract, store trait, records, IPAM, bootstrap rendering and the simulated cloud: an
//! application that only validates specs compiles no C SQLite, no PostgreSQL client and no
//! ring. `engine` alone runs the engine on a `Store` the application supplies.
#![warn(missing_docs)]

pub mod bootstrap;
pub mod budget;
pub mod clock;
#[cfg(feature = "test-util")]
pub mod conformance;
pub mod contract;
#[cfg(feature = "engine")]
pub mod engine;
pub mod error;
pub mod ipam;
pub mod model;
pub mod monitoring;
pub mod precheck;
pub mod provider;
pub mod records;
pub mod schema;
pub mod secret;
pub mod sim;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod validate;
pub mod workload;

#[cfg(feature = "engine")]
pub use engine::{Engine, EngineBuilder, EngineConfig};
pub use error::{CoreError, Result};
pub use provider::{CloudProvider, ClusterId};
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::Store;
#[cfg(feature = "postgres")]
pub use store::{PostgresStore, TlsOptions};

#[cfg(test)]
mod layers;
