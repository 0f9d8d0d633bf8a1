//! The crate's error type, [`AwsError`], and how it maps onto the engine's error policy
//! (`impl From<AwsError> for ProviderError`).
//!
//! | AWS says | engine policy |
//! | --- | --- |
//! | a throttling code (`RequestLimitExceeded`, `Throttling`, ...) | throttled, back off at least [`THROTTLE_BACKOFF`] |
//! | `*LimitExceeded`, `InsufficientInstanceCapacity` | quota exceeded |
//! | an auth code (`AuthFailure`, `UnauthorizedOperation`, ...) | unauthorized |
//! | `*.NotFound` (except `InvalidAMIID.*`) | retryable: eventual consistency |
//! | `InternalError`, `ServiceUnavailable`, ... | retryable |
//! | no answer (connection, timeout, unreadable answer) | retryable |
//! | any other code, a spec AWS cannot serve | terminal |
//!
//! The `ProviderError` keeps the `AwsError` as its source, and an `AwsError` keeps the SDK's
//! error (the modeled service error, or the transport failure) as its own.

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

/// An error of the SDK kept as a source.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong on AWS, or why a cluster cannot be served there. Messages never contain
/// credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// AWS answered a call with an error code.
    #[error("{op}: {code}: {}", message.as_deref().unwrap_or("no message"))]
    Api {
        /// The operation, e.g. `RunInstances`.
        op: &'static str,
        /// The AWS error code, e.g. `VcpuLimitExceeded`, `InvalidVpcID.NotFound`.
        code: String,
        /// AWS's message, when it sent one.
        message: Option<String>,
        /// The SDK's modeled error.
        #[source]
        source: Option<BoxError>,
    },
    /// No usable answer: the call was not sent, timed out, or its answer was unreadable.
    /// Retryable.
    #[error("{op}: {message}")]
    Transport {
        /// The operation.
        op: &'static str,
        /// What happened.
        message: String,
        /// The SDK's cause (connector, timeout, parse error).
        #[source]
        source: Option<BoxError>,
    },
    /// The cluster spec or the profile does not fit AWS (field and rule named).
    #[error("{field}: {rule}")]
    Invalid {
        /// The field, e.g. ``annotation `imageOwners` of os pack ubuntu``.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// Something the spec names does not exist.
    #[error("{kind} {id} named by {field} does not exist in {region}")]
    NotFound {
        /// What was looked up, e.g. `image`.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What named it.
        field: String,
        /// Where it was looked up.
        region: String,
    },
    /// No published image matches the cluster's OS and Kubernetes packs.
    #[error("no image named {pattern} owned by {} in {region}: publish one, name its owner in the os pack's `imageOwners` annotation, or name an AMI in its `image` annotation", owners.join(", "))]
    NoImage {
        /// The image name pattern searched.
        pattern: String,
        /// The owners searched.
        owners: Vec<String>,
        /// The region.
        region: String,
    },
    /// AWS answered without something the provider needs.
    #[error("{op}: {message}")]
    Unexpected {
        /// The operation.
        op: &'static str,
        /// What is missing.
        message: String,
    },
    /// The cloud account holds no AWS credentials.
    #[error("account {account} holds no AWS credentials")]
    NoCredentials {
        /// The account's name.
        account: String,
    },
    /// The account's request budget held the call back longer than its limits allow: the
    /// engine pauses the account's clusters for `source.retry_after`.
    #[error("{op}: {source}")]
    OverBudget {
        /// The operation.
        op: &'static str,
        /// How long until a permit is likely.
        #[source]
        source: spectro_core::budget::OverBudget,
    },
    /// A step waits for something another step provides (the image, a subnet): retryable.
    #[error("{what}")]
    NotReady {
        /// What is waited for.
        what: String,
    },
    /// A request could not be built from the cluster's values.
    #[error("building {what}: {source}")]
    Build {
        /// What was built, e.g. `the load balancer's listener`.
        what: &'static str,
        /// The SDK builder's error.
        #[source]
        source: aws_smithy_types::error::operation::BuildError,
    },
}

impl AwsError {
    /// An error code AWS answered with (`Api` errors only).
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// True when AWS answered with one of `codes`.
    pub fn has_code(&self, codes: &[&str]) -> bool {
        self.code().is_some_and(|c| codes.contains(&c))
    }

