//! The error type of spectro-core.

use crate::provider::ProviderError;
use crate::validate::Violation;

/// Errors of the core: invalid input, missing objects, wrong state, storage, cloud.
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
    /// Someone else changed the object since it was read: read it again and retry.
    #[error(
        "{kind} `{name}` was changed concurrently (expected revision {expected}, found {found})"
    )]
    Conflict {
        /// Object kind.
        kind: &'static str,
        /// Its name or id.
        name: String,
        /// The revision the writer expected.
        expected: u64,
        /// The stored revision.
        found: u64,
    },
    /// A catalog object cannot be deleted while clusters (or other objects) use it.
    #[error("{kind} `{name}` is in use by {}: delete or move them first", .users.join(", "))]
    InUse {
        /// Object kind.
        kind: &'static str,
        /// Its name.
        name: String,
        /// What uses it, e.g. `cluster prod-1`, `cloud account vc-lab`.
        users: Vec<String>,
    },
    /// Every address of an IP pool is in use.
    #[error("IP pool `{pool}` is exhausted: all {size} addresses are in use")]
    PoolExhausted {
        /// Pool name.
        pool: String,
        /// Its number of addresses.
        size: u64,
    },
    /// The pool is restricted to a single cluster, and another cluster uses it.
    #[error(
        "IP pool `{pool}` is restricted to a single cluster and cluster {holder} already uses it"
    )]
    PoolRestricted {
        /// Pool name.
        pool: String,
        /// The cluster that holds it.
        holder: String,
    },
    /// An address is outside the pool's subnet or range.
    #[error("address {address} is outside IP pool `{pool}`")]
    AddressOutsidePool {
        /// Pool name.
        pool: String,
        /// The address.
        address: String,
    },
    /// This replica lost the cluster to another one (fencing): the write was refused.
    #[error("cluster {cluster} is now owned by another replica (stale fencing token {fence})")]
    Fenced {
        /// The cluster.
        cluster: String,
        /// The stale token.
        fence: u64,
    },
    /// The operation does not fit the object's state (e.g. delete while provisioning).
    #[error("{0}")]
    InvalidState(String),
    /// The database failed.
    #[error("store error during {operation}: {source}")]
    Store {
        /// What the store was doing.
        operation: &'static str,
        /// The database's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored document could not be decoded (written by an incompatible version?).
    #[error("stored {what} is unreadable: {source}")]
    Corrupt {
        /// What was decoded.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The cloud failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// No provider is registered for the cluster's cloud.
    #[error("no cloud provider registered for {0}")]
    NoProvider(crate::model::CloudType),
    /// Certificate generation failed.
    #[error("cluster PKI: {message}")]
    Pki {
        /// What failed.
        message: String,
    },
    /// A pack's values cannot be rendered into the node configuration.
    #[error("pack `{pack}`: {field}: {rule}")]
    PackValues {
        /// Pack name.
        pack: String,
        /// The value's key, e.g. `podCIDR`.
        field: String,
        /// What is wrong.
        rule: String,
    },
    /// Bootstrap data exceeds what the cloud accepts, even compressed.
    #[error("user data for {role} nodes is {size} bytes compressed, the cloud accepts {limit}: trim pack manifests")]
    UserDataTooLarge {
        /// Node role.
        role: String,
        /// Compressed size.
        size: usize,
        /// The cloud's limit.
        limit: usize,
    },
    /// The engine is shut down.
    #[error("the engine is shut down")]
    Shutdown,
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl CoreError {
    /// Wraps a database error.
    pub fn store(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        CoreError::Store {
            operation,
            source: Box::new(source),
        }
    }
}

/// Result with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
