//! The crate's one error type, and how it maps onto the engine's error policy.

use spectro_core::provider::ProviderError;

/// What went wrong talking to vCenter. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
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
    },
    /// vCenter answered something this client cannot read.
    #[error("{op}: unexpected answer from vCenter: {message}")]
    Protocol {
        /// The call.
        op: String,
        /// What could not be read.
        message: String,
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
        match &e {
            VsphereError::Transport { .. } | VsphereError::TaskTimeout { .. } => {
                ProviderError::Retryable { message }
            }
            VsphereError::Login { .. } => ProviderError::Unauthorized { message },
            VsphereError::Fault { fault, .. } if fault == "NoPermission" => {
                ProviderError::Unauthorized { message }
            }
            VsphereError::Fault { fault, .. } if RETRYABLE_FAULTS.contains(&fault.as_str()) => {
                ProviderError::Retryable { message }
            }
            VsphereError::Fault { fault, .. } if CAPACITY_FAULTS.contains(&fault.as_str()) => {
                ProviderError::QuotaExceeded { message }
            }
            VsphereError::Fault { fault, .. } if fault == "NotAuthenticated" => {
                ProviderError::Retryable { message }
            }
            _ => ProviderError::Terminal { message },
        }
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
}
