//! The crate's error type, [`AzureError`], and its classification into the engine's
//! [`ProviderError`] variants.
//!
//! ARM answers an error with `{"error": {"code": ..., "message": ...}}` (`CloudError`); the
//! code decides the class: throttling (429), credentials (401, 403, Entra ID's
//! `invalid_client`), quotas, requests that cannot succeed as sent (400, 404 on a create),
//! and everything that may pass by itself (5xx, 409 conflicts while another operation runs,
//! the network). Messages never carry a secret: the client secret and the bearer token are
//! never formatted into an error.

use std::time::Duration;

use spectro_core::provider::ProviderError;

/// An Azure failure, typed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// ARM (or the token endpoint) answered with an error status.
    #[error("{op}: HTTP {status} {code}: {message}")]
    Api {
        /// The operation, e.g. `VirtualMachines.CreateOrUpdate`.
        op: String,
        /// HTTP status.
        status: u16,
        /// The ARM error code (`SkuNotAvailable`, `QuotaExceeded`, ...), or `HttpStatus<n>`.
        code: String,
        /// ARM's message.
        message: String,
        /// `Retry-After`, when the answer had one.
        retry_after: Option<Duration>,
    },
    /// A long-running operation ended `Failed` or `Canceled`.
    #[error("{op}: the operation ended {status}: {code}: {message}")]
    OperationFailed {
        /// The operation.
        op: String,
        /// `Failed` or `Canceled`.
        status: String,
        /// The error code of the operation.
        code: String,
        /// Its message.
        message: String,
    },
    /// The request did not get an answer (connection, timeout).
    #[error("{op}: {source}")]
    Transport {
        /// The operation.
        op: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the API describes.
    #[error("{op}: unexpected answer: {message}")]
    Decode {
        /// The operation.
        op: String,
        /// What was wrong.
        message: String,
    },
    /// A long-running operation still runs after the provider's wait.
    #[error("{op}: still running after {waited:?}")]
    StillRunning {
        /// The operation.
        op: String,
        /// How long it was polled.
        waited: Duration,
    },
    /// The cluster's spec or profile asks for something the provider cannot do.
    #[error("{field}: {rule}")]
    Invalid {
        /// The field (spec path or pack annotation).
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The account holds no Azure credentials.
    #[error("cloud account {account} holds no Azure credentials")]
    NoCredentials {
        /// The account's name.
        account: String,
    },
    /// The account's request budget refused to wait that long.
    #[error("request budget of subscription {subscription}: {message}")]
    OverBudget {
        /// The subscription.
        subscription: String,
        /// The budget's message.
        message: String,
        /// How long until a permit.
        retry_after: Duration,
    },
}

impl AzureError {
    /// An invalid input, naming its field and rule.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        AzureError::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The ARM error code, if the cloud gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AzureError::Api { code, .. } | AzureError::OperationFailed { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for API errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            AzureError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the resource (or its parent) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// The engine's class of this failure.
    pub fn class(&self) -> Class {
        match self {
            AzureError::Api {
                status,
                code,
                message,
                retry_after,
                ..
            } => {
                // Compute says "OperationNotAllowed: ... exceeding approved ... quota".
                if code == "OperationNotAllowed" && message.to_ascii_lowercase().contains("quota") {
                    Class::Quota
                } else {
                    classify(*status, code, *retry_after)
                }
            }
            AzureError::OperationFailed { code, .. } => {
                // The operation was accepted: something may exist. Quotas and allocation
                // failures are the cloud's capacity; the rest may pass (the engine replaces a
                // failed machine, the next ensure repeats a failed network operation).
                if is_quota(code) {
                    Class::Quota
                } else {
                    Class::Retryable
                }
            }
            AzureError::Transport { .. }
            | AzureError::Decode { .. }
            | AzureError::StillRunning { .. } => Class::Retryable,
            AzureError::OverBudget { retry_after, .. } => Class::Throttled(*retry_after),
            AzureError::Invalid { .. } => Class::Terminal,
            AzureError::NoCredentials { .. } => Class::Unauthorized,
        }
    }
}

/// What an [`AzureError`] makes the engine do (see the contract's error table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// May pass by itself.
    Retryable,
    /// Throttled: wait at least this long.
    Throttled(Duration),
    /// A quota or capacity limit.
    Quota,
    /// Credentials or permissions.
    Unauthorized,
    /// Cannot succeed as sent.
    Terminal,
}

