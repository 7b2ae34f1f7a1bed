//! `WlrSource`: capture through `zwlr_screencopy_manager_v1` (sway,
//! Hyprland, river, labwc, Wayfire…) straight into pool slots.
//!
//! A grab asks for one screencopy frame per output the region touches
//! (`capture_output` for a whole output, `capture_output_region` for part of
//! one), waits for the buffer constraints, leases a slot and hands the
//! compositor a `wl_buffer` made from the slot's memfd (see `SlotBuffers`):
//! a region inside one output — the usual case — lands in the slot with no
//! copy in this process. Parts of a region that spans outputs side by side
//! go through a scratch slot and one copy each (a wlr buffer's stride must
//! be its own width's). `y_invert` buffers are flipped in place, RGBA
//! formats (XBGR/ABGR8888) swapped to BGRA in place, anything else refused.
//!
//! Damage: `copy_with_damage` waits until the output changes and reports
//! what changed since this client's previous such frame. Continuous capture
//! with `on_change` uses it ([`Source::grab_when_changed`]): one request
//! stays in flight across calls until the compositor answers. A plain grab
//! uses `copy` (immediate) and, when damage is tracked, reports the whole
//! frame as changed (the protocol gives no damage for it).
//!
//! Constraints seen for an (output, rectangle) are remembered, so the next
//! grab sends `copy` right behind the capture request: one round trip per
//! frame instead of two (a stale guess fails and is retried the slow way).

use super::{shm_format, wl_err, BufferKey, SlotBuffers, WlConn, WlState, FRAME_TIMEOUT};
use crate::damage::Rect;
use crate::source::Source;
use crate::{Backend, CaptureError, Monitor, Region, Result};
use framebus_core::{Exhausted, Frame, FrameLayout, FramePool, Lease, PixelFormat};
use std::collections::HashMap;
use std::time::Duration;
use wayland_client::protocol::wl_output;
use wayland_client::{Connection, Dispatch, QueueHandle, WEnum};
use wayland_protocols_wlr::screencopy::v1::client::{
    zwlr_screencopy_frame_v1 as frame_v1, zwlr_screencopy_manager_v1 as manager_v1,
};

/// How long the first on-change frame waits for `copy_with_damage` before
/// taking a plain `copy`.
const FIRST_WAIT: Duration = Duration::from_millis(250);

/// Buffer constraints: (wl_shm format, width, height, stride).
type Constraint = (u32, u32, u32, u32);

/// One output's share of a grab.
#[derive(Clone, Debug)]
struct Part {
    /// The output's registry name, and its proxy.
    global: u32,
    output: wl_output::WlOutput,
    /// The part in output-local logical coordinates.
    local: Region,
    /// The whole output (`capture_output`, not `_region`).
    whole: bool,
    /// Where the part lands in the frame (frame pixels).
    dst: (u32, u32),
    /// The output's wl_output.transform: its buffers are turned upright
    /// (only single-part plans can have one).
    transform: u32,
    /// On a rotated or flipped output the whole output is captured (how
    /// compositors map a region onto a turned buffer differs: wlroots 0.15
    /// turns 90°/270° boxes the wrong way) and this logical rectangle cut
    /// out of the upright picture.
    crop: Option<Region>,
}

/// What a grab of a region asks of the compositor.
#[derive(Clone, Debug)]
struct Plan {
    region: Region,
    parts: Vec<Part>,
    /// The parts cover the whole region (no gaps between outputs to clear).
    covers: bool,
}

/// A screencopy frame in flight.
struct InFlight {
    id: u64,
    proxy: frame_v1::ZwlrScreencopyFrameV1,
    /// The constraint the `copy` was sent with (None: not sent yet).
    sent: Option<Constraint>,
}

/// A `copy_with_damage` grab waiting for the compositor (on-change capture).
struct Pending {
    plan: Plan,
    with_cursor: bool,
    lease: Lease,
    layout: FrameLayout,
    frames: Vec<InFlight>,
    timestamp: u64,
}

