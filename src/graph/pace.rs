//! How fast `$batch` sends: batches in flight and items per second, learned
//! from the tenant's answers (no tuning): unpaced until the first 429, then
//! just under the rate that was getting through when Graph said "too many",
//! probing slowly above it while nothing is throttled; fewer batches in flight
//! on 429s and when `x-ms-throttle-limit-percentage` approaches 1.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The lowest pace (items per second) a 429 can set: one full envelope a
/// second; a 429 on the very first items says little about the rate allowed.
const MIN_RATE: f64 = 20.0;
/// Below the rate seen at a 429, to let Graph's window drain.
const BACK_OFF: f64 = 0.9;
/// Up to this share of the learned ceiling the rate recovers quickly...
const NEAR: f64 = 0.97;
/// ...by this factor per clean batch;
const RECOVER: f64 = 1.02;
/// above it, it probes slowly (about +0.5%/s at 10 batches per second).
const PROBE: f64 = 1.0005;
/// `x-ms-throttle-limit-percentage` from which the pace stops growing...
const NEAR_LIMIT: f64 = 0.9;
/// ...and from which it slows down as for a 429.
const AT_LIMIT: f64 = 1.0;
/// A ceiling learned this long ago is forgotten (the tenant's other load
/// changes): the rate recovers fast again until the next 429.
const FORGET: Duration = Duration::from_secs(30);
/// One reaction per this long: the batches in flight during a 429 all report it.
const CALM: Duration = Duration::from_secs(1);

/// The sending pace shared by every `batch` call of one client.
#[derive(Debug)]
pub(super) struct Pace {
    /// Upper bound of `window` (`max_concurrency`).
    max: usize,
    /// Batches allowed in flight.
    window: f64,
    /// Items per second; `None` until Graph first throttles.
    rate: Option<f64>,
    /// The rate that was getting through at the last 429.
    ceiling: f64,
    /// When the next batch may leave.
    next: Option<Instant>,
    /// Items answered (not throttled) in the last second, by arrival.
    recent: VecDeque<(Instant, usize)>,
    /// The last slow-down (when `ceiling` was learned).
    last_cut: Option<Instant>,
}

impl Pace {
    /// A pace that starts at `max` batches in flight, unpaced.
    pub(super) fn new(max: usize) -> Pace {
        Pace {
            max: max.max(1),
            window: max.max(1) as f64,
            rate: None,
            ceiling: f64::INFINITY,
            next: None,
            recent: VecDeque::new(),
            last_cut: None,
        }
    }

    /// Batches allowed in flight now.
    pub(super) fn window(&self) -> usize {
        (self.window.floor() as usize).clamp(1, self.max)
    }

    /// Items per second, once learned.
    pub(super) fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// When a batch of `items` may leave (now or later).
    pub(super) fn slot(&self, now: Instant) -> Instant {
        self.next.map_or(now, |n| n.max(now))
    }

    /// Takes the slot of a batch of `items` leaving at `at`.
    pub(super) fn take(&mut self, at: Instant, items: usize) {
        if let Some(r) = self.rate {
            self.next = Some(at + Duration::from_secs_f64(items as f64 / r));
        }
    }

    fn forget(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
    }