/// Default pause after a 429 without `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

fn is_quota(code: &str) -> bool {
    let c = code.to_ascii_lowercase();
    c.contains("quota")
        || c.contains("limitexceeded")
        || matches!(
            code,
            "AllocationFailed"
                | "ZonalAllocationFailed"
                | "OverconstrainedAllocationRequest"
                | "OverconstrainedZonalAllocationRequest"
                | "SkuNotAvailable"
                | "PublicIPCountLimitReached"
        )
}

fn classify(status: u16, code: &str, retry_after: Option<Duration>) -> Class {
    if status == 429 {
        return Class::Throttled(retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
    }
    if matches!(status, 401 | 403)
        || matches!(
            code,
            "invalid_client"
                | "unauthorized_client"
                | "invalid_request"
                | "AuthorizationFailed"
                | "InvalidAuthenticationToken"
                | "InvalidAuthenticationTokenTenant"
                | "SubscriptionNotFound"
                | "LinkedAuthorizationFailed"
        )
    {
        return Class::Unauthorized;
    }
    if is_quota(code) {
        return Class::Quota;
    }
    if status >= 500 || status == 408 {
        return Class::Retryable;
    }
    // `InUse...`: something still holds the resource (a NIC, a subnet, a pool member): it
    // passes once that is gone.
    if status == 409
        || code.contains("InUse")
        || matches!(
            code,
            "RetryableError"
                | "AnotherOperationInProgress"
                | "OperationNotAllowed"
                | "InUseSubnetCannotBeDeleted"
                | "InUseNetworkSecurityGroupCannotBeDeleted"
                | "PublicIPAddressInUse"
                | "NicInUse"
                | "ReferencedResourceNotProvisioned"
                | "CanceledAndSupersededDueToAnotherOperation"
        )
    {
        return Class::Retryable;
    }
    Class::Terminal
}

impl From<AzureError> for ProviderError {
    fn from(e: AzureError) -> Self {
        let message = e.to_string();
        let p = match e.class() {
            Class::Retryable => ProviderError::retryable(message),
            Class::Throttled(after) => ProviderError::throttled(after, message),
            Class::Quota => ProviderError::quota_exceeded(message),
            Class::Unauthorized => ProviderError::unauthorized(message),
            Class::Terminal => ProviderError::terminal(message),
        };
        p.with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> AzureError {
        AzureError::Api {
            op: "VirtualMachines.CreateOrUpdate".into(),
            status,
            code: code.into(),
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn arm_answers_are_classified_for_the_engine() {
        let cases = [
            (api(429, "TooManyRequests"), "Throttled"),
            (api(401, "InvalidAuthenticationToken"), "Unauthorized"),
            (api(403, "AuthorizationFailed"), "Unauthorized"),
            (api(400, "invalid_client"), "Unauthorized"),
            (api(409, "OperationNotAllowed"), "TransientError"),
            (api(400, "QuotaExceeded"), "QuotaExceeded"),
            (api(409, "SkuNotAvailable"), "QuotaExceeded"),
            (api(400, "InvalidParameter"), "Failed"),
            (api(404, "PlatformImageNotFound"), "Failed"),
            (api(404, "ResourceGroupNotFound"), "Failed"),
            (api(500, "InternalServerError"), "TransientError"),
            (api(409, "InUseSubnetCannotBeDeleted"), "TransientError"),
            (api(400, "InUseNatGatewayCannotBeDeleted"), "TransientError"),
            (
                api(400, "LoadBalancerInUseByVirtualMachine"),
                "TransientError",
            ),
        ];
        for (e, reason) in cases {
            let code = e.code().unwrap().to_string();
            let p = ProviderError::from(e);
            assert_eq!(p.reason(), reason, "{code}");
            assert!(std::error::Error::source(&p)
                .and_then(|s| s.downcast_ref::<AzureError>())
                .is_some());
        }
        let t = ProviderError::from(AzureError::Api {
            op: "VirtualMachines.CreateOrUpdate".into(),
            status: 429,
            code: "TooManyRequests".into(),
            message: "m".into(),
            retry_after: Some(Duration::from_secs(7)),
        });
        assert_eq!(t.retry_after(), Some(Duration::from_secs(7)));
    }
}
