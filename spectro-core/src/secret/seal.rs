//! Secrets at rest: every secret field is sealed (AES-256-GCM) before it reaches a store.
//!
//! A [`Keyring`] holds the current key (it seals) and older keys (they still open what they
//! sealed, until [`Engine::reseal_secrets`](crate::engine::Engine::reseal_secrets) has
//! re-sealed everything with the current one). A sealed value is the string
//! `$sealed:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`; its associated data is the
//! stored object's scope (e.g. `cloudAccount/prod`, `cluster/<id>/spec`) and the field's JSON
//! pointer, so a ciphertext copied to another row or another field does not open.
//!
//! Which fields are secret is declared by their type: a [`Secret`](super::Secret), or a
//! string field serialized with [`sensitive_str`](super::sensitive_str) (proxy URLs, which may
//! carry a password). A store serializes its documents inside a *marking* scope where those
//! fields come out tagged; [`SecretCodec`] then seals each tagged string in place.
//!
//! ```
//! use spectro_core::secret::Keyring;
//!
//! let ring = Keyring::from_keys(&[[1; 32], [2; 32]]).unwrap();
//! let sealed = ring.seal("cloudAccount/prod#/credentials/aws/secretAccessKey", "s3cr3t");
//! assert!(sealed.starts_with("$sealed:v1:"));
//! assert!(!sealed.contains("s3cr3t"));
//! assert_eq!(ring.open("cloudAccount/prod#/credentials/aws/secretAccessKey", &sealed).unwrap(), "s3cr3t");
//! // Moved to another row: refused.
//! assert!(ring.open("cloudAccount/test#/credentials/aws/secretAccessKey", &sealed).is_err());
//! ```

use std::fmt;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// The prefix of a sealed value.
pub const SEALED_PREFIX: &str = "$sealed:v1:";

/// The tag a secret carries inside a store's marking scope (never stored: it is sealed).
pub(crate) const MARK: &str = "\u{1}spectro-secret\u{1}";
/// How [`MARK`] reads inside JSON text.
const MARK_JSON: &str = "\\u0001spectro-secret\\u0001";
/// How a sealed value starts inside JSON text.
const SEALED_JSON: &str = "\"$sealed:v1:";

/// One key: its id (public, stored beside each value) and the AEAD key.
struct Key {
    id: String,
    key: LessSafeKey,
}

/// The keys that seal and open secrets at rest: the first seals, all open.
///
/// `Debug` shows key ids only. Build one from raw keys, from base64 text
/// ([`Keyring::parse`]), or let the engine read `SPECTRO_SECRETS_KEY`
/// ([`EnvKeys`](super::EnvKeys)).
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current_id())
            .field("ids", &self.ids())
            .finish()
    }
}