    /// The error of an SDK call of `op`, with the SDK's error kept as the source.
    pub fn from_sdk<E, R>(op: &'static str, e: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let (code, message) = match &e {
            SdkError::ServiceError(s) => (
                s.err().code().map(str::to_string),
                s.err().message().map(str::to_string),
            ),
            _ => (None, None),
        };
        if code.is_none() {
            // Held back by the account's request budget (inside the HTTP client)?
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if let Some(o) = c.downcast_ref::<spectro_core::budget::OverBudget>() {
                    return AwsError::OverBudget {
                        op,
                        source: o.clone(),
                    };
                }
                cause = c.source();
            }
        }
        match code {
            Some(code) => AwsError::Api {
                op,
                code,
                message,
                source: e.into_source().ok(),
            },
            None => AwsError::Transport {
                op,
                message: message.unwrap_or_else(|| e.to_string()),
                source: e.into_source().ok(),
            },
        }
    }

    /// An `Invalid` error.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        AwsError::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// A `NotReady` error.
    pub fn not_ready(what: impl Into<String>) -> Self {
        AwsError::NotReady { what: what.into() }
    }
}

/// The SDK error of `op` as an [`AwsError`] (for `map_err`).
pub fn from_sdk<E, R>(op: &'static str, e: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    AwsError::from_sdk(op, e)
}

/// The engine's policy for an AWS error code.
fn classify_code(code: &str, message: String) -> ProviderError {
    if THROTTLING.contains(&code) {
        ProviderError::throttled(THROTTLE_BACKOFF, message)
    } else if code.ends_with("LimitExceeded") || code == "InsufficientInstanceCapacity" {
        ProviderError::quota_exceeded(message)
    } else if AUTH.contains(&code) {
        ProviderError::unauthorized(message)
    } else if code.ends_with(".NotFound") && !code.starts_with("InvalidAMIID") {
        // Eventual consistency: a resource created a moment ago may not be visible yet.
        ProviderError::retryable(message)
    } else if TRANSIENT.contains(&code) {
        ProviderError::retryable(message)
    } else {
        ProviderError::terminal(message)
    }
}

impl From<AwsError> for ProviderError {
    fn from(e: AwsError) -> Self {
        let message = e.to_string();
        let p = match &e {
            AwsError::Api { code, .. } => classify_code(code, message),
            AwsError::Transport { .. } | AwsError::NotReady { .. } => {
                ProviderError::retryable(message)
            }
            AwsError::OverBudget { source, .. } => {
                ProviderError::throttled(source.retry_after, message)
            }
            AwsError::NoCredentials { .. } => ProviderError::unauthorized(message),
            AwsError::Invalid { .. }
            | AwsError::NotFound { .. }
            | AwsError::NoImage { .. }
            | AwsError::Unexpected { .. }
            | AwsError::Build { .. } => ProviderError::terminal(message),
        };
        p.with_source(e)
    }
}