/// A wlr-screencopy connection that grabs into pool slots.
pub(crate) struct WlrSource {
    wl: WlConn,
    manager: manager_v1::ZwlrScreencopyManagerV1,
    reason: Option<String>,
    pool: FramePool,
    buffers: SlotBuffers,
    seq: u64,
    track_damage: bool,
    last_damage: Option<Vec<Region>>,
    /// Constraints last offered per (output, output-local rectangle).
    known: HashMap<(u32, Region), Constraint>,
    pending: Option<Pending>,
    /// The region of the last frame delivered by `grab_when_changed`.
    last_changed_region: Option<Region>,
}

impl WlrSource {
    /// Bind the screencopy manager on an open connection.
    pub fn open(wl: WlConn, pool: FramePool, reason: Option<String>) -> Result<WlrSource> {
        let manager = wl
            .globals
            .bind(&wl.qh, 1..=3, ())
            .map_err(|e| wl_err("binding zwlr_screencopy_manager_v1", e))?;
        Ok(WlrSource {
            wl,
            manager,
            reason,
            pool,
            buffers: SlotBuffers::default(),
            seq: 0,
            track_damage: false,
            last_damage: None,
            known: HashMap::new(),
            pending: None,
            last_changed_region: None,
        })
    }

    /// The desktop's bounding box now.
    fn desktop(&self) -> Region {
        super::bounding_box(self.wl.outputs().map(|o| o.logical()))
    }

    /// Which outputs `region` (None = the desktop) touches, and where each
    /// part lands in the frame.
    fn plan(&mut self, region: Option<Region>) -> Result<Plan> {
        self.wl.pump(Duration::ZERO)?;
        let split = self.wl.split(region)?;
        let region = split.region;
        if split.shares.len() > 1 {
            if let Some(sh) = split
                .shares
                .iter()
                .find(|sh| sh.scale != Some(1) || sh.transform != 0)
            {
                return Err(CaptureError::BadArgument(format!(
                    "region {region} spans several outputs and output {:?} is scaled or \
                     rotated, so their pixels do not line up in one frame; grab each monitor \
                     (or a region inside one) instead",
                    sh.name
                )));
            }
        }
        let parts = split
            .shares
            .into_iter()
            .map(|sh| {
                let turned = sh.transform != 0;
                Part {
                    global: sh.global,
                    output: sh.output,
                    // On a turned output the whole output is captured and the
                    // region cut from its upright picture.
                    whole: sh.whole || turned,
                    crop: (turned && !sh.whole).then_some(sh.local),
                    transform: sh.transform,
                    local: sh.local,
                    dst: sh.dst,
                }
            })
            .collect();
        Ok(Plan {
            region,
            covers: split.covers,
            parts,
        })
    }

    /// Ask for one screencopy frame per part.
    fn request(&mut self, plan: &Plan, with_cursor: bool) -> Vec<InFlight> {
        let cursor = i32::from(with_cursor);
        plan.parts
            .iter()
            .map(|p| {
                let id = self.wl.new_frame_id();
                let proxy = if p.whole {
                    self.manager
                        .capture_output(cursor, &p.output, &self.wl.qh, id)
                } else {
                    let r = p.local;
                    self.manager.capture_output_region(
                        cursor,
                        &p.output,
                        r.left,
                        r.top,
                        r.width as i32,
                        r.height as i32,
                        &self.wl.qh,
                        id,
                    )
                };
                InFlight {
                    id,
                    proxy,
                    sent: None,
                }
            })
            .collect()
    }