/// The public id of a key: 12 hex digits of a SHA-256 of it (reveals nothing of the key).
#[must_use]
pub fn key_id(key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"spectro secrets key id\0");
    h.update(key);
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Keyring {
    /// A keyring from raw 32-byte keys: the first is the current key (it seals), the others
    /// only open. Fails when empty.
    pub fn from_keys(keys: &[[u8; 32]]) -> Result<Self> {
        if keys.is_empty() {
            return Err(secrets("a keyring needs at least one key"));
        }
        let keys = keys
            .iter()
            .map(|k| {
                let unbound = UnboundKey::new(&AES_256_GCM, k)
                    .map_err(|_| secrets("an AES-256 key must be 32 bytes"))?;
                Ok(Key {
                    id: key_id(k),
                    key: LessSafeKey::new(unbound),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Keyring { keys })
    }

    /// Parses standard base64 keys (32 bytes each) separated by commas, spaces or new lines;
    /// lines starting with `#` are comments. The first key is the current one. `origin` names
    /// where the text came from, for errors (which never quote the text).
    pub fn parse(origin: &str, text: &str) -> Result<Self> {
        let mut keys = Vec::new();
        for (i, word) in text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(word)
                .map_err(|_| {
                    secrets(format!("{origin}: key {}: must be standard base64", i + 1))
                })?;
            let key: [u8; 32] = bytes.try_into().map_err(|v: Vec<u8>| {
                secrets(format!(
                    "{origin}: key {}: must be 32 bytes once decoded, got {}",
                    i + 1,
                    v.len()
                ))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(secrets(format!(
                "{origin}: no key (expected base64 of 32 random bytes, e.g. `openssl rand -base64 32`)"
            )));
        }
        Keyring::from_keys(&keys)
    }

    /// A keyring of one fresh random key.
    pub fn random() -> Result<Self> {
        Keyring::from_keys(&[random_key()?])
    }

    /// The id of the key that seals.
    #[must_use]
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The ids of every key, the current one first.
    #[must_use]
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// True when the keyring holds the key `id`.
    #[must_use]
    pub fn has(&self, id: &str) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Seals `clear` with the current key, bound to `aad` (scope and field path).
    #[must_use]
    pub fn seal(&self, aad: &str, clear: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // The OS's random source; on the (never seen) failure, a v4 UUID's 122 random bits.
        if getrandom::fill(&mut nonce).is_err() {
            nonce.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..NONCE_LEN]);
        }
        let mut buf = clear.as_bytes().to_vec();
        // Sealing in memory only fails for inputs over ~64 GiB.
        let _ = key.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!(
            "{SEALED_PREFIX}{}:{}",
            key.id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        )
    }

    /// Opens a sealed value bound to `aad`.
    pub fn open(&self, aad: &str, sealed: &str) -> Result<String> {
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| secrets(format!("{aad}: not a sealed value")))?;
        let (id, data) = rest
            .split_once(':')
            .ok_or_else(|| secrets(format!("{aad}: malformed sealed value")))?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| {
            secrets(format!(
                "{aad} is sealed with key {id}, which is not configured (keys here: {}): \
                 set SPECTRO_SECRETS_KEY to the key list that includes it",
                self.ids().join(", ")
            ))
        })?;
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| secrets(format!("{aad}: malformed sealed value")))?;
        if bytes.len() < NONCE_LEN {
            return Err(secrets(format!("{aad}: malformed sealed value")));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let clear = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_bytes()),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| {
                secrets(format!(
                    "{aad}: the sealed value does not open here (tampered with, or copied from \
                     another object or field)"
                ))
            })?;
        String::from_utf8(clear.to_vec())
            .map_err(|_| secrets(format!("{aad}: the sealed value is not text")))
    }
}

/// 32 bytes from the OS's random source.
pub(crate) fn random_key() -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| secrets(format!("no random source for a key: {e}")))?;
    Ok(k)
}

pub(crate) fn secrets(reason: impl Into<String>) -> CoreError {
    CoreError::Secrets {
        reason: reason.into(),
    }
}

/// The id of the key a sealed value names, if it is one.
#[must_use]
pub fn sealed_key_id(v: &str) -> Option<&str> {
    v.strip_prefix(SEALED_PREFIX)?
        .split_once(':')
        .map(|(id, _)| id)
}

/// A store's sealing codec: serializes documents with their secret fields sealed, and opens
/// them when reading. Shared by every store implementation; set once with the engine's
/// keyring (a store used without an engine has none, and refuses to store a marked secret).
#[derive(Default)]
pub struct SecretCodec {
    keyring: RwLock<Option<Arc<Keyring>>>,
}

impl fmt::Debug for SecretCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCodec")
            .field("keyring", &self.keyring())
            .finish()
    }
}

impl SecretCodec {
    /// Seals and opens with `keyring` from now on.
    pub fn set_keyring(&self, keyring: Arc<Keyring>) {
        if let Ok(mut k) = self.keyring.write() {
            *k = Some(keyring);
        }
    }

