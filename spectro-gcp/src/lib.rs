//! spectro's GCP provider: [`GcpProvider`] implements `CloudProvider` on Compute Engine
//! through `google-cloud-compute-v1` ([`client`]): the account's service-account key, one
//! request budget per project shared by every cluster, every request counted, operations
//! waited for (zonal, regional, global), a `requestId` on every insert.
//!
//! A cluster gets a VPC network with one subnetwork in its region shared by every zone, a
//! Cloud Router with Cloud NAT, firewall rules, and a global TCP proxy load balancer in
//! front of the API servers ([`network`]); machines are instances without external
//! addresses, created per pool × zone with one `bulkInsert` and observed for every cluster
//! of a project with one `aggregatedList` ([`machines`]). Images are ready images or image
//! families from the OS pack ([`image`]). Names are derived from the cluster id, labels
//! carry ownership ([`names`]).
//!
//! The building blocks return [`GcpError`]; the provider converts it to `ProviderError` at
//! the `CloudProvider` boundary, keeping the `GcpError` as the source.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod image;
pub mod machines;
pub mod names;
pub mod network;
pub mod provider;

pub use client::{CallCounter, Gce, GcpConnector};
pub use error::GcpError;
pub use provider::GcpProvider;

/// The cloud this crate provisions on.
pub const CLOUD: spectro_core::model::CloudType = spectro_core::model::CloudType::Gcp;
