//! `Capture`: continuous capture on a Rust thread into pool slots.
//!
//! ```text
//!  capture thread ── grab ──▶ ring (≤ buffer frames, newest at the back) ──▶ latest() / next()
//!        ▲ paced at target_fps                 │ full: oldest unseen frame dropped
//!        └─────────── slots come back to the pool when the consumer drops its frames
//! ```
//! * `latest()` returns the newest frame never returned before (older unseen
//!   frames are dropped and counted); it blocks until one exists. With
//!   `allow_repeat` it returns the last frame at once even if already seen.
//! * `next()` returns the oldest unseen frame (for consumers that want every
//!   frame the buffer could keep, in order).
//! * Memory and latency are bounded: the ring never holds more than `buffer`
//!   frames; a slow consumer loses old frames, it never queues them.
//! * Frames carry the grab's `CLOCK_MONOTONIC` timestamp and consecutive
//!   sequence numbers from 1 (a gap = frames dropped).
//! * Pacing: deadlines at `start + k / target_fps`; if the thread falls more
//!   than one period behind it restarts the schedule instead of bursting.
//!   Without a target rate the capture runs on demand: the next grab starts
//!   as soon as the consumer has taken the previous frame (seen by a 100 µs
//!   poll, see `ON_DEMAND_POLL`), so grabbing overlaps consuming (one frame
//!   ahead) and no grab is wasted on a frame nobody will see — on a 2-core
//!   machine free-running grabs would steal the consumer's core.
//! * `stop()` (or drop) wakes the thread, joins it, and fails pending waits.
//! * A thread that fails — a grab error, or a panic, which is caught — marks
//!   the capture finished, keeps the error, drops the buffered frames and
//!   wakes every waiter: `is_running()` is false, `error()` says why, and every
//!   later `latest`/`next` returns `CaptureError::Stopped(Some(why))` at once.
//! * Damage: a grabber that tracks damage ([`Grabber::track_damage`];
//!   incremental or not) makes every frame carry the rectangles changed since
//!   the previous frame *handed out* ([`Capture::latest_with_damage`]): the
//!   damage of frames dropped unseen is merged into the next one.
//!   [`Capture::start_on_change`] grabs only when something inside the region
//!   changed (the first frame always), waiting on the X socket in between.
//! * The configuration is checked before the thread starts
//!   ([`CaptureConfig::validate`]): `target_fps` in
//!   [`MIN_TARGET_FPS`]`..=`[`MAX_TARGET_FPS`], `buffer` in `1..=`[`MAX_BUFFER`].
//!
//! Depends on `grabber`; nothing here touches Python.

use crate::damage::merge_damage;
use crate::{Backend, CaptureError, Grabber, Region, Result};
use framebus_core::{Error as CoreError, Exhausted, Frame, FramePool};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often an on-demand capture thread looks whether the consumer took the
/// last frame. Polling on a timer, rather than being woken by the consumer,
/// keeps the capture thread — and the X server it wakes — off the consumer's
/// busy core: Linux places a woken thread near its waker, and on 2 cores that
/// put the X server's copy behind the consumer (A/B on the loaded 2-core VM,
/// spinning consumer: woken by the consumer 0.96-1.04x serial speed in 6 of 6
/// runs, polling up to 1.69x; pinned 1.5-2x; see docs/benchmarks.md, capture). The
/// cost: one timer wakeup per 100 µs while the consumer works, ≤ 100 µs later
/// start of the next grab.
const ON_DEMAND_POLL: Duration = Duration::from_micros(100);

/// How long an on-change capture with nothing changed waits on the X socket
/// before it looks at `stop()` again.
const ON_CHANGE_WAIT: Duration = Duration::from_millis(2);

/// The lowest `target_fps` accepted: one frame every 1000 s.
pub const MIN_TARGET_FPS: f64 = 0.001;
/// The highest `target_fps` accepted (a 100 µs period; no X server grabs faster).
pub const MAX_TARGET_FPS: f64 = 10_000.0;
/// The most frames a capture may keep for its consumer (`buffer`). The ring
/// grows with use up to this bound; nothing is allocated up front by it.
pub const MAX_BUFFER: usize = 1024;