/// The crate's result type.
pub type Result<T, E = AwsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(op: &'static str, code: &str, message: Option<&str>) -> ProviderError {
        AwsError::Api {
            op,
            code: code.into(),
            message: message.map(str::to_string),
            source: None,
        }
        .into()
    }

    #[test]
    fn codes_map_to_the_engine_policy() {
        assert!(matches!(
            api("RunInstances", "RequestLimitExceeded", None),
            ProviderError::Throttled { retry_after, .. } if retry_after == THROTTLE_BACKOFF
        ));
        assert!(matches!(
            api("RunInstances", "VcpuLimitExceeded", Some("You have requested more vCPU capacity")),
            ProviderError::QuotaExceeded { message, .. } if message.contains("vCPU capacity")
        ));
        assert!(matches!(
            api("RunInstances", "InsufficientInstanceCapacity", None),
            ProviderError::QuotaExceeded { .. }
        ));
        assert!(matches!(
            api("GetCallerIdentity", "InvalidClientTokenId", None),
            ProviderError::Unauthorized { .. }
        ));
        assert!(matches!(
            api("DescribeVpcs", "InvalidVpcID.NotFound", None),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            api("DescribeVpcs", "ServiceUnavailable", None),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            api("RunInstances", "InvalidAMIID.NotFound", None),
            ProviderError::Terminal { .. }
        ));
        assert!(matches!(
            api("RunInstances", "InvalidParameterValue", None),
            ProviderError::Terminal { .. }
        ));
        assert_eq!(
            api("RunInstances", "InvalidParameterValue", Some("bad")).message(),
            "RunInstances: InvalidParameterValue: bad"
        );
    }

    #[test]
    fn errors_of_the_crate_map_to_the_engine_policy() {
        let transport = AwsError::Transport {
            op: "GetCallerIdentity",
            message: "dispatch failure".into(),
            source: Some("connection refused".into()),
        };
        let p = ProviderError::from(transport);
        assert!(matches!(p, ProviderError::Retryable { .. }));
        assert_eq!(p.message(), "GetCallerIdentity: dispatch failure");
        assert!(matches!(
            ProviderError::from(AwsError::not_ready(
                "the bastion waits for the cluster image"
            )),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            ProviderError::from(AwsError::NoCredentials {
                account: "a".into()
            }),
            ProviderError::Unauthorized { .. }
        ));
        for e in [
            AwsError::invalid("cloud", "is not an AWS placement"),
            AwsError::NotFound {
                kind: "image",
                id: "ami-1".into(),
                field: "the `image` annotation of os pack ubuntu".into(),
                region: "us-east-1".into(),
            },
            AwsError::NoImage {
                pattern: "spectro-ubuntu-*".into(),
                owners: vec!["self".into()],
                region: "us-east-1".into(),
            },
        ] {
            assert!(matches!(
                ProviderError::from(e),
                ProviderError::Terminal { .. }
            ));
        }
    }

    #[test]
    fn the_provider_error_keeps_the_aws_error_and_its_cause() {
        let e = AwsError::Api {
            op: "RunInstances",
            code: "VcpuLimitExceeded".into(),
            message: Some("limit of 32 vCPUs".into()),
            source: Some("the SDK's modeled error".into()),
        };
        let p = ProviderError::from(e);
        let src = std::error::Error::source(&p).expect("the AwsError is the source");
        let aws = src.downcast_ref::<AwsError>().expect("an AwsError");
        assert_eq!(aws.code(), Some("VcpuLimitExceeded"));
        assert!(aws.has_code(&["VcpuLimitExceeded"]));
        assert_eq!(
            std::error::Error::source(aws).map(|s| s.to_string()),
            Some("the SDK's modeled error".to_string())
        );
        // Cloning keeps the chain.
        let copy = p.clone();
        assert!(std::error::Error::source(&copy)
            .and_then(|s| s.downcast_ref::<AwsError>())
            .is_some());
    }

    #[test]
    fn sdk_errors_keep_their_code_and_cause() {
        use aws_sdk_ec2::operation::run_instances::RunInstancesError;
        use aws_smithy_types::error::ErrorMetadata;

        let modeled = RunInstancesError::generic(
            ErrorMetadata::builder()
                .code("VcpuLimitExceeded")
                .message("You have requested more vCPU capacity")
                .build(),
        );
        let e = from_sdk("RunInstances", SdkError::service_error(modeled, ()));
        assert_eq!(e.code(), Some("VcpuLimitExceeded"));
        assert_eq!(
            e.to_string(),
            "RunInstances: VcpuLimitExceeded: You have requested more vCPU capacity"
        );
        let p = ProviderError::from(e);
        assert!(matches!(p, ProviderError::QuotaExceeded { .. }));
        // ProviderError → AwsError → the SDK's modeled error.
        let aws = std::error::Error::source(&p)
            .and_then(|s| s.downcast_ref::<AwsError>())
            .expect("the AwsError is kept");
        assert!(std::error::Error::source(aws)
            .and_then(|s| s.downcast_ref::<RunInstancesError>())
            .is_some());

        let timeout: SdkError<RunInstancesError, ()> =
            SdkError::timeout_error("no answer within 3 s");
        let e = from_sdk("RunInstances", timeout);
        assert!(matches!(e, AwsError::Transport { .. }), "{e:?}");
        assert_eq!(
            std::error::Error::source(&e).map(|s| s.to_string()),
            Some("no answer within 3 s".to_string())
        );
        assert!(matches!(
            ProviderError::from(e),
            ProviderError::Retryable { .. }
        ));
    }
}