    /// Wait for the constraints of every frame; the chosen (format, w, h,
    /// stride) per part, in plan order.
    fn constraints(&mut self, plan: &Plan, frames: &[InFlight]) -> Result<Vec<Constraint>> {
        let ids: Vec<u64> = frames.iter().map(|f| f.id).collect();
        let done = self.wl.wait_until(FRAME_TIMEOUT, |s: &WlState| {
            ids.iter().all(|id| {
                s.frames
                    .get(id)
                    .is_none_or(|f| f.constraints_done || f.failed.is_some())
            })
        })?;
        if !done {
            return Err(self.stuck("waiting for the buffer constraints"));
        }
        let mut out = Vec::with_capacity(frames.len());
        for (f, part) in frames.iter().zip(&plan.parts) {
            let ev =
                self.wl.state.frames.get(&f.id).ok_or_else(|| {
                    wl_err("capture", "the frame vanished (its output was removed)")
                })?;
            if let Some(why) = &ev.failed {
                return Err(self.failed(part, why));
            }
            let best = ev
                .shm
                .iter()
                .filter_map(|c| shm_format::rank(c.0).map(|r| (r, *c)))
                .min_by_key(|(r, _)| *r)
                .map(|(_, c)| c);
            let Some(c) = best else {
                let offered: Vec<String> = ev.shm.iter().map(|c| shm_format::name(c.0)).collect();
                return Err(CaptureError::BackendUnavailable {
                    backend: "wlr-screencopy",
                    reason: format!(
                        "the compositor offers only shm formats [{}] for output {}; framebus \
                         takes XRGB8888, ARGB8888, XBGR8888 and ABGR8888 (10-bit formats are \
                         not converted yet)",
                        offered.join(", "),
                        self.output_name(part.global)
                    ),
                });
            };
            self.known.insert((part.global, part.local), c);
            out.push(c);
        }
        Ok(out)
    }

    fn output_name(&self, global: u32) -> String {
        self.wl
            .state
            .outputs
            .iter()
            .find(|o| o.global == global)
            .map_or_else(|| format!("#{global} (removed)"), |o| o.name.clone())
    }

    fn failed(&self, part: &Part, why: &str) -> CaptureError {
        wl_err(
            "screencopy",
            format!(
                "the compositor refused to copy {} of output {}: {why}",
                part.local,
                self.output_name(part.global)
            ),
        )
    }

    fn stuck(&self, what: &str) -> CaptureError {
        wl_err(
            "screencopy",
            format!(
                "the compositor on {:?} did not answer within {} s while {what}",
                self.wl.socket,
                FRAME_TIMEOUT.as_secs()
            ),
        )
    }

    /// The frame's size: the single part's buffer, or the region (parts of
    /// several unscaled outputs, checked against their buffers).
    fn frame_size(plan: &Plan, cons: &[Constraint]) -> Result<(u32, u32)> {
        if let [(_, w, h, _)] = cons {
            if plan.parts[0].dst == (0, 0) {
                return Ok((*w, *h));
            }
        }
        for (p, c) in plan.parts.iter().zip(cons) {
            if (c.1, c.2) != (p.local.width, p.local.height) {
                return Err(wl_err(
                    "screencopy",
                    format!(
                        "the compositor offers a {}x{} buffer for the {} part of an unscaled \
                         output",
                        c.1, c.2, p.local
                    ),
                ));
            }
        }
        Ok((plan.region.width, plan.region.height))
    }

