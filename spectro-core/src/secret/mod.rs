//! Secret values (cloud credentials, keys) that never show up in Debug output, logs, events
//! or errors.
//!
//! A [`Secret`] prints as `***` through `Debug` and `Display`, and serializes as `***` too,
//! unless serialization runs inside [`with_secrets_revealed`] (a wire message to a trusted
//! peer) or a store's marking scope ([`with_secrets_marked`]): there a secret is sealed
//! ([`Keyring`], AES-256-GCM) before it is written, so no store holds a secret in clear.
//! Everything else (logs, events, API answers) sees the placeholder.
//!
//! ```
//! use spectro_core::secret::{with_secrets_revealed, Secret};
//!
//! let key = Secret::new("wJalrXUtnFEMI/K7MDENG");
//! assert_eq!(format!("{key} {key:?}"), "*** Secret(***)");
//! assert_eq!(serde_json::to_string(&key).unwrap(), r#""***""#);
//! // Only a message to a trusted peer serializes the value, and only a cloud call reads it.
//! assert_eq!(with_secrets_revealed(|| serde_json::to_string(&key).unwrap()), r#""wJalrXUtnFEMI/K7MDENG""#);
//! assert_eq!(key.expose(), "wJalrXUtnFEMI/K7MDENG");
//! ```

mod keys;
mod seal;

pub use keys::{EnvKeys, KeyFile, KeyProvider, StaticKeys, KEY_VAR};
pub use seal::{key_id, sealed_key_id, Keyring, SecretCodec, SEALED_PREFIX};

use std::cell::Cell;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text a redacted secret shows.
pub const REDACTED: &str = "***";

thread_local! {
    static REVEAL: Cell<u32> = const { Cell::new(0) };
    static MARK: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` with secrets serialized in clear: only for a message to a trusted peer (never
/// for a store: see [`with_secrets_marked`]).
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

/// Runs `f` with secrets serialized *tagged* for a store: the store's [`SecretCodec`] seals
/// every tagged string before it writes (the engine builds stored documents in this scope).
pub fn with_secrets_marked<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            MARK.with(|r| r.set(r.get() - 1));
        }
    }
    MARK.with(|r| r.set(r.get() + 1));
    let _guard = Guard;
    f()
}

fn marking() -> bool {
    MARK.with(|r| r.get() > 0)
}

/// `serialize_with` for a plain string field that may hold a secret (a proxy URL with a
/// password): sealed like a [`Secret`] inside a store's scope, in clear inside
/// [`with_secrets_revealed`], and elsewhere (API answers, logs) with a URL's password
/// replaced by `***` ([`redact_url_userinfo`]).
pub fn sensitive_str<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    if marking() && !v.is_empty() {
        s.serialize_str(&format!("{}{v}", seal::MARK))
    } else if revealing() {
        s.serialize_str(v)
    } else {
        s.serialize_str(&redact_url_userinfo(v))
    }
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
        if marking() {
            s.serialize_str(&format!("{}{}", seal::MARK, self.0))
        } else if revealing() {
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
