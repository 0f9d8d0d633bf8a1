//! spectro's gcp cloud provider (implements `spectro_core`'s `CloudProvider` once the engine lands).
#![warn(missing_docs)]

/// The cloud this crate provisions on.
pub const CLOUD: spectro_core::model::CloudType = spectro_core::model::CloudType::Gcp;
