//! spectro's private cloud gateway (the reference doc's VMware section): the engine never
//! talks to vCenter; a gateway agent running next to it does, dialing out to the engine,
//! through an HTTP(S) proxy when one is set.
//!
//! - [`agent`] (feature `agent`, binary `spectro-gateway-agent`): pairs with a gateway using
//!   the one-time pairing code, keeps the credential it receives, and runs the vSphere
//!   provider for the engine's calls.
//! - [`hub`] and [`endpoint`] (feature `endpoint`): the engine's side. [`hub::RemoteProvider`]
//!   is the engine's `CloudProvider` for vSphere: every call of a gateway's clusters goes to
//!   one of its connected replicas; [`endpoint::GatewayEndpoint`] is the HTTPS server the
//!   agents connect to.
//! - [`wire`]: the protocol between them.
#![warn(missing_docs)]

pub mod wire;

#[cfg(feature = "endpoint")]
pub mod endpoint;
#[cfg(feature = "endpoint")]
pub mod hub;

#[cfg(feature = "agent")]
pub mod agent;

/// The agent version this build ships (the release the engine's hub offers).
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
