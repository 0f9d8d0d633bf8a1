//! The per-cluster agent credential: an HMAC-SHA256 of the cluster id under the engine's
//! agent key. The engine stores nothing per cluster (the key derives every credential), a
//! credential of one cluster is refused for another, and a new key (rotation) changes
//! every credential — the agent packs re-render and are re-applied with the new ones.
//!
//! ```
//! use spectro_core::monitoring::credential::AgentKey;
//! use spectro_core::ClusterId;
//!
//! let key = AgentKey::from_bytes([7; 32]);
//! let (a, b) = (ClusterId::new(), ClusterId::new());
//! let token = key.token(a);
//! assert!(key.verify(a, token.expose()));
//! assert!(!key.verify(b, token.expose()));
//! assert_eq!(format!("{key:?}"), "AgentKey(***)");
//! ```

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::provider::ClusterId;
use crate::secret::Secret;

/// The engine's agent key (32 bytes): keep it with the application's other secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey([u8; 32]);

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentKey(***)")
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent key: {0}")]
pub struct KeyError(String);

impl AgentKey {
    /// A key from its bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AgentKey(bytes)
    }

    /// A key from standard base64 (32 bytes once decoded).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError("must be base64".into()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|v: Vec<u8>| KeyError(format!("must be 32 bytes, got {}", v.len())))?;
        Ok(AgentKey(bytes))
    }

    /// A random key (for an engine whose agents are deployed by itself each run; a restart
    /// with a new key re-applies every agent pack).
    #[must_use]
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(16) {
            chunk.copy_from_slice(&uuid::Uuid::new_v4().into_bytes());
        }
        AgentKey(bytes)
    }

    /// The credential of `cluster`'s agent (URL-safe base64, no padding).
    #[must_use]
    pub fn token(&self, cluster: ClusterId) -> Secret {
        let mac = hmac_sha256(&self.0, format!("spectro-agent:{cluster}").as_bytes());
        Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac))
    }

    /// True when `token` is `cluster`'s credential (compared in constant time).
    #[must_use]
    pub fn verify(&self, cluster: ClusterId, token: &str) -> bool {
        let want = self.token(cluster);
        let (a, b) = (want.expose().as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// HMAC (RFC 2104) over SHA-256.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |b: u8| block.map(|k| k ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2_shape() {
        // RFC 4231 test case 1 uses a 20-byte key; padded with zeros to 32 it is the same
        // HMAC (keys shorter than the block are zero-padded).
        let mut key = [0u8; 32];
        key[..20].copy_from_slice(&[0x0b; 20]);
        let mac = hmac_sha256(&key, b"Hi There");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn keys_parse_with_clear_errors() {
        assert!(AgentKey::from_base64("not base64!").is_err());
        let e = AgentKey::from_base64("AAAA").unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        let k = AgentKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([1u8; 32]))
            .unwrap();
        assert_eq!(k, AgentKey::from_bytes([1; 32]));
    }
}
