//! `ExtCopySource`: capture through `ext-image-copy-capture-v1` (wlroots ≥ 0.19, COSMIC,
//! Smithay-based compositors) with output capture sources, straight into pool slots.
//!
//! ```text
//!  output ── ext_output_image_capture_source_manager_v1.create_source ──▶ source
//!  source ── ext_image_copy_capture_manager_v1.create_session ──▶ session (kept, per output
//!            and cursor mode) ── constraints: shm formats + buffer_size, done
//!  session ── create_frame: attach_buffer(wl_buffer over a pool slot's memfd)
//!                           damage_buffer(what that slot lacks) ── capture
//!          ◀── transform, damage (since the session's previous frame), presentation_time, ready
//! ```
//!
//! **Why a frame is always in flight.** The protocol lets a compositor hold any frame but a
//! session's first until the output changes (wlroots does). A grab must not block on a still
//! screen, so each session keeps one frame *armed* into a slot of its own: when it completes,
//! the output changed and that slot holds the new picture; when it has not completed (after a
//! round trip, so everything the compositor sent is read), nothing changed and the picture of
//! the session's previous frame is still the current one. A grab of a whole output returns
//! that slot itself (a read-only [`Frame`] sharing the slot: no copy in this process); a region
//! inside an output, or a region over outputs side by side, is cut out of those slots (one
//! copy). Each session holds two slots of the source's pool: its latest picture and the armed
//! frame's.
//!
//! **Buffer damage.** Every slot a session filled is remembered (slot id → session, frame
//! number). When a slot comes back from the pool to be armed again, only what changed since
//! the frame it holds is sent as `damage_buffer` (the union of the damage of the frames since,
//! from the session's history); the compositor adds the new frame's damage and copies only
//! that. A slot this session never filled, a slot someone else may have written (another
//! acquire from the pool in between, checked with its acquire counter), history older than
//! [`HISTORY`] frames, or `track_damage(false)` send the whole buffer. RGBA formats
//! (XBGR/ABGR8888) always send the whole buffer: the slot is swapped to BGRA in place after
//! `ready`, and a compositor may copy more than asked, so only a full copy can be swapped
//! safely.
//!
//! **Rotated or flipped outputs** (a frame `transform` other than normal) are turned upright
//! into a slot of their own after `ready` (one copy, as for wlr-screencopy); their damage is
//! mapped upright too. **Refused clearly:** a crop of a
//! fractionally scaled output (a whole one works), a region spanning outputs when one is scaled,
//! shm formats other than XRGB/ARGB/XBGR/ABGR8888. `failed(stopped)` or a vanished output ends
//! the session (the next grab opens a new one if the output still exists);
//! `failed(buffer_constraints)` reopens it with the new constraints.

use super::{shm_format, wl_err, BufferKey, SlotBuffers, WlConn, WlState, FRAME_TIMEOUT};
use crate::damage::{simplify, Rect, MAX_FRAME_RECTS};
use crate::source::Source;
use crate::{Backend, CaptureError, Monitor, Region, Result};
use framebus_core::{Exhausted, Frame, FrameLayout, FramePool, Lease, PixelFormat};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use wayland_client::protocol::wl_callback;
use wayland_client::{Connection, Dispatch, QueueHandle, WEnum};
use wayland_protocols::ext::image_capture_source::v1::client::{
    ext_image_capture_source_v1 as source_v1,
    ext_output_image_capture_source_manager_v1 as output_source_v1,
};
use wayland_protocols::ext::image_copy_capture::v1::client::{
    ext_image_copy_capture_frame_v1 as frame_v1, ext_image_copy_capture_manager_v1 as manager_v1,
    ext_image_copy_capture_session_v1 as session_v1,
};

/// The buffer a session's frames use: (wl_shm format, width, height, stride).
type Constraint = (u32, u32, u32, u32);

/// Frames of damage a session remembers (older slots are refreshed in full).
pub(crate) const HISTORY: usize = 64;

/// A session's constraint events (the session proxy's user data). Batches end with `done`;
/// a batch replaces the previous one (the compositor may re-send constraints).
#[derive(Default)]
pub(crate) struct SessionData {
    ev: Mutex<SessionEvents>,
}

#[derive(Default, Clone, Debug)]
struct SessionEvents {
    in_batch: bool,
    batch_formats: Vec<u32>,
    batch_size: Option<(u32, u32)>,
    formats: Vec<u32>,
    size: Option<(u32, u32)>,
    batches: u64,
    stopped: bool,
}