    /// Lease the frame's slot (cleared where no output covers it).
    fn lease(
        &self,
        plan: &Plan,
        layout: &FrameLayout,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Lease> {
        let pool = pool.unwrap_or(&self.pool);
        let mut lease = match policy {
            Some(p) => pool.acquire_with(layout.byte_len(), p)?,
            None => pool.acquire(layout.byte_len())?,
        };
        if !plan.covers {
            if let Some(bytes) = lease.get_mut() {
                bytes[..layout.byte_len()].fill(0);
            }
        }
        Ok(lease)
    }

    /// Where part `i` is written: straight into the frame's slot when its
    /// rows are whole frame rows (one output, or outputs stacked), else a
    /// scratch slot copied in afterwards.
    fn targets(
        &self,
        plan: &Plan,
        cons: &[Constraint],
        layout: &FrameLayout,
    ) -> Result<Vec<Option<Lease>>> {
        let mut out = Vec::with_capacity(cons.len());
        for (p, c) in plan.parts.iter().zip(cons) {
            let direct = c.3 as usize == layout.stride && p.dst.0 == 0;
            out.push(if direct {
                None
            } else {
                Some(self.pool.acquire(c.3 as usize * c.2 as usize)?)
            });
        }
        Ok(out)
    }

    /// Send `copy` (or `copy_with_damage`) for every frame into its target.
    #[allow(clippy::too_many_arguments)]
    fn send_copies(
        &mut self,
        plan: &Plan,
        frames: &mut [InFlight],
        cons: &[Constraint],
        lease: &Lease,
        scratch: &[Option<Lease>],
        layout: &FrameLayout,
        with_damage: bool,
    ) -> Result<()> {
        for (i, f) in frames.iter_mut().enumerate() {
            let c = cons[i];
            let (target, offset) = match &scratch[i] {
                Some(s) => (s, 0),
                None => (lease, plan.parts[i].dst.1 as usize * layout.stride),
            };
            let key = BufferKey {
                offset: offset as i32,
                width: c.1 as i32,
                height: c.2 as i32,
                stride: c.3 as i32,
                format: c.0,
            };
            let buffer = self.buffers.buffer(&self.wl, target, key)?;
            if with_damage {
                f.proxy.copy_with_damage(&buffer);
            } else {
                f.proxy.copy(&buffer);
            }
            f.sent = Some(c);
        }
        Ok(())
    }

    /// After `ready`: copy scratch parts in, flip `y_invert` parts, swap
    /// RGBA parts to BGRA. Returns each part's damage in frame coordinates.
    fn finish(
        &mut self,
        plan: &Plan,
        frames: &[InFlight],
        lease: &mut Lease,
        scratch: &[Option<Lease>],
        layout: &FrameLayout,
    ) -> Result<Vec<Region>> {
        let stride = layout.stride;
        let mut damage = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let ev = self.wl.state.frames.remove(&f.id).unwrap_or_default();
            let (fmt, w, h, cstride) = f.sent.expect("finish runs after copies were sent");
            let (w, h) = (w as usize, h as usize);
            let (dx, dy) = (plan.parts[i].dst.0 as usize, plan.parts[i].dst.1 as usize);
            let dst = lease.get_mut().ok_or_else(|| {
                wl_err("screencopy", "the destination slot is shared or read-only")
            })?;
            if let Some(s) = &scratch[i] {
                // SAFETY: the scratch lease is ours alone (never handed out) and
                // the compositor finished writing it (`ready` was received);
                // `cstride * h` bytes fit its capacity (acquired for them).
                let src = unsafe { std::slice::from_raw_parts(s.as_ptr(), cstride as usize * h) };
                for (row, line) in src.chunks_exact(cstride as usize).enumerate() {
                    let at = (dy + row) * stride + dx * 4;
                    dst[at..at + w * 4].copy_from_slice(&line[..w * 4]);
                }
            }
            if ev.y_invert {
                super::flip_rows(dst, stride, dx, dy, w, h);
            }
            if shm_format::is_rgba(fmt) {
                super::swap_red_blue(dst, stride, dx, dy, w, h);
            }
            for d in ev.damage {
                let top = if ev.y_invert {
                    h as i64 - d.bottom()
                } else {
                    d.top as i64
                };
                damage.push(Region::new(
                    d.left + dx as i32,
                    top as i32 + dy as i32,
                    d.width,
                    d.height,
                ));
            }
            f.proxy.destroy();
        }
        Ok(damage)
    }