    /// The keyring in use.
    #[must_use]
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring.read().ok().and_then(|k| k.clone())
    }

    /// `v` as JSON text with every secret field sealed, bound to `scope` (e.g.
    /// `cloudAccount/prod`).
    pub fn encode<T: Serialize + ?Sized>(&self, scope: &str, v: &T) -> Result<String> {
        let text = super::with_secrets_marked(|| serde_json::to_string(v)).map_err(|source| {
            CoreError::Corrupt {
                what: "document",
                source,
            }
        })?;
        if text.contains(SEALED_JSON) {
            // A plain value that reads as sealed would not open on the way back: refused.
            let mut value: Value =
                serde_json::from_str(&text).map_err(|source| CoreError::Corrupt {
                    what: "document",
                    source,
                })?;
            let mut path = String::new();
            let mut found = Vec::new();
            let _ = walk(&mut value, &mut path, &mut |path, s| {
                if s.starts_with(SEALED_PREFIX) {
                    found.push(crate::validate::Violation::new(
                        path,
                        format!(
                            "must not start with `{SEALED_PREFIX}` (reserved for sealed secrets)"
                        ),
                    ));
                }
                Ok(())
            });
            return Err(CoreError::Invalid {
                kind: scope.to_string(),
                violations: found,
            });
        }
        if !text.contains(MARK_JSON) {
            return Ok(text);
        }
        let keyring = self.keyring().ok_or_else(|| {
            secrets(format!(
                "{scope}: no secrets key is configured, and a secret is never stored in clear \
                 (give the engine a keyring, or set SPECTRO_SECRETS_KEY)"
            ))
        })?;
        let mut value: Value =
            serde_json::from_str(&text).map_err(|source| CoreError::Corrupt {
                what: "document",
                source,
            })?;
        let mut path = String::new();
        walk(&mut value, &mut path, &mut |path, s| {
            if let Some(clear) = s.strip_prefix(MARK) {
                *s = keyring.seal(&format!("{scope}#{path}"), clear);
            }
            Ok(())
        })?;
        serde_json::to_string(&value).map_err(|source| CoreError::Corrupt {
            what: "document",
            source,
        })
    }

    /// Reads JSON text written by [`SecretCodec::encode`] under the same `scope`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        what: &'static str,
        scope: &str,
        text: &str,
    ) -> Result<T> {
        if !text.contains(SEALED_JSON) {
            return serde_json::from_str(text)
                .map_err(|source| CoreError::Corrupt { what, source });
        }
        let mut value: Value =
            serde_json::from_str(text).map_err(|source| CoreError::Corrupt { what, source })?;
        self.open_value(scope, &mut value)?;
        serde_json::from_value(value).map_err(|source| CoreError::Corrupt { what, source })
    }

    /// Opens every sealed string of `value` in place.
    pub fn open_value(&self, scope: &str, value: &mut Value) -> Result<()> {
        let keyring = self.keyring();
        let mut path = String::new();
        walk(value, &mut path, &mut |path, s| {
            if s.starts_with(SEALED_PREFIX) {
                let keyring = keyring.as_ref().ok_or_else(|| {
                    secrets(format!(
                        "{scope} holds secrets sealed with key {}, and no secrets key is \
                         configured: set SPECTRO_SECRETS_KEY",
                        sealed_key_id(s).unwrap_or("?")
                    ))
                })?;
                *s = keyring.open(&format!("{scope}#{path}"), s)?;
            }
            Ok(())
        })
    }

    /// The key ids the sealed strings of stored JSON `text` name (inspection tools, tests).
    #[must_use]
    pub fn key_ids_in(text: &str) -> Vec<String> {
        let mut ids: Vec<String> = text
            .match_indices(SEALED_JSON)
            .filter_map(|(i, _)| {
                let rest = &text[i + SEALED_JSON.len()..];
                rest.split_once(':').map(|(id, _)| id.to_string())
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// Visits every string of `v` with its JSON pointer (RFC 6901).
fn walk(
    v: &mut Value,
    path: &mut String,
    f: &mut dyn FnMut(&str, &mut String) -> Result<()>,
) -> Result<()> {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                walk(item, path, f)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                walk(item, path, f)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Doc {
        name: String,
        key: Secret,
        #[serde(serialize_with = "crate::secret::sensitive_str")]
        proxy: String,
        list: Vec<Secret>,
    }

    fn doc() -> Doc {
        Doc {
            name: "prod".into(),
            key: Secret::new("planted-key-1"),
            proxy: "http://u:planted-pw-2@p:3128".into(),
            list: vec![Secret::new("planted-3")],
        }
    }

    #[test]
    fn sealed_fields_round_trip_and_never_show() {
        let codec = SecretCodec::default();
        codec.set_keyring(Arc::new(Keyring::from_keys(&[[9; 32]]).unwrap()));
        let text = codec.encode("cloudAccount/prod", &doc()).unwrap();
        for planted in [
            "planted-key-1",
            "planted-pw-2",
            "planted-3",
            "spectro-secret",
        ] {
            assert!(!text.contains(planted), "{planted} in {text}");
        }
        assert!(text.contains("\"name\":\"prod\""));
        assert_eq!(SecretCodec::key_ids_in(&text), vec![key_id(&[9; 32])]);
        let back: Doc = codec.decode("doc", "cloudAccount/prod", &text).unwrap();
        assert_eq!(back.key.expose(), "planted-key-1");
        assert_eq!(back.proxy, "http://u:planted-pw-2@p:3128");
        assert_eq!(back.list[0].expose(), "planted-3");
        // Outside a store's scope: redacted (a URL keeps everything but its password).
        let plain = serde_json::to_string(&doc()).unwrap();
        assert!(plain.contains("\"key\":\"***\"") && plain.contains("http://u:***@p:3128"));
        assert!(!plain.contains("planted-pw-2"));
    }

    #[test]
    fn a_value_moved_to_another_row_or_field_does_not_open() {
        let codec = SecretCodec::default();
        codec.set_keyring(Arc::new(Keyring::from_keys(&[[9; 32]]).unwrap()));
        let text = codec.encode("cloudAccount/prod", &doc()).unwrap();
        let err = codec
            .decode::<Doc>("doc", "cloudAccount/test", &text)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("copied from another object or field"),
            "{err}"
        );
        // Swap two fields of the same row.
        let mut v: Value = serde_json::from_str(&text).unwrap();
        let key = v["key"].clone();
        v["list"][0] = key;
        let err = codec
            .decode::<Doc>("doc", "cloudAccount/prod", &v.to_string())
            .unwrap_err();
        assert!(err.to_string().contains("/list/0"), "{err}");
    }

    #[test]
    fn without_a_key_nothing_is_stored_in_clear_and_nothing_sealed_opens() {
        let codec = SecretCodec::default();
        let err = codec.encode("cloudAccount/prod", &doc()).unwrap_err();
        assert_eq!(err.reason(), "SecretsError");
        assert!(!err.to_string().contains("planted"));
        let sealer = SecretCodec::default();
        sealer.set_keyring(Arc::new(Keyring::from_keys(&[[9; 32]]).unwrap()));
        let text = sealer.encode("a", &doc()).unwrap();
        let err = codec.decode::<Doc>("doc", "a", &text).unwrap_err();
        assert!(
            err.to_string().contains("no secrets key is configured"),
            "{err}"
        );
    }

    #[test]
    fn a_plain_value_that_reads_as_sealed_is_refused() {
        let codec = SecretCodec::default();
        codec.set_keyring(Arc::new(Keyring::from_keys(&[[9; 32]]).unwrap()));
        let mut d = doc();
        d.name = format!("{SEALED_PREFIX}x:y");
        let err = codec.encode("cloudAccount/prod", &d).unwrap_err();
        assert_eq!(err.reason(), "Invalid");
        assert!(err.to_string().contains("/name"), "{err}");
    }

    #[test]
    fn rotation_old_keys_open_the_new_key_seals() {
        let old = SecretCodec::default();
        old.set_keyring(Arc::new(Keyring::from_keys(&[[1; 32]]).unwrap()));
        let text = old.encode("a", &doc()).unwrap();
        let new = SecretCodec::default();
        new.set_keyring(Arc::new(Keyring::from_keys(&[[2; 32], [1; 32]]).unwrap()));
        let back: Doc = new.decode("doc", "a", &text).unwrap();
        let again = new.encode("a", &back).unwrap();
        assert_eq!(SecretCodec::key_ids_in(&again), vec![key_id(&[2; 32])]);
        let only_new = SecretCodec::default();
        only_new.set_keyring(Arc::new(Keyring::from_keys(&[[2; 32]]).unwrap()));
        let err = only_new.decode::<Doc>("doc", "a", &text).unwrap_err();
        assert!(err.to_string().contains(&key_id(&[1; 32])), "{err}");
    }

    #[test]
    fn key_text_errors_name_the_rule_never_the_text() {
        let err = Keyring::parse("SPECTRO_SECRETS_KEY", "not base64!").unwrap_err();
        assert!(err
            .to_string()
            .contains("SPECTRO_SECRETS_KEY: key 1: must be standard base64"));
        assert!(!err.to_string().contains("not base64!"));
        let short = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
        let err = Keyring::parse("f", &short).unwrap_err();
        assert!(
            err.to_string()
                .contains("must be 32 bytes once decoded, got 16"),
            "{err}"
        );
        let two = format!(
            "# keys\n{}\n{}\n",
            base64::engine::general_purpose::STANDARD.encode([2u8; 32]),
            base64::engine::general_purpose::STANDARD.encode([1u8; 32])
        );
        let ring = Keyring::parse("f", &two).unwrap();
        assert_eq!(ring.ids(), vec![key_id(&[2; 32]), key_id(&[1; 32])]);
        assert!(!format!("{ring:?}").contains(&two[7..20]));
    }
}
