//! When a blocked `recv` busy-waits instead of sleeping: the [`Spin`] policy and,
//! for [`Spin::Adaptive`], the publisher's send [`Cadence`] learnt from the
//! descriptors' send times.
//!
//! Why: waking a sleeping process costs what the kernel and the hypervisor
//! charge for it (p50 ≈ 80 µs, p99 ≈ 120–140 µs on the 2-vCPU CI VM, see
//! `bench/wakeup_floor.py`), far more than the hand-off itself (a descriptor
//! store another core sees within a microsecond). Spinning removes the wake-up
//! but keeps a core busy. Frame sources are periodic (a camera, a capture loop
//! at N fps), so the adaptive policy sleeps until shortly before the next frame
//! is due and spins only in a window around it: spin latency for a few percent
//! of a core (measured on the CI VM at 30 fps: 6 % of a core, p50/p99 within a
//! few µs of a full spin; at 60 fps 12 %; above ~250 fps the window covers
//! most of the period and this becomes a full spin).
//!
//! Depends on nothing else in this crate. Send times come from shared memory and
//! are untrusted: a wrong one can only make a spin window start late (then the
//! frame wakes the sleeper through the doorbell as usual) or end early.

use std::time::Duration;

/// How `recv` waits when no frame is ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Spin {
    /// Sleep on the doorbell at once (no CPU while waiting).
    #[default]
    Off,
    /// Busy-wait up to this long, then sleep.
    For(Duration),
    /// Sleep until [`Cadence::WAKE_EARLY`] before the next frame is due, then
    /// busy-wait until it arrives or its window closes, then sleep. Until the
    /// cadence is known (two frames), or when sends are irregular, this is `Off`.
    Adaptive,
}

/// The publisher's send period, estimated from consecutive descriptors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cadence {
    /// (ticket, send time) of the newest frame seen.
    last: Option<(u64, u64)>,
    /// Smoothed period in ns (exponential moving average, weight 1/8).
    period_ns: Option<u64>,
}

impl Cadence {
    /// How long before the expected send the spin window opens: covers the
    /// timer wake-up's lateness (p99 ≈ 250 µs on the CI VM) and gives a core
    /// that was idle time to come back to speed (with 1 ms the hand-off p50 on
    /// the CI VM was twice a full spin's; with 2 ms it is within a few µs).
    pub const WAKE_EARLY: Duration = Duration::from_millis(2);
    /// Least time the window stays open after the expected send (jitter).
    pub const MIN_LATE: Duration = Duration::from_micros(500);
    /// Periods outside this range are not a cadence (a burst, or a pause).
    const MIN_PERIOD_NS: u64 = 100_000;
    const MAX_PERIOD_NS: u64 = 1_000_000_000;

    /// Note a received frame's ticket and send time. Tickets are consecutive
    /// per channel, so skipped frames (latest mode) still give the true period.
    pub fn observe(&mut self, ticket: u64, sent_ns: u64) {
        if let Some((t0, s0)) = self.last {
            if ticket > t0 && sent_ns > s0 {
                let p = (sent_ns - s0) / (ticket - t0);
                if (Self::MIN_PERIOD_NS..=Self::MAX_PERIOD_NS).contains(&p) {
                    self.period_ns = Some(match self.period_ns {
                        None => p,
                        Some(old) => old - old / 8 + p / 8,
                    });
                } else {
                    self.period_ns = None;
                }
            }
        }
        self.last = Some((ticket, sent_ns));
    }

    /// The estimated send period, once two frames were seen at a steady rate.
    pub fn period(&self) -> Option<Duration> {
        self.period_ns.map(Duration::from_nanos)
    }

    /// The CLOCK_MONOTONIC window `(open, close)` in which the next frame is
    /// expected, in ns; `None` while the cadence is unknown.
    pub fn window(&self) -> Option<(u64, u64)> {
        let p = self.period_ns?;
        let (_, sent) = self.last?;
        let due = sent.saturating_add(p);
        let late = (p / 16).max(Self::MIN_LATE.as_nanos() as u64);
        Some((
            due.saturating_sub(Self::WAKE_EARLY.as_nanos() as u64),
            due.saturating_add(late),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_the_period_across_skipped_tickets() {
        let mut c = Cadence::default();
        assert_eq!(c.window(), None);
        c.observe(1, 1_000_000_000);
        assert_eq!(c.period(), None, "one frame is no cadence");
        c.observe(2, 1_033_000_000);
        assert_eq!(c.period(), Some(Duration::from_millis(33)));
        // tickets 3 and 4 were skipped (latest mode): the period stays 33 ms
        c.observe(5, 1_132_000_000);
        assert_eq!(c.period(), Some(Duration::from_millis(33)));
        let (open, close) = c.window().unwrap();
        assert_eq!(open, 1_165_000_000 - 2_000_000);
        assert_eq!(close, 1_165_000_000 + 33_000_000 / 16);
    }

    #[test]
    fn pauses_bursts_and_garbage_forget_the_cadence() {
        let mut c = Cadence::default();
        c.observe(1, 1_000_000_000);
        c.observe(2, 1_010_000_000);
        assert!(c.period().is_some());
        c.observe(3, 5_000_000_000); // a 4 s pause
        assert_eq!(c.period(), None);
        c.observe(4, 5_010_000_000);
        c.observe(5, 5_010_000_100); // a burst: 100 ns apart
        assert_eq!(c.period(), None);
        // garbage from shared memory: time going backwards, tickets repeating
        c.observe(5, 1);
        c.observe(4, u64::MAX);
        assert_eq!(c.period(), None);
        c.observe(9, u64::MAX);
        assert!(c.window().is_none() || c.window().unwrap().1 == u64::MAX);
    }

    #[test]
    fn smooths_jitter() {
        let mut c = Cadence::default();
        let mut t = 0u64;
        for (i, jitter) in [0i64, 300_000, -200_000, 100_000, -300_000, 0, 200_000]
            .iter()
            .enumerate()
        {
            t = (10_000_000 * (i as u64 + 1)).wrapping_add_signed(*jitter);
            c.observe(i as u64 + 1, t);
        }
        let p = c.period().unwrap().as_nanos() as i64;
        assert!((p - 10_000_000).abs() < 400_000, "{p}");
        assert!(t > 0);
    }
}
