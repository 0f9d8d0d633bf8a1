//! Where the engine's randomness comes from: machine names, idempotency tokens, cluster ids
//! and the jitter of resyncs and backoffs.
//!
//! Without a seed (production) names, tokens and ids are random and jitter is seeded from
//! the wall clock, so engines spread out. With [`EngineConfig::seed`](super::EngineConfig)
//! every value is a hash of the seed and of what it is for (the cluster, the pool, the
//! failure count, the engine clock's time), never of the order in which concurrent workers
//! happen to ask: a failing seed replays exactly on the simulated cloud.

use sha2::{Digest, Sha256};

use crate::provider::ClusterId;

/// The engine's source of names, tokens, ids and jitter.
#[derive(Debug)]
pub(crate) struct Randomness {
    seed: Option<u64>,
    fallback: u64,
}

impl Randomness {
    /// Seeded (deterministic) or not (`fallback` seeds the jitter).
    pub(crate) fn new(seed: Option<u64>, fallback: u64) -> Self {
        Randomness { seed, fallback }
    }

    fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.seed.unwrap_or(self.fallback).to_le_bytes());
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.finalize().into()
    }

    /// A number in [0, 1) for `cluster` and `salt` (a failure count, a time).
    pub(crate) fn unit(&self, cluster: ClusterId, salt: u64) -> f64 {
        let h = self.hash(&[cluster.0.as_bytes(), &salt.to_le_bytes()]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[..8]);
        (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A UUID for `parts`: random without a seed, derived from seed and parts with one.
    pub(crate) fn uuid(&self, parts: &[&[u8]]) -> uuid::Uuid {
        if self.seed.is_none() {
            return uuid::Uuid::new_v4();
        }
        let h = self.hash(parts);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }

    /// Six hex characters for the `attempt`-th candidate machine name of a pool.
    pub(crate) fn name_suffix(&self, cluster: ClusterId, pool: &str, attempt: u64) -> String {
        let u = self.uuid(&[
            cluster.0.as_bytes(),
            pool.as_bytes(),
            &attempt.to_le_bytes(),
        ]);
        u.simple().to_string()[..6].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_values_repeat_and_differ_by_purpose() {
        let c = ClusterId(uuid::Uuid::nil());
        let (a, b) = (Randomness::new(Some(7), 1), Randomness::new(Some(7), 2));
        assert_eq!(a.name_suffix(c, "w", 0), b.name_suffix(c, "w", 0));
        assert_ne!(a.name_suffix(c, "w", 0), a.name_suffix(c, "w", 1));
        assert_eq!(a.unit(c, 3), b.unit(c, 3));
        assert!((0.0..1.0).contains(&a.unit(c, 3)));
        let other = Randomness::new(Some(8), 1);
        assert_ne!(a.uuid(&[b"x"]), other.uuid(&[b"x"]));
        // Unseeded: random names.
        let r = Randomness::new(None, 1);
        assert_ne!(r.uuid(&[b"x"]), r.uuid(&[b"x"]));
    }
}
