//! The crate's error type, [`GcpError`], and its classification into the engine's
//! [`ProviderError`] variants.
//!
//! Compute Engine answers an error with `{"error": {"code", "message", "errors": [{"reason",
//! "message"}]}}`; the `reason` decides the class: `rateLimitExceeded` /
//! `userRateLimitExceeded` (403 or 429) are throttling, `quotaExceeded` a quota, 401 and other
//! 403s the account, 400 a request that cannot succeed as sent, 5xx and in-use conflicts
//! transient. A long-running operation that ends with errors is classified by its error
//! `code` (`QUOTA_EXCEEDED`, `ZONE_RESOURCE_POOL_EXHAUSTED`, ...). Messages never carry the
//! service-account key or a token.

use std::time::Duration;

use spectro_core::provider::ProviderError;

/// How long to pause after a throttled answer without `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A GCP failure, typed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcpError {
    /// Compute Engine answered with an error status.
    #[error("{op}: HTTP {status} {reason}: {message}")]
    Api {
        /// The operation, e.g. `Instances.BulkInsert`.
        op: String,
        /// HTTP status.
        status: u16,
        /// The first error's `reason` (`rateLimitExceeded`, `notFound`, ...), or `http<n>`.
        reason: String,
        /// Compute Engine's message.
        message: String,
        /// `Retry-After`, when the answer had one.
        retry_after: Option<Duration>,
    },
    /// A long-running operation ended with errors.
    #[error("{op}: the operation ended with {code}: {message}")]
    OperationFailed {
        /// The operation.
        op: String,
        /// The first error's code (`QUOTA_EXCEEDED`, `RESOURCE_NOT_FOUND`, ...).
        code: String,
        /// Its message.
        message: String,
    },
    /// The request did not get an answer (connection, timeout, an unreadable answer).
    #[error("{op}: {message}")]
    Transport {
        /// The operation.
        op: String,
        /// What the client library said.
        message: String,
    },
    /// A long-running operation still runs after the provider's wait.
    #[error("{op}: still running after {waited:?}")]
    StillRunning {
        /// The operation.
        op: String,
        /// How long it was waited for.
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
    /// The account's service-account key is unusable (not JSON, no private key, a key that
    /// cannot sign).
    #[error("cloud account {account}: {message}")]
    Credentials {
        /// The account.
        account: String,
        /// What is wrong (never the key itself).
        message: String,
    },
    /// The account's request budget would wait too long for a permit.
    #[error("project {project}: {message}")]
    OverBudget {
        /// The project.
        project: String,
        /// The budget's message.
        message: String,
        /// When a permit is likely.
        retry_after: Duration,
    },
}

/// How the engine should treat an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Throttled: wait and retry.
    Throttled,
    /// A quota is used up.
    Quota,
    /// The account cannot do it.
    Unauthorized,
    /// The resource does not exist.
    NotFound,
    /// The resource exists already.
    AlreadyExists,
    /// Retrying as sent cannot succeed.
    Terminal,
    /// May pass by itself.
    Transient,
}

const THROTTLE_REASONS: [&str; 3] = [
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
];