    /// Turn a rotated or flipped output's buffer upright (one copy into a
    /// new slot, with its damage); unchanged for a normal output.
    fn upright(
        &self,
        plan: &Plan,
        lease: Lease,
        layout: FrameLayout,
        damage: Vec<Region>,
        pool: Option<&FramePool>,
    ) -> Result<(Lease, FrameLayout, Vec<Region>)> {
        let (t, crop) = match plan.parts.as_slice() {
            [p] if p.transform != 0 => (p.transform, p.crop),
            _ => return Ok((lease, layout, damage)),
        };
        let (bw, bh) = (layout.width, layout.height);
        let (uw, uh) = if t % 2 == 1 { (bh, bw) } else { (bw, bh) };
        // The crop in physical pixels of the upright picture.
        let crop = match crop {
            None => Region::new(0, 0, uw as u32, uh as u32),
            Some(c) => {
                let out = &plan.parts[0];
                let scale = self
                    .wl
                    .outputs()
                    .find(|o| o.global == out.global)
                    .and_then(|o| o.integer_scale())
                    .ok_or_else(|| {
                        CaptureError::BadArgument(format!(
                            "region {} cuts into a rotated output with a fractional scale; \
                             grab the whole monitor instead",
                            plan.region
                        ))
                    })?;
                Region::new(
                    c.left * scale as i32,
                    c.top * scale as i32,
                    c.width * scale,
                    c.height * scale,
                )
            }
        };
        let out_layout = FrameLayout::new(
            crop.width as usize,
            crop.height as usize,
            PixelFormat::Bgra,
            None,
        )?;
        let mut out = pool.unwrap_or(&self.pool).acquire(out_layout.byte_len())?;
        let dst = out
            .get_mut()
            .ok_or_else(|| wl_err("screencopy", "a fresh slot is shared"))?;
        // SAFETY: `lease` is this grab's own slot (not handed out yet) and the
        // compositor finished writing it; `byte_len` bytes lie inside it.
        let src = unsafe { std::slice::from_raw_parts(lease.as_ptr(), layout.byte_len()) };
        super::untransform(
            src,
            (bw, bh, layout.stride),
            &mut dst[..out_layout.byte_len()],
            t,
            crop,
        );
        let damage = damage
            .into_iter()
            .filter_map(|r| {
                let u = super::untransform_rect(r, bw as u32, bh as u32, t);
                Rect::of(u).in_frame(crop).map(Rect::to_region)
            })
            .collect();
        let _ = uh;
        Ok((out, out_layout, damage))
    }

    /// Wait for `ready` (or `failed`) on every frame.
    fn wait_ready(&mut self, plan: &Plan, frames: &[InFlight], timeout: Duration) -> Result<bool> {
        let ids: Vec<u64> = frames.iter().map(|f| f.id).collect();
        let done = self.wl.wait_until(timeout, |s: &WlState| {
            ids.iter().all(|id| {
                s.frames
                    .get(id)
                    .is_none_or(|f| f.ready.is_some() || f.failed.is_some())
            })
        })?;
        if done {
            self.check_failed(plan, frames)?;
        }
        Ok(done)
    }

    fn check_failed(&self, plan: &Plan, frames: &[InFlight]) -> Result<()> {
        for (f, part) in frames.iter().zip(&plan.parts) {
            match self.wl.state.frames.get(&f.id) {
                None => return Err(wl_err("screencopy", "the frame vanished")),
                Some(ev) => {
                    if let Some(why) = &ev.failed {
                        return Err(self.failed(part, why));
                    }
                }
            }
        }
        Ok(())
    }

    fn drop_frames(&mut self, frames: &[InFlight]) {
        for f in frames {
            f.proxy.destroy();
            self.wl.state.frames.remove(&f.id);
        }
    }

