//! AWS errors, classified for the engine's error policy.

use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use spectro_core::provider::ProviderError;

/// How long to back off after AWS throttled us when it gives no hint.
pub const THROTTLE_BACKOFF: Duration = Duration::from_secs(2);

const THROTTLING: [&str; 6] = [
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequestsException",
    "SlowDown",
];
const AUTH: [&str; 8] = [
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "AccessDenied",
    "InvalidAccessKeyId",
    "OptInRequired",
];
const TRANSIENT: [&str; 4] = [
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
];

/// Classifies an AWS error code for `op`. `code` is None for transport failures (no answer,
/// timeout, unreadable answer), which are retryable.
pub fn classify(op: &str, code: Option<&str>, message: Option<&str>) -> ProviderError {
    let msg = message.unwrap_or("no message");
    let Some(code) = code else {
        return ProviderError::Retryable {
            message: format!("{op}: {msg}"),
        };
    };
    let message = format!("{op}: {code}: {msg}");
    if THROTTLING.contains(&code) {
        ProviderError::Throttled {
            retry_after: THROTTLE_BACKOFF,
            message,
        }
    } else if code.ends_with("LimitExceeded") || code == "InsufficientInstanceCapacity" {
        ProviderError::QuotaExceeded { message }
    } else if AUTH.contains(&code) {
        ProviderError::Unauthorized { message }
    } else if code.ends_with(".NotFound") && !code.starts_with("InvalidAMIID") {
        // Eventual consistency: a resource created a moment ago may not be visible yet.
        ProviderError::Retryable { message }
    } else if TRANSIENT.contains(&code) {
        ProviderError::Retryable { message }
    } else {
        ProviderError::Terminal { message }
    }
}

/// Classifies an SDK error of any AWS operation.
pub fn from_sdk<E, R>(op: &str, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(s) => classify(op, s.err().code(), s.err().message()),
        other => classify(op, None, Some(&other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_engine_policy() {
        assert!(matches!(
            classify("RunInstances", Some("RequestLimitExceeded"), None),
            ProviderError::Throttled { .. }
        ));
        assert!(matches!(
            classify("RunInstances", Some("VcpuLimitExceeded"), Some("You have requested more vCPU capacity")),
            ProviderError::QuotaExceeded { message } if message.contains("vCPU capacity")
        ));
        assert!(matches!(
            classify("RunInstances", Some("InsufficientInstanceCapacity"), None),
            ProviderError::QuotaExceeded { .. }
        ));
        assert!(matches!(
            classify("GetCallerIdentity", Some("InvalidClientTokenId"), None),
            ProviderError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify("DescribeVpcs", Some("InvalidVpcID.NotFound"), None),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            classify("RunInstances", Some("InvalidAMIID.NotFound"), None),
            ProviderError::Terminal { .. }
        ));
        assert!(matches!(
            classify("RunInstances", Some("InvalidParameterValue"), None),
            ProviderError::Terminal { .. }
        ));
        assert!(matches!(
            classify("RunInstances", None, Some("timeout")),
            ProviderError::Retryable { .. }
        ));
    }
}
