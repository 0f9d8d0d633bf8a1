//! The error type of spectro-core.

use crate::provider::ProviderError;
use crate::validate::Violation;

/// Errors of the core: invalid input, missing objects, wrong state, storage, cloud.
///
/// Every variant is typed so an application can act on it without parsing messages:
/// [`CoreError::Conflict`] → read again and retry, [`CoreError::WrongLifecycle`] → the
/// operation does not apply now (e.g. delete while provisioning: abort instead),
/// [`CoreError::Timeout`] → a wait ran out (the cluster's phase and last error are inside),
/// [`CoreError::Provider`] → the cloud's typed [`ProviderError`]. [`CoreError::reason`] gives
/// a stable code for each. New variants may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The operation does not apply to the cluster in its current lifecycle state (e.g.
    /// delete while provisioning, update while deleting).
    #[error("cannot {op} cluster `{cluster}`: it is {state}{}", hint.map(|h| format!(": {h}")).unwrap_or_default())]
    WrongLifecycle {
        /// The refused operation, e.g. `delete`.
        op: &'static str,
        /// The cluster's name.
        cluster: String,
        /// Its state, e.g. `still provisioning`, `being deleted`.
        state: &'static str,
        /// What to do instead, when there is something.
        hint: Option<&'static str>,
    },
    /// Something the operation needs does not exist yet (e.g. the API endpoint of a cluster
    /// whose infrastructure is still being created): try again later.
    #[error("cluster `{cluster}` has no {what} yet")]
    NotReady {
        /// The cluster's name.
        cluster: String,
        /// What is missing, e.g. `API endpoint`.
        what: &'static str,
    },
    /// A profile update conflicts with the cluster's overrides and no resolution was given.
    #[error("the profile update of cluster `{cluster}` conflicts with overrides of {}: resolve them (keep the overrides, take the profile's values or edit them)", .keys.join(", "))]
    UnresolvedConflicts {
        /// The cluster's name.
        cluster: String,
        /// The conflicting keys, `pack.dotted.key`.
        keys: Vec<String>,
    },
    /// A wait for a cluster ran out before the cluster got there.
    #[error("cluster `{cluster}` did not reach {wanted} within {waited:?} (phase {}, generation {observed_generation} of {generation}, last error: {})", phase.as_str(), last_error.as_deref().unwrap_or("none"))]
    Timeout {
        /// The cluster's name.
        cluster: String,
        /// What was waited for, e.g. `running`.
        wanted: String,
        /// The cluster's phase when the wait ended.
        phase: crate::records::status::Phase,
        /// The generation the cluster has converged to.
        observed_generation: u64,
        /// The generation of its spec.
        generation: u64,
        /// The cluster's last error, if any.
        last_error: Option<String>,
        /// How long was waited.
        waited: std::time::Duration,
    },
    /// A reconcile of the cluster panicked (a bug): the engine caught it, keeps the stored
    /// state and retries with backoff.
    #[error("the reconcile of cluster {cluster} panicked: {message}")]
    ReconcilePanicked {
        /// The cluster.
        cluster: crate::provider::ClusterId,
        /// The panic message.
        message: String,
    },
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
    /// A cluster agent's credential is wrong, or is another cluster's; nothing it sent
    /// was recorded.
    #[error("agent of cluster {cluster}: credential refused (not this cluster's)")]
    Unauthorized {
        /// The cluster the caller claimed to be.
        cluster: String,
    },
    /// A gateway's agent was refused: a wrong, expired or used pairing code, a credential that
    /// is not this gateway's.
    #[error("gateway `{gateway}`: {why}")]
    GatewayRefused {
        /// The gateway named.
        gateway: String,
        /// Why (never the code or credential itself).
        why: String,
    },
    /// A gateway operation its lifecycle state does not allow.
    #[error("cannot {op} gateway `{gateway}`: it is {state}")]
    GatewayState {
        /// The operation, e.g. `upgrade`.
        op: &'static str,
        /// The gateway.
        gateway: String,
        /// Its state.
        state: &'static str,
    },
    /// Secrets at rest cannot be sealed or opened: no key, a missing key, or a sealed value
    /// that does not belong where it was found.
    #[error("secrets at rest: {reason}")]
    Secrets {
        /// What is wrong and what to do (never a secret or a key).
        reason: String,
    },
    /// The store (or the engine's configuration) does not offer this.
    #[error("not supported here: {0}")]
    Unsupported(&'static str),
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl CoreError {
    /// A stable reason code for conditions, events, metrics and logs (`UpperCamelCase`).
    pub fn reason(&self) -> &'static str {
        match self {
            CoreError::Invalid { .. } => "Invalid",
            CoreError::NotFound { .. } => "NotFound",
            CoreError::AlreadyExists { .. } => "AlreadyExists",
            CoreError::Conflict { .. } => "Conflict",
            CoreError::InUse { .. } => "InUse",
            CoreError::PoolExhausted { .. } => "PoolExhausted",
            CoreError::PoolRestricted { .. } => "PoolRestricted",
            CoreError::AddressOutsidePool { .. } => "AddressOutsidePool",
            CoreError::Fenced { .. } => "Fenced",
            CoreError::WrongLifecycle { .. } => "WrongLifecycle",
            CoreError::NotReady { .. } => "NotReady",
            CoreError::UnresolvedConflicts { .. } => "UnresolvedConflicts",
            CoreError::Timeout { .. } => "Timeout",
            CoreError::ReconcilePanicked { .. } => "ReconcilePanicked",
            CoreError::Store { .. } => "StoreError",
            CoreError::Corrupt { .. } => "Corrupt",
            CoreError::Provider(e) => e.reason(),
            CoreError::NoProvider(_) => "NoProvider",
            CoreError::Pki { .. } => "PkiError",
            CoreError::PackValues { .. } => "InvalidPackValues",
            CoreError::UserDataTooLarge { .. } => "UserDataTooLarge",
            CoreError::Shutdown => "Shutdown",
            CoreError::Unauthorized { .. } => "Unauthorized",
            CoreError::GatewayRefused { .. } => "GatewayRefused",
            CoreError::GatewayState { .. } => "GatewayState",
            CoreError::Secrets { .. } => "SecretsError",
            CoreError::Unsupported(_) => "Unsupported",
        }
    }

    /// True when trying the same call again later may succeed without a change of input
    /// (concurrent writers, a store or cloud hiccup, a wait that ran out, not ready yet).
    pub fn is_transient(&self) -> bool {
        match self {
            CoreError::Conflict { .. }
            | CoreError::NotReady { .. }
            | CoreError::Timeout { .. }
            | CoreError::Store { .. } => true,
            CoreError::Provider(e) => matches!(
                e,
                ProviderError::Retryable { .. } | ProviderError::Throttled { .. }
            ),
            _ => false,
        }
    }

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