/// Counters of a running capture.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames grabbed.
    pub captured: u64,
    /// Frames handed to the consumer.
    pub delivered: u64,
    /// Frames grabbed but discarded unseen (ring full, or skipped by `latest`).
    pub dropped: u64,
    /// Frames waiting in the ring now.
    pub buffered: usize,
    /// Grabs skipped because nothing changed (`start_on_change`).
    pub unchanged: u64,
}

/// A frame and the rectangles changed since the frame handed out before it
/// (None: damage not tracked).
struct Item {
    frame: Frame,
    damage: Option<Vec<Region>>,
}

struct State {
    ring: VecDeque<Item>,
    /// The last frame handed out (for `allow_repeat`; a repeat has no damage).
    last: Option<Frame>,
    /// Damage of frames dropped with nothing after them in the ring: it
    /// belongs to the next frame pushed.
    carry: Option<Vec<Region>>,
    stats: CaptureStats,
    stop: bool,
    /// Set when the thread has ended; the error that ended it, if any.
    finished: bool,
    error: Option<String>,
    backend: Backend,
    backend_reason: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every new frame, on stop and when the thread ends.
    changed: Condvar,
}

impl State {
    /// Drop the oldest buffered frame (counted), handing its damage on.
    fn drop_front(&mut self) -> bool {
        let Some(item) = self.ring.pop_front() else {
            return false;
        };
        self.stats.dropped += 1;
        match self.ring.front_mut() {
            Some(next) => merge_damage(&mut next.damage, item.damage),
            None if self.carry.is_none() => self.carry = item.damage,
            None => merge_damage(&mut self.carry, item.damage),
        }
        true
    }

    fn push(&mut self, frame: Frame, mut damage: Option<Vec<Region>>) {
        if let Some(carry) = self.carry.take() {
            merge_damage(&mut damage, Some(carry));
        }
        self.ring.push_back(Item { frame, damage });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Settings of a continuous capture.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// What to grab (None = whole screen, resolved when the capture starts).
    pub region: Option<Region>,
    /// Frames per second to aim for, in [`MIN_TARGET_FPS`]`..=`[`MAX_TARGET_FPS`];
    /// None = on demand (one frame ahead of the consumer).
    pub target_fps: Option<f64>,
    /// Frames kept for the consumer, `1..=`[`MAX_BUFFER`].
    pub buffer: usize,
    /// Blend the cursor in.
    pub cursor: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            region: None,
            target_fps: Some(60.0),
            buffer: 3,
            cursor: false,
        }
    }
}

impl CaptureConfig {
    /// Check the settings [`Capture::start`] checks, without an X connection:
    /// `target_fps` finite and in [`MIN_TARGET_FPS`]`..=`[`MAX_TARGET_FPS`]
    /// (so its period is a representable `Duration`), `buffer` in
    /// `1..=`[`MAX_BUFFER`]. The error ([`CaptureError::BadArgument`], a bad
    /// input) names the value.
    pub fn validate(&self) -> Result<()> {
        if let Some(fps) = self.target_fps {
            if !(MIN_TARGET_FPS..=MAX_TARGET_FPS).contains(&fps) {
                // `{:?}` keeps 1e-300 short (Display would print 300 digits).
                return Err(CaptureError::BadArgument(format!(
                    "target_fps={fps:?} is out of range: it must be a number of frames per \
                     second from {MIN_TARGET_FPS} to {MAX_TARGET_FPS}, or None to capture on demand"
                )));
            }
        }
        if !(1..=MAX_BUFFER).contains(&self.buffer) {
            return Err(CaptureError::BadArgument(format!(
                "buffer={} is out of range: it must be from 1 to {MAX_BUFFER} frames",
                self.buffer
            )));
        }
        Ok(())
    }

    /// Time between grabs (None = on demand). Infallible once validated.
    fn period(&self) -> Result<Option<Duration>> {
        self.target_fps
            .map(|fps| {
                Duration::try_from_secs_f64(1.0 / fps).map_err(|e| {
                    CaptureError::BadArgument(format!("target_fps={fps:?}: period 1/fps: {e}"))
                })
            })
            .transpose()
    }
}

/// A running continuous capture. Dropping it stops and joins the thread.
pub struct Capture {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    region: Region,
    config: CaptureConfig,
    on_change: bool,
    tracks_damage: bool,
}

