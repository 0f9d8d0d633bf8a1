//! spectro's AWS building blocks: SDK clients per account and region (endpoint override,
//! API-attempt counter, extra headers), error classification for the engine's policy,
//! AMI resolution and the account check. The `CloudProvider` implementation (VPC per
//! cluster, subnets, gateways, security groups, bastion, ELB, batched instances) builds on
//! these; see docs/moto-notes.md for the emulator it is tested against.
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod image;
pub mod machines;
pub mod network;
pub mod provider;
pub mod security;

pub use client::{AwsClients, AwsConnector, CallCounter, InjectCrash, InjectThrottling};
pub use error::{classify, from_sdk};
pub use image::{caller_account, image_name_pattern, resolve, resolve_image, ResolvedImage};
pub use provider::AwsProvider;

/// The cloud this crate provisions on.
pub const CLOUD: spectro_core::model::CloudType = spectro_core::model::CloudType::Aws;