    fn cancel_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            self.drop_frames(&p.frames);
        }
    }

    /// The ready time of the frames, when the compositor gave a plausible
    /// `CLOCK_MONOTONIC` one, else `fallback`.
    fn ready_time(&self, frames: &[InFlight], fallback: u64) -> u64 {
        let now = framebus_core::monotonic_ns();
        frames
            .iter()
            .filter_map(|f| self.wl.state.frames.get(&f.id).and_then(|e| e.ready))
            .max()
            .filter(|&t| t > 0 && t <= now)
            .unwrap_or(fallback)
    }

    /// One complete grab: request, constraints, copy, ready. `guess` sends
    /// the copy with remembered constraints in the same flush.
    fn grab_once(
        &mut self,
        plan: &Plan,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
        guess: bool,
    ) -> Result<(Frame, Vec<Region>)> {
        let timestamp = framebus_core::monotonic_ns();
        let mut frames = self.request(plan, with_cursor);
        let remembered: Option<Vec<Constraint>> = guess
            .then(|| {
                plan.parts
                    .iter()
                    .map(|p| self.known.get(&(p.global, p.local)).copied())
                    .collect()
            })
            .flatten();
        let result = (|| {
            let (cons, sent_early) = match remembered {
                Some(c) => (c, true),
                None => (self.constraints(plan, &frames)?, false),
            };
            let (w, h) = Self::frame_size(plan, &cons)?;
            let layout = FrameLayout::new(w as usize, h as usize, PixelFormat::Bgra, None)?;
            let mut lease = self.lease(plan, &layout, pool, policy)?;
            let scratch = self.targets(plan, &cons, &layout)?;
            self.send_copies(plan, &mut frames, &cons, &lease, &scratch, &layout, false)?;
            if sent_early {
                // The guess must match what the compositor offers now.
                let offered = self.constraints(plan, &frames)?;
                if offered != cons {
                    return Ok(None);
                }
            }
            if !self.wait_ready(plan, &frames, FRAME_TIMEOUT)? {
                return Err(self.stuck("copying a frame"));
            }
            let ts = self.ready_time(&frames, timestamp);
            self.finish(plan, &frames, &mut lease, &scratch, &layout)?;
            let (lease, layout, _) = self.upright(plan, lease, layout, Vec::new(), pool)?;
            self.seq += 1;
            let whole = vec![Region::new(0, 0, layout.width as u32, layout.height as u32)];
            let frame = Frame::new(lease, layout)?
                .with_meta(ts, self.seq)
                .into_readonly();
            Ok(Some((frame, whole)))
        })();
        match result {
            Ok(Some(done)) => Ok(done),
            Ok(None) => {
                // A stale guess: forget it and go the slow way.
                self.drop_frames(&frames);
                for p in &plan.parts {
                    self.known.remove(&(p.global, p.local));
                }
                self.grab_once(plan, with_cursor, pool, policy, false)
            }
            Err(e) => {
                self.drop_frames(&frames);
                if guess
                    && matches!(e, CaptureError::Wayland { .. })
                    && self.wl.pump(Duration::ZERO).is_ok()
                {
                    // A guessed copy the compositor refused: retry unguessed once.
                    for p in &plan.parts {
                        self.known.remove(&(p.global, p.local));
                    }
                    return self.grab_once(plan, with_cursor, pool, policy, false);
                }
                Err(e)
            }
        }
    }
}

impl Source for WlrSource {
    fn backend(&self) -> Backend {
        Backend::WlrScreencopy
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
        self.wl.pump(Duration::ZERO)?;
        let d = self.desktop();
        Ok((d.width, d.height))
    }

    fn monitors(&mut self) -> Result<Vec<Monitor>> {
        self.wl.pump(Duration::ZERO)?;
        Ok(self.wl.monitors())
    }