impl Capture {
    /// Start capturing with `grabber` (moved to the capture thread). The
    /// configuration ([`CaptureConfig::validate`]) and the region are checked
    /// now, so bad ones fail here and not in the thread.
    pub fn start(grabber: Grabber, config: CaptureConfig) -> Result<Capture> {
        Self::start_inner(grabber, config, false, |_| Ok(()))
    }

    /// [`Capture::start`], delivering a frame only when something inside the
    /// region changed since the last one (XDamage; the first frame always).
    /// Turns damage tracking on if the grabber does not track it yet (not
    /// incremental: call [`Grabber::track_damage`]`(true)` first for that).
    pub fn start_on_change(mut grabber: Grabber, config: CaptureConfig) -> Result<Capture> {
        config.validate()?;
        let incremental = grabber.is_incremental();
        grabber.track_damage(incremental)?;
        Self::start_inner(grabber, config, true, |_| Ok(()))
    }

    /// [`Capture::start`] with `hook` run by the capture thread before each
    /// grab; an error from it ends the thread like a grab error (tests inject
    /// failures with it: a panic, an error). Not part of the API.
    #[doc(hidden)]
    pub fn start_with_hook(
        grabber: Grabber,
        config: CaptureConfig,
        hook: impl FnMut(&mut Grabber) -> Result<()> + Send + 'static,
    ) -> Result<Capture> {
        Self::start_inner(grabber, config, false, hook)
    }

