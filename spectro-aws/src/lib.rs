//! spectro's AWS building blocks: SDK clients per account and region (endpoint override,
//! API-attempt counter, extra headers), the crate's error type [`AwsError`] and its
//! classification for the engine's policy, AMI resolution and the account check. The
//! `CloudProvider` implementation (VPC per cluster, subnets, gateways, security groups,
//! bastion, ELB, batched instances) builds on these; see docs/moto-notes.md for the emulator
//! it is tested against.
//!
//! The building blocks return [`AwsError`] (typed, with the AWS error code and the SDK's
//! error as its source); [`AwsProvider`] converts to `ProviderError` at the `CloudProvider`
//! boundary, keeping the `AwsError` as the source.
//!
//! Feature `test-util`: fault injection for tests and chaos drills (`InjectThrottling`,
//! `InjectCrash`, `AwsConnector::with_injected_throttling` / `with_injected_crash`). The
//! crate's own tests enable it through a dev-dependency on itself; an application's tests
//! enable it with `spectro-aws = { ..., features = ["test-util"] }` in `[dev-dependencies]`.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod image;
pub mod machines;
pub mod network;
pub mod precheck;
pub mod provider;
mod registrations;
pub mod security;

pub use client::{AwsClients, AwsConnector, AwsLimits, CallCounter};
#[cfg(feature = "test-util")]
pub use client::{InjectCrash, InjectThrottling};
pub use error::{from_sdk, AwsError};
pub use image::{caller_account, image_name_pattern, resolve, resolve_image, ResolvedImage};
pub use provider::AwsProvider;

/// The cloud this crate provisions on.
pub const CLOUD: spectro_core::model::CloudType = spectro_core::model::CloudType::Aws;