    fn grab_with(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Frame> {
        self.cancel_pending();
        self.buffers.sweep();
        let plan = self.plan(region)?;
        let (frame, whole) = self.grab_once(&plan, with_cursor, pool, policy, true)?;
        if self.track_damage {
            // `copy` reports no damage: everything may have changed.
            self.last_damage = Some(whole);
        }
        Ok(frame)
    }

    fn track_damage(&mut self, _incremental: bool) -> Result<()> {
        // wlr-screencopy always writes the whole buffer: nothing to gain from
        // incremental grabs; damage comes with `copy_with_damage`.
        self.track_damage = true;
        Ok(())
    }

    fn tracks_damage(&self) -> bool {
        self.track_damage
    }

    fn is_incremental(&self) -> bool {
        false
    }

    fn last_damage(&self) -> Option<&[Region]> {
        self.last_damage.as_deref()
    }

    fn changed_since_last(&mut self, _region: Option<Region>) -> Result<bool> {
        // Only a `copy_with_damage` in flight can tell.
        self.wl.pump(Duration::ZERO)?;
        Ok(true)
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
        self.track_damage = true;
        if self.last_changed_region != Some(region) {
            // The first frame of a region always comes, at once. wlroots
            // answers a client's first `copy_with_damage` of an output at
            // once, all damaged, and starts its damage history there (a plain
            // `copy` first would make the next request return at once, with
            // nothing changed); a compositor that waits instead gets a `copy`.
            self.cancel_pending();
            self.last_changed_region = Some(region);
            if let Some(f) =
                self.grab_when_changed(region, with_cursor, pool, policy, FIRST_WAIT)?
            {
                return Ok(Some(f));
            }
            return self
                .grab_with(Some(region), with_cursor, pool, policy)
                .map(Some);
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.with_cursor != with_cursor)
        {
            self.cancel_pending();
        }
        if self.pending.is_none() {
            self.buffers.sweep();
            let plan = self.plan(Some(region))?;
            let timestamp = framebus_core::monotonic_ns();
            let mut frames = self.request(&plan, with_cursor);
            let started = (|| {
                let cons = self.constraints(&plan, &frames)?;
                let (w, h) = Self::frame_size(&plan, &cons)?;
                let layout = FrameLayout::new(w as usize, h as usize, PixelFormat::Bgra, None)?;
                let lease = self.lease(&plan, &layout, pool, policy)?;
                let scratch = self.targets(&plan, &cons, &layout)?;
                if scratch.iter().any(Option::is_some) {
                    // Outputs side by side need scratch slots that would have
                    // to live as long as the request: grab such a region the
                    // plain way (every tick is a frame).
                    return Ok(None);
                }
                self.send_copies(&plan, &mut frames, &cons, &lease, &scratch, &layout, true)?;
                Ok::<_, CaptureError>(Some((lease, layout)))
            })();
            match started {
                Ok(Some((lease, layout))) => {
                    self.pending = Some(Pending {
                        plan,
                        with_cursor,
                        lease,
                        layout,
                        frames,
                        timestamp,
                    });
                }
                Ok(None) => {
                    self.drop_frames(&frames);
                    return self
                        .grab_with(Some(region), with_cursor, pool, policy)
                        .map(Some);
                }
                Err(e) => {
                    self.drop_frames(&frames);
                    return Err(e);
                }
            }
        }
        let p = self.pending.as_ref().expect("set above");
        let ids: Vec<u64> = p.frames.iter().map(|f| f.id).collect();
        let any = self.wl.wait_until(timeout, |s: &WlState| {
            ids.iter().any(|id| {
                s.frames
                    .get(id)
                    .is_none_or(|f| f.ready.is_some() || f.failed.is_some())
            })
        })?;
        if !any {
            return Ok(None);
        }
        let mut p = self.pending.take().expect("set above");
        if let Err(e) = self.check_failed_ready(&p) {
            self.drop_frames(&p.frames);
            return Err(e);
        }
        // Parts whose output did not change: copy them now (plain `copy`).
        let still: Vec<usize> = p
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                self.wl
                    .state
                    .frames
                    .get(&f.id)
                    .is_some_and(|e| e.ready.is_none())
            })
            .map(|(i, _)| i)
            .collect();
        let scratch: Vec<Option<Lease>> = vec![None; p.frames.len()];
        let cons: Vec<Constraint> = p.frames.iter().map(|f| f.sent.expect("sent")).collect();
        for &i in &still {
            let old = &p.frames[i];
            old.proxy.destroy();
            self.wl.state.frames.remove(&old.id);
            let part_plan = Plan {
                region: p.plan.region,
                parts: vec![p.plan.parts[i].clone()],
                covers: true,
            };
            let mut fresh = self.request(&part_plan, p.with_cursor);
            let c = self.constraints(&part_plan, &fresh)?;
            if c[0] != cons[i] {
                self.drop_frames(&fresh);
                return Err(wl_err(
                    "screencopy",
                    "the output changed its buffer size during an on-change capture",
                ));
            }
            let target = &p.lease;
            let key = BufferKey {
                offset: (p.plan.parts[i].dst.1 as usize * p.layout.stride) as i32,
                width: c[0].1 as i32,
                height: c[0].2 as i32,
                stride: c[0].3 as i32,
                format: c[0].0,
            };
            let buffer = self.buffers.buffer(&self.wl, target, key)?;
            fresh[0].proxy.copy(&buffer);
            fresh[0].sent = Some(c[0]);
            p.frames[i] = fresh.pop().expect("one frame");
        }
        if !self.wait_ready(&p.plan, &p.frames, FRAME_TIMEOUT)? {
            self.drop_frames(&p.frames);
            return Err(self.stuck("copying a frame"));
        }
        let ts = self.ready_time(&p.frames, p.timestamp);
        let damage = self.finish(&p.plan, &p.frames, &mut p.lease, &scratch, &p.layout)?;
        let (lease, layout, damage) = self.upright(&p.plan, p.lease, p.layout, damage, pool)?;
        self.seq += 1;
        self.last_damage = Some(damage);
        let frame = Frame::new(lease, layout)?
            .with_meta(ts, self.seq)
            .into_readonly();
        Ok(Some(frame))
    }

    fn attached_segments(&self) -> usize {
        self.buffers.len()
    }
}

