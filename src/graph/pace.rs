//! How fast `$batch` sends: batches in flight and items per second, learned
//! from the tenant's answers (no tuning): unpaced until the first 429; then,
//! once per second, the share of the items offered that got through gives the
//! rate the tenant allows, and the pace goes just under it, probing slowly
//! above while nothing is throttled. The batches in flight (one count for the
//! whole client, whatever the number of `batch` calls) start at a few and grow
//! while the window is what holds sending back (doubling per round of clean
//! answers until the first 429, then one per round), up to `max_concurrency`; a 429 cuts them by a quarter, but never under
//! what the learned rate needs; `x-ms-throttle-limit-percentage` near 1 stops
//! growth, at 1 it slows down as a 429 does.

use std::time::{Duration, Instant};

/// Batches in flight at the start (or `max_concurrency` when lower).
pub(super) const START_WINDOW: usize = 4;
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
/// A cut leaves the window at least this many times the batches the learned
/// rate keeps in flight (items per second x seconds a batch is in flight per
/// item it carries), so that the rate, not the window, holds sending back.
const ROOM: f64 = 1.25;

/// How one batch was answered.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Answered {
    /// Items it carried.
    pub items: usize,
    /// Items that got through (any answer but 429, 5xx or none).
    pub ok: usize,
    /// Items that got 429.
    pub throttled: usize,
    /// The highest `x-ms-throttle-limit-percentage` seen.
    pub limit_pct: Option<f64>,
    /// How long it was in flight.
    pub took: Duration,
}

/// Whether a batch may leave now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// It left: its slot and its place in the window are taken.
    Go,
    /// The window is full: wait for a batch in flight to end.
    Full,
    /// The pace (or the caller's own wait) lets it leave at this time.
    At(Instant),
}

