//! The error type of spectro-core.

use crate::validate::Violation;

/// Errors of the core: invalid input, missing objects, storage and provider failures.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The input broke one or more rules.
    #[error("invalid {kind}: {}", join(.violations))]
    Invalid {
        /// What was validated (e.g. `cluster demo`).
        kind: String,
        /// Every violation.
        violations: Vec<Violation>,
    },
    /// A named object does not exist.
    #[error("{kind} `{name}` not found")]
    NotFound {
        /// Object kind.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// An object with that name exists already.
    #[error("{kind} `{name}` already exists")]
    AlreadyExists {
        /// Object kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