impl GcpError {
    /// A spec or profile field that breaks a GCP rule.
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        GcpError::Invalid {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The HTTP status, for API errors.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            GcpError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The class of this error.
    #[must_use]
    pub fn class(&self) -> Class {
        match self {
            GcpError::Api { status, reason, .. } => {
                let reason = reason.as_str();
                if *status == 429 || THROTTLE_REASONS.contains(&reason) {
                    Class::Throttled
                } else if reason == "quotaExceeded" || reason == "QUOTA_EXCEEDED" {
                    Class::Quota
                } else if *status == 404 || reason == "notFound" {
                    Class::NotFound
                } else if *status == 409 && reason == "alreadyExists" {
                    Class::AlreadyExists
                } else if reason == "resourceInUseByAnotherResource"
                    || reason == "resourceNotReady"
                    || *status == 409
                    || *status == 412
                    || *status >= 500
                {
                    Class::Transient
                } else if *status == 401 || *status == 403 {
                    Class::Unauthorized
                } else {
                    Class::Terminal
                }
            }
            GcpError::OperationFailed { code, .. } => match code.as_str() {
                "QUOTA_EXCEEDED" => Class::Quota,
                "RESOURCE_NOT_FOUND" => Class::NotFound,
                "RESOURCE_ALREADY_EXISTS" | "ALREADY_EXISTS" => Class::AlreadyExists,
                "RATE_LIMIT_EXCEEDED" => Class::Throttled,
                "ZONE_RESOURCE_POOL_EXHAUSTED"
                | "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
                | "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE"
                | "RESOURCE_NOT_READY"
                | "INTERNAL_ERROR"
                | "SERVICE_UNAVAILABLE"
                | "RESOURCE_OPERATION_RATE_EXCEEDED" => Class::Transient,
                "PERMISSIONS_ERROR" | "FORBIDDEN" => Class::Unauthorized,
                _ => Class::Terminal,
            },
            GcpError::Transport { .. } | GcpError::StillRunning { .. } => Class::Transient,
            GcpError::OverBudget { .. } => Class::Throttled,
            GcpError::Invalid { .. } => Class::Terminal,
            GcpError::Credentials { .. } => Class::Unauthorized,
        }
    }

    /// The pause the cloud asked for (or the default one), for throttled errors.
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        match self {
            GcpError::Api {
                retry_after: Some(d),
                ..
            } => *d,
            GcpError::OverBudget { retry_after, .. } => *retry_after,
            _ => DEFAULT_RETRY_AFTER,
        }
    }
}

impl From<GcpError> for ProviderError {
    fn from(e: GcpError) -> Self {
        let text = e.to_string();
        let out = match e.class() {
            Class::Throttled => ProviderError::throttled(e.retry_after(), text),
            Class::Quota => ProviderError::quota_exceeded(text),
            Class::Unauthorized => ProviderError::unauthorized(text),
            Class::Terminal => ProviderError::terminal(text),
            Class::NotFound | Class::AlreadyExists | Class::Transient => {
                ProviderError::retryable(text)
            }
        };
        out.with_source(e)
    }
}

/// The `(reason, message)` of a Compute Engine error body, if it is one.
#[must_use]
pub fn parse_error_body(body: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    let message = err
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    let reason = err
        .get("errors")
        .and_then(|e| e.get(0))
        .and_then(|e| e.get("reason"))
        .and_then(|r| r.as_str())
        .or_else(|| err.get("status").and_then(|s| s.as_str()))
        .unwrap_or_default()
        .to_string();
    Some((reason, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, reason: &str) -> GcpError {
        GcpError::Api {
            op: "Instances.Insert".into(),
            status,
            reason: reason.into(),
            message: "m".into(),
            retry_after: None,
        }
    }

    #[test]
    fn reasons_decide_the_class() {
        assert_eq!(api(403, "rateLimitExceeded").class(), Class::Throttled);
        assert_eq!(api(429, "").class(), Class::Throttled);
        assert_eq!(api(403, "quotaExceeded").class(), Class::Quota);
        assert_eq!(api(403, "forbidden").class(), Class::Unauthorized);
        assert_eq!(api(401, "authError").class(), Class::Unauthorized);
        assert_eq!(api(404, "notFound").class(), Class::NotFound);
        assert_eq!(api(409, "alreadyExists").class(), Class::AlreadyExists);
        assert_eq!(
            api(400, "resourceInUseByAnotherResource").class(),
            Class::Transient
        );
        assert_eq!(api(400, "invalid").class(), Class::Terminal);
        assert_eq!(api(503, "backendError").class(), Class::Transient);
        let p: ProviderError = api(403, "quotaExceeded").into();
        assert_eq!(p.reason(), "QuotaExceeded");
        let p: ProviderError = api(403, "rateLimitExceeded").into();
        assert_eq!(p.retry_after(), Some(DEFAULT_RETRY_AFTER));
    }

    #[test]
    fn error_bodies_are_read() {
        let b = br#"{"error":{"code":403,"message":"Rate Limit Exceeded","errors":[{"reason":"rateLimitExceeded","message":"Rate Limit Exceeded","domain":"usageLimits"}]}}"#;
        assert_eq!(
            parse_error_body(b),
            Some(("rateLimitExceeded".into(), "Rate Limit Exceeded".into()))
        );
        assert_eq!(parse_error_body(b"<html>"), None);
    }
}
