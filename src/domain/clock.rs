//! Where "now" comes from: a tiny trait, so the store and the use cases take
//! times from one injected clock instead of reading the system time themselves.

use chrono::{DateTime, Utc};

/// A source of the current time (the system clock, or a fixed one in tests).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock: the default everywhere outside tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
