//! Secret values (cloud credentials, keys) that never show up in Debug output, logs, events
//! or errors.
//!
//! A [`Secret`] prints as `***` through `Debug` and `Display`, and serializes as `***` too,
//! unless serialization runs inside [`with_secrets_revealed`]: the stores use that scope to
//! persist the real value, everything else (logs, events, API answers) sees the placeholder.
//!
//! ```
//! use spectro_core::secret::{with_secrets_revealed, Secret};
//!
//! let key = Secret::new("wJalrXUtnFEMI/K7MDENG");
//! assert_eq!(format!("{key} {key:?}"), "*** Secret(***)");
//! assert_eq!(serde_json::to_string(&key).unwrap(), r#""***""#);
//! // Only a store's write scope serializes the value, and only a cloud call reads it.
//! assert_eq!(with_secrets_revealed(|| serde_json::to_string(&key).unwrap()), r#""wJalrXUtnFEMI/K7MDENG""#);
//! assert_eq!(key.expose(), "wJalrXUtnFEMI/K7MDENG");
//! ```

use std::cell::Cell;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text a redacted secret shows.
pub const REDACTED: &str = "***";

thread_local! {
    static REVEAL: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` with secrets serialized in clear: only for writing them to a store.
pub fn with_secrets_revealed<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            REVEAL.with(|r| r.set(r.get() - 1));
        }
    }
    REVEAL.with(|r| r.set(r.get() + 1));
    let _guard = Guard;
    f()
}

fn revealing() -> bool {
    REVEAL.with(|r| r.get() > 0)
}

/// A secret string: a password, a secret access key, a service-account key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear value: call it only where the value is handed to a cloud API.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no value was given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the value is the redaction placeholder, i.e. it came from a redacted copy.
    #[must_use]
    pub fn is_placeholder(&self) -> bool {
        self.0 == REDACTED
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if revealing() {
            s.serialize_str(&self.0)
        } else {
            s.serialize_str(REDACTED)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "writeOnly": true,
            "description": "A secret value; it is never shown back (it reads as ***)."
        })
    }
}

/// Hides the password of a `scheme://user:password@host` URL, e.g. a proxy URL.
#[must_use]
pub fn redact_url_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            format!(
                "{}://{}:{}@{}",
                &url[..scheme_end],
                user,
                REDACTED,
                &rest[at + 1..]
            )
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        let clear = with_secrets_revealed(|| serde_json::to_string(&s).unwrap());
        assert_eq!(clear, "\"hunter2\"");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    }

    #[test]
    fn proxy_password_hidden() {
        assert_eq!(
            redact_url_userinfo("http://bob:pw@10.0.0.1:3128/x"),
            "http://bob:***@10.0.0.1:3128/x"
        );
        assert_eq!(
            redact_url_userinfo("http://10.0.0.1:3128"),
            "http://10.0.0.1:3128"
        );
    }
}
