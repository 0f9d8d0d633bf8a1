//! The records the store keeps and the engine and planner read: a cluster's stored record
//! and status ([`status`]), its milestone conditions ([`condition`]), its event stream
//! ([`event`]) and its recorded machine creates ([`intent`]).
//!
//! Plain data (serde + schemars), no I/O. This module is the bottom layer under `store`,
//! `engine::planner` and the engine, so none of them has to import another to share a type:
//! `store` never imports `engine`, the planner never imports `store` (checked by the
//! `layers` unit test in `lib.rs`). The old paths `engine::{condition, event, status}` and
//! `store::Intent` are re-exports of these.

pub mod condition;
pub mod event;
pub mod intent;
pub mod status;

pub use condition::{Condition, ConditionStatus, ConditionType};
pub use event::{Event, NewEvent, Severity};
pub use intent::Intent;
pub use status::{
    ClusterRecord, ClusterStatus, Lifecycle, MachineSummary, PendingProfileUpdate, Phase,
    PoolStatus, ResolvedImage,
};