    fn start_inner(
        mut grabber: Grabber,
        config: CaptureConfig,
        on_change: bool,
        mut hook: impl FnMut(&mut Grabber) -> Result<()> + Send + 'static,
    ) -> Result<Capture> {
        config.validate()?;
        let (w, h) = grabber.screen_size()?;
        let region = config.region.unwrap_or(Region::new(0, 0, w, h));
        region.check_inside(w, h)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                // Grows with use (at most `buffer` frames): never sized by a user count.
                ring: VecDeque::new(),
                last: None,
                carry: None,
                stats: CaptureStats::default(),
                stop: false,
                finished: false,
                error: None,
                backend: grabber.backend(),
                backend_reason: grabber.backend_reason().map(str::to_owned),
            }),
            changed: Condvar::new(),
        });
        let tracks_damage = grabber.tracks_damage();
        let thread_shared = shared.clone();
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("framebus-capture".into())
            .spawn(move || {
                // Whatever ends the thread — return, error or panic — the
                // guard marks the capture finished and wakes every waiter.
                let mut done = Finish {
                    shared: &thread_shared,
                    error: Some("the capture thread ended unexpectedly".into()),
                };
                let result = catch_unwind(AssertUnwindSafe(|| {
                    run(
                        &mut grabber,
                        region,
                        &thread_config,
                        on_change,
                        &thread_shared,
                        &mut hook,
                    )
                }));
                done.error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(panic) => Some(format!(
                        "the capture thread panicked: {}",
                        panic_message(panic.as_ref())
                    )),
                };
                drop(done);
                // The grabber (and its X connection) closes here, on this
                // thread; a panic while closing must not escape either.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(grabber)));
            })
            .map_err(|e| CaptureError::X {
                op: "spawn capture thread",
                detail: e.to_string(),
            })?;
        Ok(Capture {
            shared,
            thread: Mutex::new(Some(thread)),
            region,
            config,
            on_change,
            tracks_damage,
        })
    }

    /// True when started with [`Capture::start_on_change`].
    pub fn on_change(&self) -> bool {
        self.on_change
    }

    /// The region being grabbed.
    pub fn region(&self) -> Region {
        self.region
    }

    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// The newest frame not returned before; waits up to `timeout` (None =
    /// forever) for one. With `allow_repeat`, the last frame (new or not) is
    /// returned at once when there is one.
    pub fn latest(&self, timeout: Option<Duration>, allow_repeat: bool) -> Result<Frame> {
        Ok(self.take(timeout, allow_repeat, true)?.0)
    }

    /// The oldest frame not returned before (FIFO over the bounded ring).
    pub fn next(&self, timeout: Option<Duration>) -> Result<Frame> {
        Ok(self.take(timeout, false, false)?.0)
    }

    /// [`Capture::latest`] with the frame's damage: the rectangles (frame
    /// coordinates) changed since the frame handed out before it, a superset
    /// of the pixels that differ (frames skipped or dropped in between are
    /// merged in). None when the grabber does not track damage; `Some([])`
    /// for a repeat (`allow_repeat`) of the last frame.
    pub fn latest_with_damage(
        &self,
        timeout: Option<Duration>,
        allow_repeat: bool,
    ) -> Result<(Frame, Option<Vec<Region>>)> {
        self.take(timeout, allow_repeat, true)
    }

    /// [`Capture::next`] with the frame's damage (see [`Capture::latest_with_damage`]).
    pub fn next_with_damage(
        &self,
        timeout: Option<Duration>,
    ) -> Result<(Frame, Option<Vec<Region>>)> {
        self.take(timeout, false, false)
    }

    fn take(
        &self,
        timeout: Option<Duration>,
        allow_repeat: bool,
        newest: bool,
    ) -> Result<(Frame, Option<Vec<Region>>)> {
        // A timeout too long to add to now is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut st = self.shared.lock();
        loop {
            // Stopped or failed: the reason, at once (no frame, not even a repeat).
            if st.finished || st.stop {
                return Err(CaptureError::Stopped(st.error.clone()));
            }
            let item = if newest {
                // Skipped frames: dropped, their damage merged into the newest.
                while st.ring.len() > 1 {
                    st.drop_front();
                }
                st.ring.pop_back()
            } else {
                st.ring.pop_front()
            };
            if let Some(Item { frame, damage }) = item {
                st.stats.delivered += 1;
                st.last = Some(frame.clone());
                return Ok((frame, damage));
            }
            if allow_repeat {
                if let Some(f) = st.last.clone() {
                    return Ok((f, self.tracks_damage.then(Vec::new)));
                }
            }
            st = match deadline {
                None => self
                    .shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(CaptureError::Timeout(
                            timeout.unwrap_or_default().as_secs_f64(),
                        ));
                    }
                    self.shared
                        .changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Counters right now.
    pub fn stats(&self) -> CaptureStats {
        let st = self.shared.lock();
        let mut s = st.stats.clone();
        s.buffered = st.ring.len();
        s
    }

    /// The backend the thread uses now, and why it is not MIT-SHM.
    pub fn backend(&self) -> (Backend, Option<String>) {
        let st = self.shared.lock();
        (st.backend, st.backend_reason.clone())
    }

    /// True until `stop()`, or until the thread ended on an error or a panic.
    pub fn is_running(&self) -> bool {
        let st = self.shared.lock();
        !st.finished && !st.stop
    }

    /// The error that ended the thread (a grab error, or "the capture thread
    /// panicked: …"), if any.
    pub fn error(&self) -> Option<String> {
        self.shared.lock().error.clone()
    }

    /// Stop the thread and wait for it. Frames already handed out stay valid;
    /// buffered ones are released. Idempotent, callable from any thread
    /// (threads blocked in `latest`/`next` wake up with `Stopped`).
    pub fn stop(&self) {
        {
            let mut st = self.shared.lock();
            st.stop = true;
            // Release the buffered frames first: a thread waiting for a slot
            // of a full pool gets one and sees `stop` at once.
            st.ring.clear();
        }
        self.shared.changed.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = handle {
            let _ = t.join();
        }
        let mut st = self.shared.lock();
        st.ring.clear();
        st.last = None;
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marks the capture finished when the capture thread ends, however it ends.
struct Finish<'a> {
    shared: &'a Shared,
    /// Why the thread ended (None: stopped by `stop()`).
    error: Option<String>,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.finished = true;
        if st.error.is_none() {
            st.error = self.error.take();
        }
        if st.error.is_some() {
            // Nobody will take these: release their slots now.
            st.ring.clear();
        }
        drop(st);
        self.shared.changed.notify_all();
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-text panic payload)".to_owned()
    }
}

