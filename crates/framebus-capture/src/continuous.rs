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
//!   as soon as the consumer has taken the previous frame, so grabbing
//!   overlaps consuming (one frame ahead) and no grab is wasted on a frame
//!   nobody will see — on a 2-core machine free-running grabs would steal the
//!   consumer's core.
//! * `stop()` (or drop) wakes the thread, joins it, and fails pending waits.
//!
//! Depends on `grabber`; nothing here touches Python.

use crate::{Backend, CaptureError, Grabber, Region, Result};
use framebus_core::{Error as CoreError, Exhausted, Frame, FramePool};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
}

struct State {
    ring: VecDeque<Frame>,
    /// The last frame handed out (for `allow_repeat`).
    last: Option<Frame>,
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
    /// Frames per second to aim for; None = on demand (one frame ahead of the consumer).
    pub target_fps: Option<f64>,
    /// Frames kept for the consumer (≥ 1).
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

/// A running continuous capture. Dropping it stops and joins the thread.
pub struct Capture {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    region: Region,
    config: CaptureConfig,
}

impl Capture {
    /// Start capturing with `grabber` (moved to the capture thread). The
    /// region is checked now, so a bad one fails here and not in the thread.
    pub fn start(mut grabber: Grabber, config: CaptureConfig) -> Result<Capture> {
        if config.buffer == 0 {
            return Err(CaptureError::BadArgument(
                "buffer must be at least 1 frame".into(),
            ));
        }
        if let Some(fps) = config.target_fps {
            if !(fps.is_finite() && fps > 0.0) {
                return Err(CaptureError::BadArgument(format!(
                    "target_fps must be a positive number, got {fps}"
                )));
            }
        }
        let (w, h) = grabber.screen_size()?;
        let region = config.region.unwrap_or(Region::new(0, 0, w, h));
        region.check_inside(w, h)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                ring: VecDeque::with_capacity(config.buffer),
                last: None,
                stats: CaptureStats::default(),
                stop: false,
                finished: false,
                error: None,
                backend: grabber.backend(),
                backend_reason: grabber.backend_reason().map(str::to_owned),
            }),
            changed: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("framebus-capture".into())
            .spawn(move || {
                let result = run(&mut grabber, region, &thread_config, &thread_shared);
                let mut st = thread_shared.lock();
                st.finished = true;
                if let Err(e) = result {
                    st.error = Some(e.to_string());
                }
                drop(st);
                thread_shared.changed.notify_all();
                // The grabber (and its X connection) closes here, on this thread.
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
        })
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
        self.take(timeout, allow_repeat, true)
    }

    /// The oldest frame not returned before (FIFO over the bounded ring).
    pub fn next(&self, timeout: Option<Duration>) -> Result<Frame> {
        self.take(timeout, false, false)
    }

    fn take(&self, timeout: Option<Duration>, allow_repeat: bool, newest: bool) -> Result<Frame> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.shared.lock();
        loop {
            let frame = if newest {
                let f = st.ring.pop_back();
                let skipped = st.ring.len() as u64;
                st.ring.clear();
                st.stats.dropped += skipped;
                f
            } else {
                st.ring.pop_front()
            };
            if let Some(f) = frame {
                st.stats.delivered += 1;
                st.last = Some(f.clone());
                drop(st);
                // An on-demand capture thread waits for the ring to empty.
                self.shared.changed.notify_all();
                return Ok(f);
            }
            if allow_repeat {
                if let Some(f) = st.last.clone() {
                    return Ok(f);
                }
            }
            if st.finished || st.stop {
                return Err(CaptureError::Stopped(st.error.clone()));
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

    /// True until `stop()` or the thread ended on an error.
    pub fn is_running(&self) -> bool {
        let st = self.shared.lock();
        !st.finished && !st.stop
    }

    /// The error that ended the thread, if any.
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

/// The capture thread's loop.
fn run(grabber: &mut Grabber, region: Region, cfg: &CaptureConfig, shared: &Shared) -> Result<()> {
    let period = cfg.target_fps.map(|f| Duration::from_secs_f64(1.0 / f));
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
                    st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
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
                st.ring.pop_front();
                st.stats.dropped += 1;
            }
        }
        if let Some(p) = period {
            let now = Instant::now();
            next_due += p;
            if next_due + p < now {
                next_due = now; // fell behind: restart the schedule, no burst
            }
        }
        let frame = match grabber.grab_with(
            Some(region),
            cfg.cursor,
            Some(&pool),
            Some(Exhausted::Block(Some(Duration::from_millis(20)))),
        ) {
            Ok(f) => f,
            Err(CaptureError::Core(CoreError::PoolExhausted { .. })) => {
                // The consumer holds every slot of a bounded pool: release the
                // oldest buffered frame, or wait a little for the consumer.
                let mut st = shared.lock();
                // (The acquire above already waited 20 ms for a release.)
                if st.ring.pop_front().is_some() {
                    st.stats.dropped += 1;
                }
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
        st.ring.push_back(frame);
        drop(st);
        shared.changed.notify_all();
    }
}