impl SessionData {
    fn get(&self) -> SessionEvents {
        self.ev.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A frame's user data: its id in [`WlState::frames`], and the presentation time until `ready`.
pub(crate) struct FrameData {
    id: u64,
    presented: Mutex<Option<u64>>,
    /// The `transform` event (wl_output.transform; 0 = normal).
    transform: Mutex<u32>,
}

/// The picture of a session's latest frame, in a slot nobody writes any more.
struct Held {
    lease: Lease,
    cons: Constraint,
    /// Presentation time (CLOCK_MONOTONIC ns), or when the frame was read.
    time: u64,
}

/// The frame waiting for the output to change.
struct Armed {
    id: u64,
    proxy: frame_v1::ExtImageCopyCaptureFrameV1,
    lease: Lease,
    cons: Constraint,
}

/// One capture session: an output, with or without the cursor.
struct Session {
    /// Unique per session of this source (slot records name it).
    generation: u64,
    global: u32,
    cursor: bool,
    source: source_v1::ExtImageCaptureSourceV1,
    proxy: session_v1::ExtImageCopyCaptureSessionV1,
    /// The constraint batch `cons` was chosen from.
    batch: u64,
    cons: Constraint,
    /// Frames completed (frame numbers 1..=frames_done).
    frames_done: u64,
    /// (frame number, damage in buffer pixels) of the latest frames.
    history: VecDeque<(u64, Vec<Region>)>,
    /// The wl_output transform of the latest frame (0: upright buffers).
    transform: u32,
    /// Upright when `transform` is 0, else a copy turned upright.
    latest: Option<Held>,
    armed: Option<Armed>,
    /// `frames_done` when a grab last delivered this session's picture (None: never).
    grabbed_at: Option<u64>,
}

impl Session {
    fn data(&self) -> SessionEvents {
        use wayland_client::Proxy;
        self.proxy
            .data::<SessionData>()
            .map(SessionData::get)
            .unwrap_or_default()
    }

    /// The damage of frames after `since` up to the latest, in buffer pixels; None when
    /// the history no longer reaches back that far.
    fn damage_since(&self, since: u64) -> Option<Vec<Region>> {
        if since == self.frames_done {
            return Some(Vec::new());
        }
        let first = self.history.front().map_or(u64::MAX, |(n, _)| *n);
        if first > since + 1 {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|(n, _)| *n > since)
                .flat_map(|(_, d)| d.iter().copied())
                .collect(),
        )
    }
}

/// Which session frame a slot holds.
struct SlotRecord {
    alive: Weak<()>,
    generation: u64,
    frame_no: u64,
    cons: Constraint,
}

/// One output's share of a grab.
#[derive(Clone, Debug)]
struct Part {
    global: u32,
    /// The part in output-local logical coordinates.
    local: Region,
    /// The part is the whole output.
    whole: bool,
    /// Physical pixels per logical pixel (1 for a whole output of any scale: unused).
    scale: u32,
    /// Where the part lands in the frame (frame pixels).
    dst: (u32, u32),
}

#[derive(Clone, Debug)]
struct Plan {
    region: Region,
    parts: Vec<Part>,
    covers: bool,
}

impl Plan {
    /// The frame is one whole output's buffer.
    fn direct(&self) -> bool {
        self.parts.len() == 1 && self.parts[0].whole && self.covers
    }
}

/// An `ext-image-copy-capture-v1` connection that grabs into pool slots.
pub(crate) struct ExtCopySource {
    wl: WlConn,
    manager: manager_v1::ExtImageCopyCaptureManagerV1,
    sources: output_source_v1::ExtOutputImageCaptureSourceManagerV1,
    reason: Option<String>,
    pool: FramePool,
    buffers: SlotBuffers,
    sessions: Vec<Session>,
    next_generation: u64,
    slots: HashMap<u64, SlotRecord>,
    /// The pool's acquire counter after our last acquire (see `check_pool`).
    acquires_seen: Option<u64>,
    seq: u64,
    track_damage: bool,
    incremental: bool,
    last_damage: Option<Vec<Region>>,
    last_region: Option<Region>,
    partial_copies: u64,
    /// Slots of frames destroyed while in flight, kept until a round trip shows the
    /// compositor read the `destroy` (it writes them no more).
    retired: Vec<Lease>,
    full_copies: u64,
}

impl ExtCopySource {
    /// Bind the managers on an open connection. Frames come from `pool` unless a grab names
    /// another one; `reason` says why this backend was chosen, when that needs saying.
    pub fn open(wl: WlConn, pool: FramePool, reason: Option<String>) -> Result<ExtCopySource> {
        let manager = wl
            .globals
            .bind(&wl.qh, 1..=1, ())
            .map_err(|e| wl_err("binding ext_image_copy_capture_manager_v1", e))?;
        let sources = wl
            .globals
            .bind(&wl.qh, 1..=1, ())
            .map_err(|e| wl_err("binding ext_output_image_capture_source_manager_v1", e))?;
        Ok(ExtCopySource {
            wl,
            manager,
            sources,
            reason,
            pool,
            buffers: SlotBuffers::default(),
            sessions: Vec::new(),
            next_generation: 0,
            slots: HashMap::new(),
            acquires_seen: None,
            seq: 0,
            track_damage: false,
            incremental: true,
            last_damage: None,
            last_region: None,
            partial_copies: 0,
            retired: Vec::new(),
            full_copies: 0,
        })
    }

    fn desktop(&self) -> Region {
        super::bounding_box(self.wl.outputs().map(|o| o.logical()))
    }

    fn output_name(&self, global: u32) -> String {
        self.wl
            .state
            .outputs
            .iter()
            .find(|o| o.global == global)
            .map_or_else(|| format!("#{global} (removed)"), |o| o.name.clone())
    }