impl WlrSource {
    fn check_failed_ready(&self, p: &Pending) -> Result<()> {
        self.check_failed(&p.plan, &p.frames)
    }
}

impl Drop for WlrSource {
    fn drop(&mut self) {
        self.cancel_pending();
        self.buffers.clear();
        self.manager.destroy();
        let _ = self.wl.queue.flush();
    }
}

impl Dispatch<manager_v1::ZwlrScreencopyManagerV1, ()> for WlState {
    fn event(
        _: &mut Self,
        _: &manager_v1::ZwlrScreencopyManagerV1,
        _: manager_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<frame_v1::ZwlrScreencopyFrameV1, u64> for WlState {
    fn event(
        state: &mut Self,
        proxy: &frame_v1::ZwlrScreencopyFrameV1,
        event: frame_v1::Event,
        id: &u64,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        use wayland_client::Proxy;
        let Some(f) = state.frames.get_mut(id) else {
            return;
        };
        match event {
            frame_v1::Event::Buffer {
                format,
                width,
                height,
                stride,
            } => {
                let format = match format {
                    WEnum::Value(v) => v as u32,
                    WEnum::Unknown(v) => v,
                };
                f.shm.push((format, width, height, stride));
                // Version 1 and 2 frames send no buffer_done.
                if proxy.version() < 3 {
                    f.constraints_done = true;
                }
            }
            frame_v1::Event::BufferDone => f.constraints_done = true,
            frame_v1::Event::Flags { flags } => {
                let bits = match flags {
                    WEnum::Value(v) => v.bits(),
                    WEnum::Unknown(v) => v,
                };
                f.y_invert = bits & 1 != 0;
            }
            frame_v1::Event::Damage {
                x,
                y,
                width,
                height,
            } => f
                .damage
                .push(Region::new(x as i32, y as i32, width.max(1), height.max(1))),
            frame_v1::Event::Ready {
                tv_sec_hi,
                tv_sec_lo,
                tv_nsec,
            } => {
                let secs = ((tv_sec_hi as u64) << 32) | tv_sec_lo as u64;
                f.ready = Some(
                    secs.saturating_mul(1_000_000_000)
                        .saturating_add(tv_nsec as u64),
                );
            }
            frame_v1::Event::Failed => {
                f.failed = Some(
                    "the copy failed (the output may have gone, or the buffer did not match)"
                        .to_owned(),
                )
            }
            _ => {}
        }
    }
}
