//! How fast `$batch` sends: batches in flight and items per second, learned
//! from the tenant's answers (no tuning): unpaced until the first 429; then,
//! once per second, the share of the items offered that got through gives the
//! rate the tenant allows, and the pace goes just under it, probing slowly
//! above while nothing is throttled; fewer batches in flight on 429s, no growth
//! when `x-ms-throttle-limit-percentage` approaches 1, a slow-down at 1.

use std::time::{Duration, Instant};

/// The lowest pace (items per second) a 429 can set: one full envelope a second.
const MIN_RATE: f64 = 20.0;
/// The pace is set this far under the rate the tenant was seen to allow.
const BACK_OFF: f64 = 0.95;
/// A throttled second cuts a known pace to at least this share of it...
const CUT_MOST: f64 = 0.9;
/// ...and at most this share.
const CUT_LEAST: f64 = 0.97;
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
/// How long one measurement lasts (Graph's limits are per second or longer),
/// and one cut of the window per this long (the batches in flight during a 429
/// all report it).
const PERIOD: Duration = Duration::from_secs(1);
/// A ceiling learned this long ago is forgotten (the tenant's other load
/// changes): the rate recovers fast again until the next 429.
const FORGET: Duration = Duration::from_secs(30);

/// The sending pace shared by every `batch` call of one client.
#[derive(Debug)]
pub(super) struct Pace {
    /// Upper bound of `window` (`max_concurrency`).
    max: usize,
    /// Batches allowed in flight.
    window: f64,
    /// Items per second; `None` until Graph first throttles.
    rate: Option<f64>,
    /// The rate the tenant was last seen to allow (or the pace throttled at).
    ceiling: f64,
    /// When the next batch may leave.
    next: Option<Instant>,
    /// The current measurement: its start, items sent, answered, throttled,
    /// and the highest `x-ms-throttle-limit-percentage`.
    start: Option<Instant>,
    sent: usize,
    ok: usize,
    throttled: usize,
    pct: f64,
    /// The last cut of the window.
    last_cut: Option<Instant>,
    /// When `ceiling` was learned.
    learned: Option<Instant>,
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
            start: None,
            sent: 0,
            ok: 0,
            throttled: 0,
            pct: 0.0,
            last_cut: None,
            learned: None,
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

    /// When the next batch may leave (now or later).
    pub(super) fn slot(&self, now: Instant) -> Instant {
        self.next.map_or(now, |n| n.max(now))
    }