    /// Which outputs `region` (None = the desktop) touches, and where each part lands.
    fn plan(&self, region: Option<Region>) -> Result<Plan> {
        let split = self.wl.split(region)?;
        let region = split.region;
        let mut parts = Vec::with_capacity(split.shares.len());
        for sh in split.shares {
            let scale = match sh.scale {
                Some(s) => s,
                None if sh.whole => 1,
                None => {
                    return Err(CaptureError::BadArgument(format!(
                        "region {region} cuts into output {:?}, whose scale is fractional: \
                         its pixels do not map to whole logical pixels; grab the whole output",
                        sh.name
                    )))
                }
            };
            parts.push(Part {
                global: sh.global,
                local: sh.local,
                whole: sh.whole,
                scale,
                dst: sh.dst,
            });
        }
        if parts.len() > 1 {
            if let Some(p) = parts.iter().find(|p| p.scale != 1) {
                return Err(CaptureError::BadArgument(format!(
                    "region {region} spans several outputs and output {:?} is scaled, so their \
                     pixels do not line up in one frame; grab each monitor (or a region inside \
                     one) instead",
                    self.output_name(p.global)
                )));
            }
        }
        Ok(Plan {
            region,
            covers: split.covers,
            parts,
        })
    }

    fn find(&self, global: u32, cursor: bool) -> Option<usize> {
        self.sessions
            .iter()
            .position(|s| s.global == global && s.cursor == cursor)
    }

    fn stuck(&self, what: &str) -> CaptureError {
        wl_err(
            "ext-image-copy",
            format!(
                "the compositor on {:?} did not answer within {} s while {what}",
                self.wl.socket,
                FRAME_TIMEOUT.as_secs()
            ),
        )
    }

    /// Only slots of our own pool that nobody else acquired from in between still hold what
    /// the compositor wrote into them.
    fn check_pool(&mut self, before: u64, after: u64) -> bool {
        let trusted = self.acquires_seen == Some(before) && after == before + 1;
        self.acquires_seen = Some(after);
        if !trusted {
            self.slots.clear();
        }
        trusted
    }

    /// Lease a slot of the source's pool for a session's buffer.
    fn acquire(&mut self, cons: Constraint, policy: Exhausted) -> Result<(Lease, bool)> {
        let len = cons.3 as usize * cons.2 as usize;
        let before = self.pool.stats().acquires;
        let lease = self.pool.acquire_with(len, policy)?;
        let trusted = self.check_pool(before, self.pool.stats().acquires);
        Ok((lease, trusted))
    }

    /// Open a session on output `global`, wait for its constraints and copy its first frame
    /// (which the compositor sends at once). Returns its index.
    fn open_session(
        &mut self,
        global: u32,
        cursor: bool,
        policy: Option<Exhausted>,
    ) -> Result<usize> {
        let output = self
            .wl
            .state
            .outputs
            .iter()
            .find(|o| o.global == global)
            .and_then(|o| o.wl.clone())
            .ok_or_else(|| wl_err("ext-image-copy", format!("output #{global} is gone")))?;
        let source = self.sources.create_source(&output, &self.wl.qh, ());
        let options = if cursor {
            manager_v1::Options::PaintCursors
        } else {
            manager_v1::Options::empty()
        };
        let proxy =
            self.manager
                .create_session(&source, options, &self.wl.qh, SessionData::default());
        let waited = {
            let p = proxy.clone();
            self.wl.wait_until(FRAME_TIMEOUT, move |_: &WlState| {
                use wayland_client::Proxy;
                p.data::<SessionData>().is_none_or(|d| {
                    let e = d.get();
                    e.batches > 0 || e.stopped
                })
            })
        };
        let cleanup = |p: &session_v1::ExtImageCopyCaptureSessionV1,
                       s: &source_v1::ExtImageCaptureSourceV1| {
            p.destroy();
            s.destroy();
        };
        match waited {
            Ok(true) => {}
            Ok(false) => {
                cleanup(&proxy, &source);
                return Err(self.stuck("waiting for a session's buffer constraints"));
            }
            Err(e) => return Err(e),
        }
        self.next_generation += 1;
        let mut s = Session {
            generation: self.next_generation,
            global,
            cursor,
            source,
            proxy,
            batch: 0,
            cons: (0, 0, 0, 0),
            frames_done: 0,
            history: VecDeque::new(),
            transform: 0,
            latest: None,
            armed: None,
            grabbed_at: None,
        };
        let ev = s.data();
        if ev.stopped {
            cleanup(&s.proxy, &s.source);
            return Err(wl_err(
                "ext-image-copy",
                format!(
                    "the compositor stopped the session of output {} at once",
                    self.output_name(global)
                ),
            ));
        }
        match self.choose(&ev, global) {
            Ok(c) => {
                s.cons = c;
                s.batch = ev.batches;
            }
            Err(e) => {
                cleanup(&s.proxy, &s.source);
                return Err(e);
            }
        }
        self.sessions.push(s);
        let i = self.sessions.len() - 1;
        // The first frame of a session is ready at once.
        let policy = policy.unwrap_or(self.pool.config().on_exhausted);
        if let Err(e) = self
            .arm(i, policy)
            .and_then(|()| self.wait_armed(i, FRAME_TIMEOUT))
        {
            self.close_session(i);
            return Err(e);
        }
        if let Err(e) = self.promote(i) {
            self.close_session(i);
            return Err(e);
        }
        self.rearm(i)?;
        Ok(i)
    }