/// The capture thread's loop; `hook` runs before each grab.
fn run(
    grabber: &mut Grabber,
    region: Region,
    cfg: &CaptureConfig,
    on_change: bool,
    shared: &Shared,
    hook: &mut impl FnMut(&mut Grabber) -> Result<()>,
) -> Result<()> {
    let period = cfg.period()?;
    let pool: FramePool = grabber.pool().clone();
    let mut next_due = Instant::now();
    loop {
        // Pacing: sleep until the next deadline (or, on demand, until the
        // consumer has taken the last frame), waking early on stop.
        {
            let mut st = shared.lock();
            loop {
                if st.stop {
                    return Ok(());
                }
                if period.is_none() {
                    if st.ring.is_empty() {
                        break;
                    }
                    st = shared
                        .changed
                        .wait_timeout(st, ON_DEMAND_POLL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                let now = Instant::now();
                if now >= next_due {
                    break;
                }
                st = shared
                    .changed
                    .wait_timeout(st, next_due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            // Make room before grabbing, so the oldest frame's slot can be reused.
            while st.ring.len() >= cfg.buffer {
                st.drop_front();
            }
        }
        if let Some(p) = period {
            let now = Instant::now();
            next_due += p;
            if next_due + p < now {
                next_due = now; // fell behind: restart the schedule, no burst
            }
        }
        hook(grabber)?;
        let policy = Some(Exhausted::Block(Some(Duration::from_millis(20))));
        let grabbed = if on_change {
            // On demand: wait a little for a change (the loop re-checks stop);
            // paced: only look, the next tick comes soon.
            let wait = match period {
                None => ON_CHANGE_WAIT,
                Some(_) => Duration::ZERO,
            };
            grabber.grab_when_changed(region, cfg.cursor, Some(&pool), policy, wait)
        } else {
            grabber
                .grab_with(Some(region), cfg.cursor, Some(&pool), policy)
                .map(Some)
        };
        let frame = match grabbed {
            Ok(Some(f)) => f,
            Ok(None) => {
                shared.lock().stats.unchanged += 1;
                continue;
            }
            Err(CaptureError::Core(CoreError::PoolExhausted { .. })) => {
                // The consumer holds every slot of a bounded pool: release the
                // oldest buffered frame, or wait a little for the consumer.
                let mut st = shared.lock();
                // (The acquire above already waited 20 ms for a release.)
                st.drop_front();
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut st = shared.lock();
        st.stats.captured += 1;
        if st.backend != grabber.backend() {
            st.backend = grabber.backend();
            st.backend_reason = grabber.backend_reason().map(str::to_owned);
        }
        st.push(frame, grabber.last_damage().map(<[Region]>::to_vec));
        drop(st);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(target_fps: Option<f64>, buffer: usize) -> CaptureConfig {
        CaptureConfig {
            target_fps,
            buffer,
            ..Default::default()
        }
    }

    #[test]
    fn config_bounds_are_checked_and_errors_name_the_value() {
        for fps in [None, Some(MIN_TARGET_FPS), Some(60.0), Some(MAX_TARGET_FPS)] {
            let c = config(fps, 3);
            c.validate().unwrap();
            // Every accepted rate has a representable period (no panic in the thread).
            let period = c.period().unwrap();
            assert_eq!(period.is_some(), fps.is_some());
        }
        for buffer in [1, MAX_BUFFER] {
            config(None, buffer).validate().unwrap();
        }
        for (fps, shown) in [
            (1e-300, "1e-300"),
            (1e-19, "1e-19"),
            (0.0, "0.0"),
            (-1.0, "-1.0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (MAX_TARGET_FPS * 1.01, "10100.0"),
            (MIN_TARGET_FPS * 0.99, "0.00099"),
        ] {
            let e = config(Some(fps), 3).validate().unwrap_err();
            assert!(e.is_bad_input(), "{e}");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("target_fps={shown} is out of range")),
                "{msg}"
            );
            assert!(msg.contains("0.001") && msg.contains("10000"), "{msg}");
        }
        for buffer in [0, MAX_BUFFER + 1, 1 << 30, 1 << 62, usize::MAX] {
            let e = config(Some(60.0), buffer).validate().unwrap_err();
            assert!(e.is_bad_input(), "{e}");
            assert!(
                e.to_string().starts_with(&format!(
                    "buffer={buffer} is out of range: it must be from 1 to 1024"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn panic_payloads_become_text() {
        let p = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "plain");
        let n = 3;
        let p = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "formatted 3");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "(a non-text panic payload)");
    }
}
