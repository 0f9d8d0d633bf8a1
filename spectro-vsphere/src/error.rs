//! The crate's one error type, and how it maps onto the engine's error policy. The
//! `ProviderError` keeps the `VsphereError` as its source; transport and protocol errors keep
//! vim_rs's error (and through it the HTTP client's) as theirs.

use spectro_core::provider::ProviderError;

/// An underlying error kept as a source.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to vCenter. Messages never contain credentials. New variants may
/// come: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VsphereError {
    /// The spec or account does not fit this provider (field and rule named).
    #[error("{field}: {rule}")]
    Invalid {
        /// The field, e.g. `nodePools[1].placements[0].datastore`.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// An inventory object named by the spec does not exist.
    #[error("vSphere {kind} `{path}` was not found (from {field})")]
    NotFound {
        /// What was looked up (datacenter, folder, datastore, ...).
        kind: &'static str,
        /// The inventory path tried.
        path: String,
        /// The spec field that named it.
        field: String,
    },
    /// vCenter refused the login.
    #[error("vCenter {host} refused the login of `{user}`: {message}")]
    Login {
        /// The vCenter.
        host: String,
        /// The user name (never the password).
        user: String,
        /// vCenter's message.
        message: String,
    },
    /// A vSphere fault answered a call or ended a task.
    #[error("{op} failed: {fault}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Fault {
        /// The call or task, e.g. `CloneVM_Task(cluster-a-worker-1a2b3c)`.
        op: String,
        /// The fault type, e.g. `DuplicateName`, `InsufficientResourcesFault`.
        fault: String,
        /// vCenter's localized message, when it sent one.
        message: Option<String>,
    },
    /// The connection failed (network, TLS, timeout): retryable.
    #[error("{op}: cannot reach vCenter: {message}")]
    Transport {
        /// The call.
        op: String,
        /// What happened.
        message: String,
        /// The client's error (HTTP, TLS, connection).
        #[source]
        source: Option<BoxError>,
    },
    /// vCenter answered something this client cannot read.
    #[error("{op}: unexpected answer from vCenter: {message}")]
    Protocol {
        /// The call.
        op: String,
        /// What could not be read.
        message: String,
        /// The client's error (a parse error), when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A task did not finish in time.
    #[error("{op}: task {task} still running after {seconds} s")]
    TaskTimeout {
        /// The call that started it.
        op: String,
        /// The task id.
        task: String,
        /// How long was waited.
        seconds: u64,
    },
}

impl VsphereError {
    /// The fault type name, for faults.
    pub fn fault(&self) -> Option<&str> {
        match self {
            VsphereError::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }

    /// True when a fault says the object is gone (already deleted).
    pub fn is_gone(&self) -> bool {
        matches!(self.fault(), Some("ManagedObjectNotFound"))
    }
}

/// Faults a retry with the same request may fix.
const RETRYABLE_FAULTS: &[&str] = &[
    "TaskInProgress",
    "InvalidState",
    "HostCommunication",
    "HostNotConnected",
    "RequestCanceled",
    "Timedout",
    "ConcurrentAccess",
    "ResourceInUse",
];

/// Faults that mean capacity is exhausted: shown to the user, retried until it is raised.
const CAPACITY_FAULTS: &[&str] = &[
    "InsufficientResourcesFault",
    "InsufficientCpuResourcesFault",
    "InsufficientMemoryResourcesFault",
    "InsufficientStorageSpace",
    "InsufficientHostCapacityFault",
    "OutOfBounds",
];

impl From<VsphereError> for ProviderError {
    fn from(e: VsphereError) -> Self {
        let message = e.to_string();
        let p = match &e {
            VsphereError::Transport { .. } | VsphereError::TaskTimeout { .. } => {
                ProviderError::retryable(message)
            }
            VsphereError::Login { .. } => ProviderError::unauthorized(message),
            VsphereError::Fault { fault, .. } if fault == "NoPermission" => {
                ProviderError::unauthorized(message)
            }
            VsphereError::Fault { fault, .. } if RETRYABLE_FAULTS.contains(&fault.as_str()) => {
                ProviderError::retryable(message)
            }
            VsphereError::Fault { fault, .. } if CAPACITY_FAULTS.contains(&fault.as_str()) => {
                ProviderError::quota_exceeded(message)
            }
            VsphereError::Fault { fault, .. } if fault == "NotAuthenticated" => {
                ProviderError::retryable(message)
            }
            _ => ProviderError::terminal(message),
        };
        p.with_source(e)
    }
}

/// The crate's result type.
pub type Result<T, E = VsphereError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(f: &str) -> ProviderError {
        VsphereError::Fault {
            op: "CloneVM_Task(x)".into(),
            fault: f.into(),
            message: Some("m".into()),
        }
        .into()
    }

    #[test]
    fn faults_map_to_the_engine_policy() {
        assert!(matches!(
            fault("TaskInProgress"),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            fault("InsufficientResourcesFault"),
            ProviderError::QuotaExceeded { .. }
        ));
        assert!(matches!(
            fault("NoPermission"),
            ProviderError::Unauthorized { .. }
        ));
        assert!(matches!(
            fault("InvalidDatastorePath"),
            ProviderError::Terminal { .. }
        ));
        assert_eq!(
            fault("DuplicateName").to_string(),
            "CloneVM_Task(x) failed: DuplicateName: m"
        );
    }

    #[test]
    fn the_provider_error_keeps_the_vsphere_error_and_its_cause() {
        let e = VsphereError::Transport {
            op: "RetrievePropertiesEx".into(),
            message: "connection reset".into(),
            source: Some("io: connection reset by peer".into()),
        };
        let p = ProviderError::from(e);
        assert!(matches!(p, ProviderError::Retryable { .. }));
        let v = std::error::Error::source(&p)
            .and_then(|s| s.downcast_ref::<VsphereError>())
            .expect("the VsphereError is the source");
        assert!(matches!(v, VsphereError::Transport { op, .. } if op == "RetrievePropertiesEx"));
        assert_eq!(
            std::error::Error::source(v).map(|s| s.to_string()),
            Some("io: connection reset by peer".to_string())
        );
        let gone = ProviderError::from(VsphereError::Fault {
            op: "PowerOffVM_Task(vm-1)".into(),
            fault: "ManagedObjectNotFound".into(),
            message: None,
        });
        let v = std::error::Error::source(&gone)
            .and_then(|s| s.downcast_ref::<VsphereError>())
            .expect("kept");
        assert!(v.is_gone());
    }
}
