//! Test utilities for spectro's own tests and for out-of-tree providers and stores
//! (feature `test-util`).
//!
//! Peers: a test that needs a real peer (moto, vcsim, PostgreSQL, cloud-init, ...) and cannot
//! find it calls [`peer_missing`]. By default that fails the test with the install hint: a
//! missing peer never counts as a pass. A user who wants to run only what their machine has
//! opts out explicitly with `SPECTRO_SKIP_MISSING_PEERS=1`; each skipped test is then recorded
//! (stderr and, when `SPECTRO_SKIP_LOG` names a file, one line appended to it) so the run can
//! say how many tests were skipped.

use std::io::Write;

/// Environment variable that allows tests to skip when a peer is missing.
pub const SKIP_MISSING_PEERS_ENV: &str = "SPECTRO_SKIP_MISSING_PEERS";
/// Environment variable naming the file that collects one line per skipped test.
pub const SKIP_LOG_ENV: &str = "SPECTRO_SKIP_LOG";

/// True when the user opted out of missing peers (`SPECTRO_SKIP_MISSING_PEERS=1`).
#[must_use]
pub fn skipping_allowed() -> bool {
    std::env::var(SKIP_MISSING_PEERS_ENV).is_ok_and(|v| v == "1" || v == "true")
}

/// Reports a missing peer. Panics (the test fails) with `install` as the hint unless the user
/// opted out with `SPECTRO_SKIP_MISSING_PEERS=1`; then records the skip and returns, and the
/// caller returns early.
#[track_caller]
pub fn peer_missing(peer: &str, install: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    if !skipping_allowed() {
        panic!(
            "{peer} is required by {test}: {install} (or set {SKIP_MISSING_PEERS_ENV}=1 to skip tests whose peer is missing)"
        );
    }
    eprintln!("SKIPPED {test}: {peer} missing ({install})");
    if let Ok(path) = std::env::var(SKIP_LOG_ENV) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}\t{peer}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "is required by")]
    fn missing_peer_fails_without_opt_out() {
        if skipping_allowed() {
            panic!("is required by (opt-out set in this environment)");
        }
        peer_missing("nothing", "install nothing");
    }
}