/// The sending pace shared by every `batch` call of one client.
#[derive(Debug)]
pub(super) struct Pace {
    /// Upper bound of `window` (`max_concurrency`).
    max: usize,
    /// Batches allowed in flight.
    window: f64,
    /// Batches in flight now, over every `batch` call.
    in_flight: usize,
    /// Whether the last batch ready to leave found the window full (the
    /// window, not the rate, holds sending back: it may grow).
    limited: bool,
    /// Seconds in flight per item (moving average of clean batches).
    per_item: Option<f64>,
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
    /// A pace that starts at `START_WINDOW` batches in flight (at most
    /// `max`), unpaced.
    pub(super) fn new(max: usize) -> Pace {
        let max = max.max(1);
        Pace {
            max,
            window: START_WINDOW.min(max) as f64,
            in_flight: 0,
            limited: false,
            per_item: None,
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

    /// Batches in flight now.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Items per second, once learned.
    pub(super) fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Lets a batch of `items` leave at `now` if the window has room and the
    /// pace (and `not_before`, the caller's own wait) allow it now.
    pub(super) fn start(
        &mut self,
        now: Instant,
        items: usize,
        not_before: Option<Instant>,
    ) -> Start {
        if self.in_flight >= self.window() {
            self.limited = true;
            return Start::Full;
        }
        let slot = self.next.map_or(now, |n| n.max(now));
        let at = not_before.map_or(slot, |d| d.max(slot));
        if at > now {
            self.limited = false;
            return Start::At(at);
        }
        self.in_flight += 1;
        self.limited = self.in_flight >= self.window();
        self.start.get_or_insert(now);
        self.sent += items;
        if let Some(r) = self.rate {
            self.next = Some(now + Duration::from_secs_f64(items as f64 / r));
        }
        Start::Go
    }

    /// A batch in flight ended (answered or not).
    pub(super) fn ended(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Batches the learned rate keeps in flight, with room to spare (0 before
    /// a rate or a time in flight is known).
    fn needed(&self) -> f64 {
        match (self.rate, self.per_item) {
            (Some(r), Some(s)) => (r * s * ROOM).ceil(),
            _ => 0.0,
        }
    }

    /// Cuts the window by a quarter (once per `PERIOD`), not under what the
    /// learned rate needs.
    fn cut(&mut self, now: Instant) {
        if self
            .last_cut
            .is_none_or(|t| now.duration_since(t) >= PERIOD)
        {
            self.last_cut = Some(now);
            self.window = (self.window * 0.75)
                .max(self.needed())
                .clamp(1.0, self.max as f64);
        }
    }

    /// Learns from one batch's answer (its batch has `ended` already).
    pub(super) fn answered(&mut self, now: Instant, a: Answered) {
        self.ok += a.ok;
        self.throttled += a.throttled;
        let pct = a.limit_pct.unwrap_or(0.0);
        self.pct = self.pct.max(pct);
        if a.throttled > 0 {
            self.cut(now);
        } else if a.items > 0 {
            let s = a.took.as_secs_f64() / a.items as f64;
            self.per_item = Some(self.per_item.map_or(s, |p| 0.8 * p + 0.2 * s));
        }
        let start = *self.start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        if elapsed >= PERIOD {
            self.measure(now, elapsed.as_secs_f64());
        }
        if a.ok == 0 || a.throttled > 0 || self.throttled > 0 || pct >= NEAR_LIMIT {
            return;
        }
        if self
            .learned
            .is_some_and(|t| now.duration_since(t) >= FORGET)
        {
            self.ceiling = f64::INFINITY;
        }
        if self.limited {
            // Until Graph first throttles, one batch more per clean answer
            // (the window doubles per round: a batch served one item after
            // another may take seconds); then one per window of clean answers.
            let step = if self.rate.is_none() {
                1.0
            } else {
                1.0 / self.window
            };
            self.window = (self.window + step).min(self.max as f64);
        }
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
            self.cut(now);
        }
        // The window carries at least what the (new) rate needs.
        self.window = self.window.max(self.needed()).min(self.max as f64);
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

    /// A batch of `items` leaves at `at` and ends at once (measurements only).
    fn sent(p: &mut Pace, at: Instant, items: usize) {
        assert_eq!(p.start(at, items, None), Start::Go);
        p.ended();
    }

    fn clean(items: usize, took_ms: u64) -> Answered {
        Answered {
            items,
            ok: items,
            took: Duration::from_millis(took_ms),
            ..Answered::default()
        }
    }

    fn throttled(items: usize) -> Answered {
        Answered {
            items,
            throttled: items,
            ..Answered::default()
        }
    }

    #[test]
    fn unpaced_until_throttled_then_just_under_the_share_that_got_through() {
        let t0 = Instant::now();
        let mut p = Pace::new(4);
        assert_eq!(p.rate(), None);
        // 400 items offered in the first second, half of them throttled.
        for k in 0..20 {
            sent(&mut p, ms(t0, 50 * k), 20);
        }
        for k in 0..10 {
            p.answered(ms(t0, 50 * k + 40), clean(20, 40));
        }
        for k in 10..19 {
            p.answered(ms(t0, 50 * k + 40), throttled(20));
        }
        assert_eq!(p.window(), 3, "one cut of the window per second");
        assert_eq!(p.rate(), None, "measured once a second");
        p.answered(ms(t0, 1000), throttled(20));
        let r = p.rate().unwrap_or(0.0);
        assert!((r - 200.0 * BACK_OFF).abs() < 1e-6, "{r}");
        sent(&mut p, ms(t0, 1000), 19);
        assert_eq!(p.start(ms(t0, 1000), 20, None), Start::At(ms(t0, 1100)));
        // A throttled second with a pause in it (50 items offered, 40 through):
        // a known pace is cut by 10% at most, and recovers to just under it.
        sent(&mut p, ms(t0, 1100), 50);
        p.answered(
            ms(t0, 1500),
            Answered {
                items: 50,
                ok: 40,
                throttled: 10,
                ..Answered::default()
            },
        );
        p.answered(ms(t0, 2000), Answered::default());
        let cut = p.rate().unwrap_or(0.0);
        assert!((cut - r * CUT_MOST).abs() < 1e-6, "{cut}");
        sent(&mut p, ms(t0, 2000), 20);
        p.answered(ms(t0, 2100), clean(20, 100));
        assert!((p.rate().unwrap_or(0.0) - cut * RECOVER).abs() < 1e-6);
    }

    #[test]
    fn recovers_fast_below_the_ceiling_probes_slowly_above_forgets_it_later() {
        let t0 = Instant::now();
        let mut p = Pace::new(16);
        sent(&mut p, t0, 400);
        p.answered(ms(t0, 500), clean(200, 10));
        p.answered(ms(t0, 1000), throttled(200));
        let start = p.rate().unwrap_or(0.0);
        assert!((start - 190.0).abs() < 1e-6, "{start}");
        p.answered(ms(t0, 1100), clean(20, 10));
        assert!((p.rate().unwrap_or(0.0) / start - RECOVER).abs() < 1e-9);
        for k in 0..100 {
            p.answered(ms(t0, 1200 + k), clean(20, 10));
        }
        let high = p.rate().unwrap_or(0.0);
        // Fast steps while under 0.97 x 200, then slow ones.
        let slow = 190.0 * RECOVER * RECOVER * PROBE.powi(99);
        assert!((high - slow).abs() < 1e-6, "{high} {slow}");
        // Long after the 429, the ceiling is forgotten and growth is fast again.
        p.answered(t0 + FORGET + PERIOD * 2, clean(20, 10));
        let later = p.rate().unwrap_or(0.0);
        assert!((later / high - RECOVER).abs() < 1e-9, "{later} {high}");
    }

    #[test]
    fn the_window_is_one_count_for_every_caller_and_grows_only_when_it_holds_sending_back() {
        let t0 = Instant::now();
        let mut p = Pace::new(32);
        assert_eq!(
            p.window(),
            START_WINDOW,
            "starts at a few, not at the ceiling"
        );
        for _ in 0..START_WINDOW {
            assert_eq!(p.start(t0, 20, None), Start::Go);
        }
        assert_eq!(p.in_flight(), START_WINDOW);
        // Another caller finds the window full.
        assert_eq!(p.start(t0, 20, None), Start::Full);
        // Clean answers while the window was full and nothing was throttled
        // yet: one more per answer (the window doubles per round).
        for k in 0..START_WINDOW as u64 {
            p.ended();
            p.answered(ms(t0, 1000 + k), clean(20, 1000));
        }
        assert_eq!(p.window(), 2 * START_WINDOW);
        // Once a rate is learned: one more per window of answers.
        p.rate = Some(1000.0);
        for k in 0..=2 * START_WINDOW as u64 {
            p.answered(ms(t0, 1100 + k), clean(20, 1000));
        }
        assert_eq!(p.window(), 2 * START_WINDOW + 1);
        // Nothing was waiting for the window: clean answers do not grow it.
        let mut q = Pace::new(32);
        assert_eq!(q.start(t0, 20, None), Start::Go);
        for k in 0..20 {
            q.ended();
            q.answered(ms(t0, 1000 + k), clean(20, 1000));
            assert_eq!(q.start(ms(t0, 1000 + k), 20, None), Start::Go);
        }
        assert_eq!(q.window(), START_WINDOW);
        // Growth stops at the ceiling, max_concurrency.
        let mut c = Pace::new(6);
        for k in 0..200 {
            while c.start(ms(t0, k), 20, None) == Start::Go {}
            c.ended();
            c.answered(ms(t0, k), clean(20, 1000));
        }
        assert_eq!(c.window(), 6);
        assert_eq!(Pace::new(2).window(), 2, "a ceiling under the start");
    }

    #[test]
    fn a_429_cuts_the_window_by_a_quarter_but_not_under_what_the_learned_rate_needs() {
        let t0 = Instant::now();
        // Items served one after another: 20 items in flight for 1 s.
        let mut p = Pace::new(32);
        let mut t = 0;
        while p.window() < 12 {
            while p.start(ms(t0, t), 20, None) == Start::Go {}
            p.ended();
            p.answered(ms(t0, t), clean(20, 1000));
            t += 10;
        }
        // Unpaced, a 429 cuts by a quarter.
        p.answered(ms(t0, t), throttled(20));
        assert_eq!(p.window(), 9);
        // Once a rate of 190 items/s is learned, the window carries it with
        // room: 190 x (1 s / 20 items) x 1.25 = 12 (rounded up).
        p.rate = Some(190.0);
        p.last_cut = None;
        p.answered(ms(t0, t + 1), throttled(20));
        assert_eq!(p.window(), 12);
        p.last_cut = None;
        p.answered(ms(t0, t + 2), throttled(20));
        assert_eq!(p.window(), 12, "not under what the rate needs");
    }

    #[test]
    fn throttle_limit_percentage_stops_growth_then_slows_down() {
        let t0 = Instant::now();
        let mut p = Pace::new(8);
        sent(&mut p, t0, 400);
        p.answered(
            ms(t0, 1000),
            Answered {
                items: 400,
                ok: 200,
                throttled: 200,
                ..Answered::default()
            },
        );
        let r = p.rate().unwrap_or(0.0);
        let w = p.window();
        sent(&mut p, ms(t0, 1000), 100);
        p.limited = true;
        let near = |pct| Answered {
            limit_pct: Some(pct),
            ..clean(20, 100)
        };
        p.answered(ms(t0, 1500), near(0.95));
        assert_eq!(p.rate(), Some(r), "no growth near the limit");
        assert_eq!(p.window(), w);
        p.answered(ms(t0, 2000), near(1.02));
        assert!(p.rate().unwrap_or(f64::MAX) < r, "slows down at the limit");
    }
}