    /// Takes the slot of a batch of `items` leaving at `at`.
    pub(super) fn take(&mut self, at: Instant, items: usize) {
        self.start.get_or_insert(at);
        self.sent += items;
        if let Some(r) = self.rate {
            self.next = Some(at + Duration::from_secs_f64(items as f64 / r));
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
        self.ok += ok;
        self.throttled += throttled;
        let pct = limit_pct.unwrap_or(0.0);
        self.pct = self.pct.max(pct);
        if throttled > 0
            && self
                .last_cut
                .is_none_or(|t| now.duration_since(t) >= PERIOD)
        {
            self.last_cut = Some(now);
            self.window = (self.window * 0.75).max(1.0);
        }
        let start = *self.start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        if elapsed >= PERIOD {
            self.measure(now, elapsed.as_secs_f64());
        }
        if ok == 0 || throttled > 0 || self.throttled > 0 || pct >= NEAR_LIMIT {
            return;
        }
        if self
            .learned
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

    /// Ends a measurement: when Graph throttled (or said the limit is reached),
    /// the rate offered times the share that got through is what it allows.
    fn measure(&mut self, now: Instant, secs: f64) {
        let offered = self.sent as f64 / secs;
        let answered = self.ok + self.throttled;
        if self.throttled > 0 && answered > 0 {
            // What got through of what was offered; pauses between calls make
            // it an underestimate, so a known pace is cut by 3% to 10% only.
            let allowed = (offered * self.ok as f64 / answered as f64).max(MIN_RATE);
            let (rate, ceiling) = match self.rate {
                None => (allowed * BACK_OFF, allowed),
                Some(r) => ((allowed * BACK_OFF).clamp(r * CUT_MOST, r * CUT_LEAST), r),
            };
            self.ceiling = ceiling;
            self.learned = Some(now);
            self.rate = Some(rate.max(MIN_RATE));
        } else if self.pct >= AT_LIMIT {
            let r = self.rate.map_or(offered, |r| r.min(offered));
            self.rate = Some((r * BACK_OFF).max(MIN_RATE));
        }
        self.start = Some(now);
        self.sent = 0;
        self.ok = 0;
        self.throttled = 0;
        self.pct = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn unpaced_until_throttled_then_just_under_the_share_that_got_through() {
        let t0 = Instant::now();
        let mut p = Pace::new(4);
        assert_eq!(p.rate(), None);
        // 400 items offered in the first second, half of them throttled.
        for k in 0..20 {
            p.take(ms(t0, 50 * k), 20);
            assert_eq!(
                p.slot(ms(t0, 50 * k)),
                ms(t0, 50 * k),
                "no pace before a 429"
            );
        }
        for k in 0..10 {
            p.answered(ms(t0, 50 * k + 40), 20, 0, None);
        }
        for k in 10..19 {
            p.answered(ms(t0, 50 * k + 40), 0, 20, None);
        }
        assert_eq!(p.window(), 3, "one cut of the window per second");
        assert_eq!(p.rate(), None, "measured once a second");
        p.answered(ms(t0, 1000), 0, 20, None);
        let r = p.rate().unwrap_or(0.0);
        assert!((r - 200.0 * BACK_OFF).abs() < 1e-6, "{r}");
        p.take(ms(t0, 1000), 19);
        assert_eq!(p.slot(ms(t0, 1000)), ms(t0, 1100));
        // A throttled second with a pause in it (50 items offered, 40 through):
        // a known pace is cut by 10% at most, and recovers to just under it.
        p.take(ms(t0, 1100), 50);
        p.answered(ms(t0, 1500), 40, 10, None);
        p.answered(ms(t0, 2000), 0, 0, None);
        let cut = p.rate().unwrap_or(0.0);
        assert!((cut - r * CUT_MOST).abs() < 1e-6, "{cut}");
        p.take(ms(t0, 2000), 20);
        p.answered(ms(t0, 2100), 20, 0, None);
        assert!((p.rate().unwrap_or(0.0) - cut * RECOVER).abs() < 1e-6);
    }

    #[test]
    fn recovers_fast_below_the_ceiling_probes_slowly_above_forgets_it_later() {
        let t0 = Instant::now();
        let mut p = Pace::new(16);
        p.take(t0, 400);
        p.answered(ms(t0, 500), 200, 0, None);
        p.answered(ms(t0, 1000), 0, 200, None);
        let start = p.rate().unwrap_or(0.0);
        assert!((start - 190.0).abs() < 1e-6, "{start}");
        p.answered(ms(t0, 1100), 20, 0, None);
        assert!((p.rate().unwrap_or(0.0) / start - RECOVER).abs() < 1e-9);
        for k in 0..100 {
            p.answered(ms(t0, 1200 + k), 20, 0, None);
        }
        let high = p.rate().unwrap_or(0.0);
        // Fast steps while under 0.97 x 200, then slow ones.
        let slow = 190.0 * RECOVER * RECOVER * PROBE.powi(99);
        assert!((high - slow).abs() < 1e-6, "{high} {slow}");
        assert_eq!(p.window(), 16, "the window grows back to max_concurrency");
        // Long after the 429, the ceiling is forgotten and growth is fast again.
        p.answered(t0 + FORGET + PERIOD * 2, 20, 0, None);
        let later = p.rate().unwrap_or(0.0);
        assert!((later / high - RECOVER).abs() < 1e-9, "{later} {high}");
    }

    #[test]
    fn throttle_limit_percentage_stops_growth_then_slows_down() {
        let t0 = Instant::now();
        let mut p = Pace::new(8);
        p.take(t0, 400);
        p.answered(ms(t0, 1000), 200, 200, None);
        let r = p.rate().unwrap_or(0.0);
        let w = p.window();
        p.take(ms(t0, 1000), 100);
        p.answered(ms(t0, 1500), 20, 0, Some(0.95));
        assert_eq!(p.rate(), Some(r), "no growth near the limit");
        assert_eq!(p.window(), w);
        p.answered(ms(t0, 2000), 20, 0, Some(1.02));
        assert!(p.rate().unwrap_or(f64::MAX) < r, "slows down at the limit");
    }
}