    /// Learns from one batch's answer: `ok` items got through, `throttled`
    /// got 429, `limit_pct` is the highest `x-ms-throttle-limit-percentage` seen.
    pub(super) fn answered(
        &mut self,
        now: Instant,
        ok: usize,
        throttled: usize,
        limit_pct: Option<f64>,
    ) {
        self.forget(now);
        if ok > 0 {
            self.recent.push_back((now, ok));
        }
        let pct = limit_pct.unwrap_or(0.0);
        if throttled > 0 || pct >= AT_LIMIT {
            if self.last_cut.is_some_and(|t| now.duration_since(t) < CALM) {
                return;
            }
            self.last_cut = Some(now);
            let through: usize = self.recent.iter().map(|(_, n)| n).sum();
            let seen = (through as f64).max(MIN_RATE);
            self.ceiling = seen;
            let cut = seen * BACK_OFF;
            self.rate = Some(
                self.rate
                    .map_or(cut, |r| (r * BACK_OFF).min(cut))
                    .max(MIN_RATE),
            );
            self.window = (self.window * 0.75).max(1.0);
            return;
        }
        if pct >= NEAR_LIMIT {
            return;
        }
        if self
            .last_cut
            .is_some_and(|t| now.duration_since(t) >= FORGET)
        {
            self.ceiling = f64::INFINITY;
        }
        self.window = (self.window + 1.0 / self.window).min(self.max as f64);
        if let Some(r) = self.rate {
            let f = if r < self.ceiling * NEAR {
                RECOVER
            } else {
                PROBE
            };
            self.rate = Some(r * f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaced_until_throttled_then_just_under_what_got_through() {
        let t0 = Instant::now();
        let mut p = Pace::new(4);
        assert_eq!(p.rate(), None);
        assert_eq!(p.slot(t0), t0);
        p.take(t0, 20);
        assert_eq!(p.slot(t0), t0, "no pace before a 429");
        for k in 0..10 {
            p.answered(t0 + Duration::from_millis(50 * k), 20, 0, None);
        }
        p.answered(t0 + Duration::from_millis(500), 0, 20, None);
        let r = p.rate().unwrap_or(0.0);
        assert!((r - 180.0).abs() < 1e-9, "{r}");
        assert_eq!(p.window(), 3);
        p.take(t0, 18);
        assert_eq!(p.slot(t0), t0 + Duration::from_millis(100));
        // The other batches in flight during that 429 do not cut again.
        p.answered(t0 + Duration::from_millis(600), 0, 20, None);
        assert!((p.rate().unwrap_or(0.0) - 180.0).abs() < 1e-9);
    }

    #[test]
    fn recovers_fast_below_the_ceiling_and_probes_slowly_above() {
        let t0 = Instant::now();
        let mut p = Pace::new(16);
        for k in 0..10 {
            p.answered(t0 + Duration::from_millis(10 * k), 20, 0, None);
        }
        p.answered(t0 + Duration::from_millis(100), 0, 5, None);
        let start = p.rate().unwrap_or(0.0);
        p.answered(t0 + Duration::from_millis(200), 20, 0, None);
        let after = p.rate().unwrap_or(0.0);
        assert!((after / start - RECOVER).abs() < 1e-9);
        for _ in 0..100 {
            p.answered(t0 + Duration::from_millis(300), 20, 0, None);
        }
        let high = p.rate().unwrap_or(0.0);
        assert!(high > 200.0 * NEAR && high < 200.0 * 1.1, "{high}");
        assert_eq!(p.window(), 16, "the window grows back to max_concurrency");
        // Long after the 429, the ceiling is forgotten and growth is fast again.
        p.answered(t0 + FORGET + Duration::from_secs(1), 20, 0, None);
        let later = p.rate().unwrap_or(0.0);
        assert!((later / high - RECOVER).abs() < 1e-9, "{later} {high}");
    }

    #[test]
    fn throttle_limit_percentage_stops_growth_then_slows_down() {
        let t0 = Instant::now();
        let mut p = Pace::new(8);
        for _ in 0..10 {
            p.answered(t0, 20, 0, None);
        }
        p.answered(t0, 0, 1, None);
        let r = p.rate().unwrap_or(0.0);
        let w = p.window();
        p.answered(t0 + Duration::from_secs(2), 20, 0, Some(0.95));
        assert_eq!(p.rate(), Some(r), "no growth near the limit");
        assert_eq!(p.window(), w);
        p.answered(t0 + Duration::from_secs(3), 20, 0, Some(1.02));
        assert!(p.rate().unwrap_or(f64::MAX) < r, "slows down at the limit");
        assert!(p.window() < w.max(2));
    }
}
