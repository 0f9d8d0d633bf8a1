//! Time: one injectable clock for timestamps and timeouts.
//!
//! The default [`TokioClock`] reads wall time as `start + tokio elapsed`, so tests that pause
//! tokio's time (`tokio::time::pause`) move timestamps, machine boot times and timeouts
//! together; [`ManualClock`] is set by hand.
//!
//! This module is the only place that reads the system's clocks: `Utc::now`,
//! `SystemTime::now` and `Instant::now` are denied elsewhere by clippy's
//! `disallowed_methods` (workspace `clippy.toml`). Timestamps come from a [`Clock`];
//! deadlines and timers from [`instant_now`] (tokio's monotonic clock, which paused-time
//! tests advance by hand).

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// Wall time anchored at creation, advanced by tokio's clock (pausable in tests).
#[derive(Debug)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

/// Monotonic now for deadlines and timers: tokio's clock (paused and advanced in tests).
pub fn instant_now() -> tokio::time::Instant {
    #[allow(clippy::disallowed_methods)] // the one place that reads the monotonic clock
    tokio::time::Instant::now()
}

/// Wall time now, from the system: for values that must be real time whatever clock the
/// engine was given (e.g. certificate validity, a fallback seed).
pub fn system_now() -> DateTime<Utc> {
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    Utc::now()
}

impl TokioClock {
    /// A clock reading the real time now.
    #[must_use]
    pub fn new() -> Self {
        TokioClock {
            wall: system_now(),
            start: instant_now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = instant_now().saturating_duration_since(self.start);
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock stopped at `t`.
    #[must_use]
    pub fn new(t: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(t))
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += chrono::Duration::from_std(d).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