    /// Arm session `i` again after its frame was taken. A full pool leaves it unarmed: the
    /// next grab then reopens it (its latest picture can no longer be vouched for).
    fn rearm(&mut self, i: usize) -> Result<()> {
        match self.arm(i, Exhausted::Error) {
            Ok(()) | Err(CaptureError::Core(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The constraint to use: the best format framebus takes, the buffer size, BGRA stride.
    fn choose(&self, ev: &SessionEvents, global: u32) -> Result<Constraint> {
        let (w, h) = ev.size.ok_or_else(|| {
            wl_err(
                "ext-image-copy",
                "the compositor sent no buffer_size for the session",
            )
        })?;
        let format = ev
            .formats
            .iter()
            .copied()
            .filter_map(|f| shm_format::rank(f).map(|r| (r, f)))
            .min();
        let Some((_, format)) = format else {
            let offered: Vec<String> = ev.formats.iter().map(|&f| shm_format::name(f)).collect();
            return Err(CaptureError::BackendUnavailable {
                backend: "ext-image-copy",
                reason: format!(
                    "the compositor offers only shm formats [{}] for output {} (dma-buf is not \
                     used); framebus takes XRGB8888, ARGB8888, XBGR8888 and ABGR8888",
                    offered.join(", "),
                    self.output_name(global)
                ),
            });
        };
        let layout = FrameLayout::new(w as usize, h as usize, PixelFormat::Bgra, None)?;
        Ok((format, w, h, layout.stride as u32))
    }

    /// Send a frame into a slot: the armed frame of session `i`.
    fn arm(&mut self, i: usize, policy: Exhausted) -> Result<()> {
        if self.sessions[i].armed.is_some() {
            return Ok(());
        }
        let cons = self.sessions[i].cons;
        let (lease, trusted) = self.acquire(cons, policy)?;
        let s = &self.sessions[i];
        let whole = Region::new(0, 0, cons.1, cons.2);
        let stale: Option<Vec<Region>> = (|| {
            if !self.incremental || !trusted || shm_format::is_rgba(cons.0) {
                return None;
            }
            let rec = self.slots.get(&lease.slot_id())?;
            let same = rec.alive.upgrade().is_some()
                && rec.generation == s.generation
                && rec.cons == cons
                && rec.frame_no <= s.frames_done;
            if !same {
                return None;
            }
            let rects: Vec<Rect> = s
                .damage_since(rec.frame_no)?
                .into_iter()
                .map(Rect::of)
                .collect();
            Some(
                simplify(rects, MAX_FRAME_RECTS)
                    .into_iter()
                    .map(Rect::to_region)
                    .collect(),
            )
        })();
        if stale.is_some() {
            self.partial_copies += 1;
        } else {
            self.full_copies += 1;
        }
        let damage = stale.unwrap_or_else(|| vec![whole]);
        let key = BufferKey {
            offset: 0,
            width: cons.1 as i32,
            height: cons.2 as i32,
            stride: cons.3 as i32,
            format: cons.0,
        };
        let buffer = self.buffers.buffer(&self.wl, &lease, key)?;
        // The slot is about to be written: it no longer holds the frame it was recorded with.
        self.slots.remove(&lease.slot_id());
        let id = self.wl.new_frame_id();
        let s = &mut self.sessions[i];
        let proxy = s.proxy.create_frame(
            &self.wl.qh,
            FrameData {
                id,
                presented: Mutex::new(None),
                transform: Mutex::new(0),
            },
        );
        proxy.attach_buffer(&buffer);
        for d in &damage {
            if let Some(c) = Rect::of(*d).in_frame(whole) {
                let r = c.to_region();
                proxy.damage_buffer(r.left, r.top, r.width as i32, r.height as i32);
            }
        }
        proxy.capture();
        s.armed = Some(Armed {
            id,
            proxy,
            lease,
            cons,
        });
        self.wl.pump(Duration::ZERO)
    }

    /// Wait up to `timeout` for session `i`'s armed frame to end; false when it has not.
    fn wait_armed(&mut self, i: usize, timeout: Duration) -> Result<bool> {
        let Some(id) = self.sessions[i].armed.as_ref().map(|a| a.id) else {
            return Ok(true);
        };
        let done = self.wl.wait_until(timeout, |s: &WlState| {
            s.frames
                .get(&id)
                .is_none_or(|f| f.ready.is_some() || f.failed.is_some())
        })?;
        if !done && timeout >= FRAME_TIMEOUT {
            return Err(self.stuck("copying the first frame of a session"));
        }
        Ok(done)
    }

    /// If session `i`'s armed frame is ready, make it the latest picture (Ok(true)); a failed
    /// frame is an error.
    fn promote(&mut self, i: usize) -> Result<bool> {
        let Some(id) = self.sessions[i].armed.as_ref().map(|a| a.id) else {
            return Ok(false);
        };
        let (ready, failed) = match self.wl.state.frames.get(&id) {
            Some(f) => (f.ready.is_some(), f.failed.clone()),
            None => (false, Some("the frame vanished".to_owned())),
        };
        if !ready && failed.is_none() {
            return Ok(false);
        }
        let mut a = self.sessions[i].armed.take().expect("checked above");
        let transform = {
            use wayland_client::Proxy;
            a.proxy.data::<FrameData>().map_or(0, |d| {
                *d.transform.lock().unwrap_or_else(|e| e.into_inner())
            })
        };
        a.proxy.destroy();
        let ev = self.wl.state.frames.remove(&id).unwrap_or_default();
        let name = self.output_name(self.sessions[i].global);
        if let Some(why) = failed {
            return Err(wl_err(
                "ext-image-copy",
                format!("the compositor refused to copy output {name}: {why}"),
            ));
        }
        let (_, w, h, stride) = a.cons;
        if shm_format::is_rgba(a.cons.0) {
            // The whole buffer was damaged for RGBA formats (see the module doc).
            let dst = a
                .lease
                .get_mut()
                .ok_or_else(|| wl_err("ext-image-copy", "the armed slot is shared or read-only"))?;
            super::swap_red_blue(dst, stride as usize, 0, 0, w as usize, h as usize);
        }
        let now = framebus_core::monotonic_ns();
        let time = ev.ready.filter(|&t| t > 0 && t <= now).unwrap_or(now);
        let (upright, upright_cons) = if transform != 0 {
            let (l, c) = self.upright(&a.lease, a.cons, transform)?;
            (Some(l), c)
        } else {
            (None, a.cons)
        };
        let s = &mut self.sessions[i];
        if s.transform != transform {
            // Damage in the old orientation does not map onto the new one.
            s.history.clear();
            s.transform = transform;
        }
        s.frames_done += 1;
        let whole = Rect::of(Region::new(0, 0, w, h));
        let damage: Vec<Region> = ev
            .damage
            .iter()
            .filter_map(|d| {
                let c = Rect::of(*d).intersect(&whole);
                (!c.is_empty()).then(|| c.to_region())
            })
            .collect();
        s.history.push_back((s.frames_done, damage));
        while s.history.len() > HISTORY {
            s.history.pop_front();
        }
        self.slots.insert(
            a.lease.slot_id(),
            SlotRecord {
                alive: a.lease.slot_liveness(),
                generation: s.generation,
                frame_no: s.frames_done,
                cons: a.cons,
            },
        );
        s.latest = Some(Held {
            lease: upright.unwrap_or(a.lease),
            cons: upright_cons,
            time,
        });
        Ok(true)
    }

    /// The buffer of an output with wl_output transform `t` (rotated or flipped) turned
    /// upright into a slot of its own (one copy; the buffer's slot keeps its record, so its
    /// buffer damage still works when it is armed again). Returns the slot and its
    /// (format, width, height, stride).
    fn upright(&mut self, raw: &Lease, cons: Constraint, t: u32) -> Result<(Lease, Constraint)> {
        let (format, bw, bh, bstride) = cons;
        let (uw, uh) = if t % 2 == 1 { (bh, bw) } else { (bw, bh) };
        let layout = FrameLayout::new(uw as usize, uh as usize, PixelFormat::Bgra, None)?;
        let before = self.pool.stats().acquires;
        let policy = self.pool.config().on_exhausted;
        let mut lease = self.pool.acquire_with(layout.byte_len(), policy)?;
        self.check_pool(before, self.pool.stats().acquires);
        // Overwritten here: it no longer holds a frame of any session.
        self.slots.remove(&lease.slot_id());
        let dst = lease
            .get_mut()
            .ok_or_else(|| wl_err("ext-image-copy", "a fresh slot is shared"))?;
        // SAFETY: `raw` is the armed slot of a frame the compositor finished (`ready`), not
        // handed out to anyone; `bstride * bh` bytes fit it (it was acquired for them).
        let src =
            unsafe { std::slice::from_raw_parts(raw.as_ptr(), bstride as usize * bh as usize) };
        super::untransform(
            src,
            (bw as usize, bh as usize, bstride as usize),
            &mut dst[..layout.byte_len()],
            t,
            Region::new(0, 0, uw, uh),
        );
        Ok((lease, (format, uw, uh, layout.stride as u32)))
    }

    /// End session `i` (its slots go back to the pool once no frame holds them).
    fn close_session(&mut self, i: usize) {
        let s = self.sessions.remove(i);
        if let Some(a) = s.armed {
            a.proxy.destroy();
            let ended = self
                .wl
                .state
                .frames
                .remove(&a.id)
                .is_some_and(|f| f.ready.is_some() || f.failed.is_some());
            if !ended {
                // The compositor may still write it until it reads the `destroy`: the slot
                // goes back to the pool only after the next round trip.
                self.retired.push(a.lease);
            }
        }
        s.proxy.destroy();
        s.source.destroy();
    }

    /// Make session (`global`, `cursor`) current: open it if needed, or take its completed
    /// armed frame and arm the next. A stopped session, changed constraints, a session left
    /// unarmed or a failed frame are reopened (once).
    fn refresh(&mut self, global: u32, cursor: bool, policy: Option<Exhausted>) -> Result<usize> {
        for attempt in 0..2 {
            let Some(i) = self.find(global, cursor) else {
                return self.open_session(global, cursor, policy);
            };
            let ev = self.sessions[i].data();
            let s = &self.sessions[i];
            if ev.stopped
                || ev.in_batch
                || ev.batches != s.batch
                || s.latest.is_none()
                || s.armed.is_none()
            {
                self.close_session(i);
                continue;
            }
            match self.promote(i) {
                Ok(true) => {
                    self.rearm(i)?;
                    return Ok(i);
                }
                Ok(false) => return Ok(i),
                Err(e @ CaptureError::Wayland { .. }) if attempt == 0 => {
                    // A failed frame (output resized, buffer refused): once more, afresh.
                    drop(e);
                    self.close_session(i);
                }
                Err(e) => {
                    self.close_session(i);
                    return Err(e);
                }
            }
        }
        Err(wl_err(
            "ext-image-copy",
            format!(
                "the session of output {} failed twice",
                self.output_name(global)
            ),
        ))
    }

    /// The damage of part `p` since the last grab (frame coordinates); None = all of it.
    fn part_damage(&self, s: &Session, p: &Part, direct: bool) -> Option<Vec<Rect>> {
        let since = s.grabbed_at?;
        let (_, bw, bh, _) = s.cons;
        let rects = s
            .damage_since(since)?
            .into_iter()
            .map(|r| match s.transform {
                0 => r,
                t => super::untransform_rect(r, bw, bh, t),
            });
        let k = p.scale as i32;
        let (_, uw, uh, _) = s.latest.as_ref()?.cons;
        let crop = if direct {
            Region::new(0, 0, uw, uh)
        } else {
            Region::new(
                p.local.left * k,
                p.local.top * k,
                p.local.width * p.scale,
                p.local.height * p.scale,
            )
        };
        let (dx, dy) = (p.dst.0 as i32, p.dst.1 as i32);
        Some(
            rects
                .filter_map(|d| Rect::of(d).in_frame(crop))
                .map(|c| Rect {
                    x0: c.x0 + dx,
                    y0: c.y0 + dy,
                    x1: c.x1 + dx,
                    y1: c.y1 + dy,
                })
                .collect(),
        )
    }

    /// A round trip bounded by [`FRAME_TIMEOUT`] (a compositor that stopped answering is an
    /// error, not a hang).
    fn roundtrip(&mut self) -> Result<()> {
        use wayland_client::Proxy;
        let done = Arc::new(AtomicBool::new(false));
        let backend = self
            .wl
            .globals
            .registry()
            .backend()
            .upgrade()
            .ok_or_else(|| wl_err("round trip", "the connection to the compositor is gone"))?;
        Connection::from_backend(backend)
            .display()
            .sync(&self.wl.qh, SyncDone(done.clone()));
        if self
            .wl
            .wait_until(FRAME_TIMEOUT, |_: &WlState| done.load(Ordering::Acquire))?
        {
            self.retired.clear();
            Ok(())
        } else {
            Err(self.stuck("waiting for a round trip"))
        }
    }

    /// A round trip, and another while a new output has not described itself yet (its
    /// global arrives in one, its description after binding it, in the next).
    fn sync_outputs(&mut self) -> Result<()> {
        self.roundtrip()?;
        for _ in 0..2 {
            if self.wl.state.outputs.iter().all(|o| o.done) {
                break;
            }
            self.roundtrip()?;
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        self.buffers.sweep();
        self.slots.retain(|_, r| r.alive.strong_count() > 0);
        // Everything sent before is processed and everything the compositor sent is read:
        // an armed frame that is not ready now saw no change.
        self.sync_outputs()?;
        // Sessions of outputs that are gone.
        let mut i = 0;
        while i < self.sessions.len() {
            let g = self.sessions[i].global;
            if self.wl.outputs().any(|o| o.global == g) {
                i += 1;
            } else {
                self.close_session(i);
            }
        }
        Ok(())
    }
}

impl Source for ExtCopySource {
    fn backend(&self) -> Backend {
        Backend::ExtImageCopy
    }

    fn backend_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    fn display(&self) -> &str {
        &self.wl.socket
    }

    fn pool(&self) -> &FramePool {
        &self.pool
    }

    fn screen_size(&mut self) -> Result<(u32, u32)> {
        self.sync_outputs()?;
        let d = self.desktop();
        Ok((d.width, d.height))
    }

    fn monitors(&mut self) -> Result<Vec<Monitor>> {
        self.sync_outputs()?;
        Ok(self.wl.monitors())
    }

    fn grab_with(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Frame> {
        self.settle()?;
        let plan = self.plan(region)?;
        for p in &plan.parts {
            self.refresh(p.global, with_cursor, policy)?;
        }
        // `refresh` may have closed sessions and shifted indices: look them up again.
        let idx = plan
            .parts
            .iter()
            .map(|p| {
                self.find(p.global, with_cursor).ok_or_else(|| {
                    wl_err(
                        "ext-image-copy",
                        format!("output {} has no session", self.output_name(p.global)),
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let direct = plan.direct();
        let own_pool = pool.is_none_or(|p| p.same_pool(&self.pool));
        let (frame, size) = if direct && own_pool {
            let s = &self.sessions[idx[0]];
            let held = s.latest.as_ref().expect("refresh leaves a latest picture");
            let (_, w, h, stride) = held.cons;
            let layout = FrameLayout::new(
                w as usize,
                h as usize,
                PixelFormat::Bgra,
                Some(stride as usize),
            )?;
            let f = Frame::new(held.lease.clone(), layout)?;
            (f.with_meta(held.time, self.seq + 1), (w, h))
        } else {
            let (w, h) = if direct {
                let held = self.sessions[idx[0]].latest.as_ref();
                let c = held.expect("refresh leaves a latest picture").cons;
                (c.1, c.2)
            } else if plan.parts.len() == 1 {
                let p = &plan.parts[0];
                (p.local.width * p.scale, p.local.height * p.scale)
            } else {
                (plan.region.width, plan.region.height)
            };
            let layout = FrameLayout::new(w as usize, h as usize, PixelFormat::Bgra, None)?;
            let mut lease = if own_pool {
                // Counted, so that our own acquires do not look like someone else's; the
                // slot is about to be overwritten here, so it no longer holds a frame.
                let policy = policy.unwrap_or(self.pool.config().on_exhausted);
                let before = self.pool.stats().acquires;
                let lease = self.pool.acquire_with(layout.byte_len(), policy)?;
                self.check_pool(before, self.pool.stats().acquires);
                self.slots.remove(&lease.slot_id());
                lease
            } else {
                let pool = pool.expect("not our own pool");
                match policy {
                    Some(p) => pool.acquire_with(layout.byte_len(), p)?,
                    None => pool.acquire(layout.byte_len())?,
                }
            };
            let stride = layout.stride;
            let dst = lease.get_mut().ok_or_else(|| {
                wl_err(
                    "ext-image-copy",
                    "the destination slot is shared or read-only",
                )
            })?;
            if !plan.covers {
                dst[..layout.byte_len()].fill(0);
            }
            let mut time = 0;
            for (p, &i) in plan.parts.iter().zip(&idx) {
                let s = &self.sessions[i];
                let held = s.latest.as_ref().expect("refresh leaves a latest picture");
                let (_, bw, bh, bstride) = held.cons;
                let k = p.scale;
                let (cx, cy, cw, ch) = if direct {
                    (0, 0, bw, bh)
                } else {
                    (
                        p.local.left as u32 * k,
                        p.local.top as u32 * k,
                        p.local.width * k,
                        p.local.height * k,
                    )
                };
                if cx + cw > bw || cy + ch > bh {
                    return Err(wl_err(
                        "ext-image-copy",
                        format!(
                            "output {} has a {bw}x{bh} buffer, too small for its {} part at scale {k}",
                            self.output_name(p.global),
                            p.local
                        ),
                    ));
                }
                // SAFETY: `held` is a session's latest picture: the compositor finished writing
                // it (`ready`) and nothing in this process writes it again; `bstride * bh`
                // bytes fit the slot (it was acquired for them).
                let src = unsafe {
                    std::slice::from_raw_parts(held.lease.as_ptr(), bstride as usize * bh as usize)
                };
                for row in 0..ch as usize {
                    let from = (cy as usize + row) * bstride as usize + cx as usize * 4;
                    let to = (p.dst.1 as usize + row) * stride + p.dst.0 as usize * 4;
                    dst[to..to + cw as usize * 4]
                        .copy_from_slice(&src[from..from + cw as usize * 4]);
                }
                time = time.max(held.time);
            }
            (
                Frame::new(lease, layout)?.with_meta(time, self.seq + 1),
                (w, h),
            )
        };
        let same_region = self.last_region == Some(plan.region);
        let mut rects = Some(Vec::new());
        for (p, &i) in plan.parts.iter().zip(&idx) {
            let s = &self.sessions[i];
            match (same_region, self.part_damage(s, p, direct), rects.as_mut()) {
                (true, Some(d), Some(all)) => all.extend(d),
                _ => rects = None,
            }
        }
        for &i in &idx {
            let s = &mut self.sessions[i];
            s.grabbed_at = Some(s.frames_done);
        }
        let whole = Rect::of(Region::new(0, 0, size.0, size.1));
        let rects = rects.unwrap_or_else(|| vec![whole]);
        self.last_damage = Some(
            simplify(rects, MAX_FRAME_RECTS)
                .into_iter()
                .map(Rect::to_region)
                .collect(),
        );
        self.last_region = Some(plan.region);
        self.seq += 1;
        Ok(frame.into_readonly())
    }

    /// Damage always comes with every frame; this only makes [`Source::last_damage`] report
    /// it. `incremental` (on from the start) sends buffer damage for reused slots; off, every
    /// slot is copied whole.
    fn track_damage(&mut self, incremental: bool) -> Result<()> {
        self.track_damage = true;
        self.incremental = incremental;
        Ok(())
    }

    fn tracks_damage(&self) -> bool {
        self.track_damage
    }

    fn is_incremental(&self) -> bool {
        self.incremental
    }

    fn last_damage(&self) -> Option<&[Region]> {
        if self.track_damage {
            self.last_damage.as_deref()
        } else {
            None
        }
    }

    /// (partial, full) copies asked of the compositor: frames armed with buffer damage for
    /// a reused slot, and frames armed with the whole buffer damaged.
    fn grab_counts(&self) -> (u64, u64) {
        (self.partial_copies, self.full_copies)
    }

    fn changed_since_last(&mut self, region: Option<Region>) -> Result<bool> {
        self.wl.pump(Duration::ZERO)?;
        let Ok(plan) = self.plan(region) else {
            return Ok(true);
        };
        if self.last_region != Some(plan.region) {
            return Ok(true);
        }
        let direct = plan.direct();
        for p in &plan.parts {
            let Some(i) = self
                .find(p.global, false)
                .or_else(|| self.find(p.global, true))
            else {
                return Ok(true);
            };
            let armed_done = self.sessions[i].armed.as_ref().is_none_or(|a| {
                self.wl
                    .state
                    .frames
                    .get(&a.id)
                    .is_none_or(|f| f.ready.is_some() || f.failed.is_some())
            });
            if armed_done {
                // Take the new picture now, so its damage can be checked against the region.
                match self.promote(i) {
                    Ok(true) => self.rearm(i)?,
                    _ => return Ok(true),
                }
            }
            let s = &self.sessions[i];
            match self.part_damage(s, p, direct) {
                None => return Ok(true),
                Some(d) if !d.is_empty() => return Ok(true),
                Some(_) => {}
            }
        }
        Ok(false)
    }

    fn wait_for_events(&mut self, timeout: Duration) -> Result<()> {
        self.wl.pump(timeout)
    }

    fn grab_when_changed(
        &mut self,
        region: Region,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
        timeout: Duration,
    ) -> Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.changed_since_last(Some(region))? {
                return self
                    .grab_with(Some(region), with_cursor, pool, policy)
                    .map(Some);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Wait for an armed frame of the region's outputs to end.
            let ids: Vec<u64> = self
                .plan(Some(region))
                .map(|p| p.parts)
                .unwrap_or_default()
                .iter()
                .filter_map(|p| self.find(p.global, with_cursor))
                .filter_map(|i| self.sessions[i].armed.as_ref().map(|a| a.id))
                .collect();
            let epoch = self.wl.state.outputs_epoch;
            self.wl.wait_until(deadline - now, |s: &WlState| {
                s.outputs_epoch != epoch
                    || ids.iter().any(|id| {
                        s.frames
                            .get(id)
                            .is_none_or(|f| f.ready.is_some() || f.failed.is_some())
                    })
            })?;
        }
    }

    fn attached_segments(&self) -> usize {
        self.buffers.len()
    }

    fn tracked_slots(&self) -> usize {
        self.slots
            .values()
            .filter(|r| r.alive.upgrade().is_some())
            .count()
    }
}

impl Drop for ExtCopySource {
    fn drop(&mut self) {
        while !self.sessions.is_empty() {
            self.close_session(0);
        }
        self.manager.destroy();
        self.sources.destroy();
        if !self.retired.is_empty() {
            // Bounded; a compositor that is gone writes nothing either.
            let _ = self.roundtrip();
            self.retired.clear();
        }
        self.buffers.clear();
        let _ = self.wl.queue.flush();
    }
}

/// The user data of a `wl_display.sync` callback: set when it is done.
pub(crate) struct SyncDone(Arc<AtomicBool>);

impl Dispatch<wl_callback::WlCallback, SyncDone> for WlState {
    fn event(
        _: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        data: &SyncDone,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            data.0.store(true, Ordering::Release);
        }
    }
}

wayland_client::delegate_noop!(WlState: manager_v1::ExtImageCopyCaptureManagerV1);
wayland_client::delegate_noop!(WlState: output_source_v1::ExtOutputImageCaptureSourceManagerV1);
wayland_client::delegate_noop!(WlState: source_v1::ExtImageCaptureSourceV1);

impl Dispatch<session_v1::ExtImageCopyCaptureSessionV1, SessionData> for WlState {
    fn event(
        _: &mut Self,
        _: &session_v1::ExtImageCopyCaptureSessionV1,
        event: session_v1::Event,
        data: &SessionData,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let mut e = data.ev.lock().unwrap_or_else(|e| e.into_inner());
        let start = |e: &mut SessionEvents| {
            if !e.in_batch {
                e.in_batch = true;
                e.batch_formats.clear();
                e.batch_size = None;
            }
        };
        match event {
            session_v1::Event::ShmFormat { format } => {
                start(&mut e);
                e.batch_formats.push(match format {
                    WEnum::Value(f) => f as u32,
                    WEnum::Unknown(f) => f,
                });
            }
            session_v1::Event::BufferSize { width, height } => {
                start(&mut e);
                e.batch_size = Some((width, height));
            }
            session_v1::Event::DmabufDevice { .. } | session_v1::Event::DmabufFormat { .. } => {
                start(&mut e)
            }
            session_v1::Event::Done => {
                start(&mut e);
                e.in_batch = false;
                e.formats = std::mem::take(&mut e.batch_formats);
                e.size = e.batch_size.take();
                e.batches += 1;
            }
            session_v1::Event::Stopped => e.stopped = true,
            _ => {}
        }
    }
}

impl Dispatch<frame_v1::ExtImageCopyCaptureFrameV1, FrameData> for WlState {
    fn event(
        state: &mut Self,
        _: &frame_v1::ExtImageCopyCaptureFrameV1,
        event: frame_v1::Event,
        data: &FrameData,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(f) = state.frames.get_mut(&data.id) else {
            return;
        };
        match event {
            frame_v1::Event::Transform { transform } => {
                *data.transform.lock().unwrap_or_else(|e| e.into_inner()) = match transform {
                    WEnum::Value(t) => t as u32,
                    WEnum::Unknown(t) => t,
                }
            }
            frame_v1::Event::Damage {
                x,
                y,
                width,
                height,
            } if width > 0 && height > 0 => {
                f.damage
                    .push(Region::new(x, y, width as u32, height as u32));
            }
            frame_v1::Event::PresentationTime {
                tv_sec_hi,
                tv_sec_lo,
                tv_nsec,
            } => {
                let secs = ((tv_sec_hi as u64) << 32) | tv_sec_lo as u64;
                *data.presented.lock().unwrap_or_else(|e| e.into_inner()) = Some(
                    secs.saturating_mul(1_000_000_000)
                        .saturating_add(tv_nsec as u64),
                );
            }
            frame_v1::Event::Ready => {
                f.ready = Some(
                    data.presented
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .unwrap_or(0),
                );
            }
            frame_v1::Event::Failed { reason } => f.failed = Some(
                match reason {
                    WEnum::Value(frame_v1::FailureReason::BufferConstraints) => {
                        "buffer_constraints: the buffer no longer matches the session's constraints"
                    }
                    WEnum::Value(frame_v1::FailureReason::Stopped) => {
                        "stopped: the session ended (the output may have gone)"
                    }
                    _ => "unknown: the compositor gave no reason",
                }
                .to_owned(),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "ext_copy_tests.rs"]
mod tests;
