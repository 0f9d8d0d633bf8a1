//! spectro's Azure provider: [`AzureProvider`] implements `CloudProvider` on Azure Resource
//! Manager (Microsoft.Compute 2024-07-01, Microsoft.Network 2024-03-01) through a thin typed
//! ARM client ([`client`]): an Entra ID token from the account's client id and secret,
//! `api-version` on every request, long-running operations followed through
//! `Azure-AsyncOperation` / `Location`, 429 and `Retry-After` honoured, one request budget per
//! subscription shared by every cluster.
//!
//! Everything of a cluster lives in the cluster's existing resource group, named from the
//! cluster id ([`names`]) and tagged with it: public IPs, a public load balancer in front of
//! the API servers, a security group per subnet (per NIC with the user's own network), a NAT
//! gateway for outbound, a virtual network with a control-plane and a worker subnet
//! ([`network`]); one VM per machine whose NIC and OS disk are made and deleted with it
//! ([`machines`]). Images are marketplace URNs or image ids from the OS pack ([`image`]).
//!
//! The building blocks return [`AzureError`]; the provider converts it to `ProviderError`
//! at the `CloudProvider` boundary, keeping the `AzureError` as the source.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod image;
pub mod machines;
pub mod models;
pub mod names;
pub mod network;
pub mod provider;

pub use client::{AccessToken, Arm, AzureConnector, CallCounter, TokenSource};
pub use error::AzureError;
pub use provider::AzureProvider;

/// The cloud this crate provisions on.
pub const CLOUD: spectro_core::model::CloudType = spectro_core::model::CloudType::Azure;
