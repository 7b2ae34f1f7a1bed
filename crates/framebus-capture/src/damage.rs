//! XDamage: what changed on the screen, and which rows a reused slot must
//! copy again (incremental grabs, `frame.damage`, `on_change`).
//!
//! ```text
//!  X server ── DamageNotify (DeltaRectangles on the root) ──▶ history: (stamp, rect)…
//!  grab into slot S ── rows to copy = rects stamped ≥ S's epoch, as full-width bands
//!                  └─ after the reply: rects that arrived with it outside the copied
//!                     rows may predate the copy ─▶ another round (≤ 2, then full)
//! ```
//!
//! **Why the bookkeeping is exact.** The server reports a change to us before
//! it replies to any request of ours it processes later (events and replies
//! share one ordered stream). Every reply of ours ends an epoch: `tick` counts
//! them, and each rectangle is stamped with the tick at which we read it, so a
//! rectangle stamped `t` changed after epoch `t - 1` ended, and possibly after
//! epoch `t` too (x11rb may read past a reply). A slot whose pixels were copied
//! in epoch `E` is therefore up to date except inside the rectangles stamped
//! `≥ E`. Rectangles that arrive with a grab's reply and lie outside the rows
//! it copied may predate the copy, so the grab copies them in another round.
//!
//! **DeltaRectangles + `DamageSubtract(None, None)`** before each round: the
//! server reports only area not yet reported since the last subtract, so an
//! idle grabber on a busy screen receives at most one event per newly damaged
//! area (RawRectangles would queue one per drawing request), and no round
//! trip is spent fetching an XFixes region (NonEmpty + `XFixesFetchRegion`).
//! A repeat change that is not reported lies inside a rectangle reported since
//! the last subtract, which is stamped no earlier than any slot it can stale.
//!
//! **Rectangles where the server lends a pixmap, else full-width bands.**
//! `ShmGetImage` writes its image packed at its own width: only a band of
//! whole frame rows `[y0, y1)` lands in the slot at `y0 * stride` with the
//! slot's stride, so a 960×432 change on a 4K screen costs 432 whole rows
//! (20 % of the frame for 5 % of the pixels). With MIT-SHM shared pixmaps
//! (`shm::SegmentCache::copy_rects`) the slot's memory *is* a pixmap of the
//! frame's size, and `CopyArea` from the root writes each changed rectangle
//! in place with the slot's stride: only the changed pixels move, one small
//! request each, all pipelined behind one round trip. Without shared pixmaps
//! (or on XGetImage) a round copies bands, one request each, pipelined too.
//! Rectangles are simplified to at most [`MAX_RECTS`] (a superset); bands
//! closer than [`MERGE_GAP`] rows are merged, more than [`MAX_BANDS`] bands
//! make a full grab; either covering more than [`FULL_PERCENT`] % of the
//! frame makes a full grab (one request, and nothing to gain).
//!
//! **Fallbacks to a full grab**: a slot this tracker never filled (fresh,
//! trimmed and remapped, another region), history dropped past the slot's
//! epoch (more than [`MAX_HISTORY`] rectangles kept), a screen change (RandR),
//! or a pool that someone else acquired from since our last grab (they may
//! have written a free slot: checked with the pool's acquire counter).
//!
//! Used by the `Grabber`; depends on `connection`.

use crate::connection::XConn;
use crate::{CaptureError, Region, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::Weak;
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::Event;

/// Rectangles kept in the history before the oldest are dropped (slots older
/// than a dropped rectangle are then grabbed in full).
pub(crate) const MAX_HISTORY: usize = 1 << 16;
/// Bands whose gap is smaller than this many rows are fetched as one.
pub(crate) const MERGE_GAP: u32 = 16;
/// More bands than this: grab in full.
pub(crate) const MAX_BANDS: usize = 32;
/// A rectangle-copying round sends at most this many `CopyArea`s (more
/// rectangles are merged into a covering set).
pub(crate) const MAX_RECTS: usize = 64;
/// Copies covering more than this share of the frame: grab in full.
pub(crate) const FULL_PERCENT: u64 = 75;
/// Fix-up rounds (for changes that raced a copy) before a full grab.
pub(crate) const MAX_ROUNDS: usize = 3;
/// `frame.damage` is simplified to at most this many rectangles (a superset).
pub(crate) const MAX_FRAME_RECTS: usize = 64;

/// A half-open rectangle `[x0, x1) × [y0, y1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Rect {
    pub fn of(r: Region) -> Rect {
        Rect {
            x0: r.left,
            y0: r.top,
            x1: r.left + r.width as i32,
            y1: r.top + r.height as i32,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.x0 >= self.x1 || self.y0 >= self.y1
    }

    pub fn intersect(&self, o: &Rect) -> Rect {
        Rect {
            x0: self.x0.max(o.x0),
            y0: self.y0.max(o.y0),
            x1: self.x1.min(o.x1),
            y1: self.y1.min(o.y1),
        }
    }

    fn contains(&self, o: &Rect) -> bool {
        self.x0 <= o.x0 && self.y0 <= o.y0 && self.x1 >= o.x1 && self.y1 >= o.y1
    }

    /// This rectangle (root coordinates) clipped to `region`, in the region's
    /// frame coordinates; None when they do not meet.
    pub fn in_frame(&self, region: Region) -> Option<Rect> {
        let c = self.intersect(&Rect::of(region));
        (!c.is_empty()).then(|| Rect {
            x0: c.x0 - region.left,
            y0: c.y0 - region.top,
            x1: c.x1 - region.left,
            y1: c.y1 - region.top,
        })
    }

    pub fn to_region(self) -> Region {
        Region::new(
            self.x0,
            self.y0,
            (self.x1 - self.x0) as u32,
            (self.y1 - self.y0) as u32,
        )
    }
}

/// Row bands `[y0, y1)` covering every rectangle, merged when closer than
/// `gap` rows, sorted.
pub(crate) fn bands(rects: impl IntoIterator<Item = Rect>, gap: u32) -> Vec<(u32, u32)> {
    let mut rows: Vec<(u32, u32)> = rects
        .into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| (r.y0.max(0) as u32, r.y1.max(0) as u32))
        .filter(|(a, b)| a < b)
        .collect();
    rows.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (a, b) in rows {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(gap) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// What one round copies into a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The whole region (one request).
    Full,
    /// Whole-row bands `[y0, y1)`, sorted and disjoint (`ShmGetImage` or
    /// `GetImage` at `y0 * stride`). Empty: nothing changed.
    Bands(Vec<(u32, u32)>),
    /// Rectangles in frame coordinates (`CopyArea` into the slot's shared
    /// pixmap). Empty: nothing changed.
    Rects(Vec<Rect>),
}

impl Plan {
    /// The way to copy `rects` (frame coordinates) of `region`: rectangles
    /// when `by_rect`, else row bands; `Full` past the limits.
    pub fn of(rects: Vec<Rect>, region: Region, by_rect: bool) -> Plan {
        let (w, h) = (region.width as u64, region.height as u64);
        if by_rect {
            let rs = simplify(rects, MAX_RECTS);
            let area: u64 = rs
                .iter()
                .map(|r| (r.x1 - r.x0) as u64 * (r.y1 - r.y0) as u64)
                .sum();
            if area * 100 > w * h * FULL_PERCENT {
                return Plan::Full;
            }
            Plan::Rects(rs)
        } else {
            let bs = bands(rects, MERGE_GAP);
            let rows: u64 = bs.iter().map(|(a, b)| (b - a) as u64).sum();
            if bs.len() > MAX_BANDS || rows * 100 > h * FULL_PERCENT {
                return Plan::Full;
            }
            Plan::Bands(bs)
        }
    }

    /// True when the plan copies nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            Plan::Full => false,
            Plan::Bands(b) => b.is_empty(),
            Plan::Rects(r) => r.is_empty(),
        }
    }

    /// True when the plan copies every pixel of `r`.
    fn covers(&self, r: &Rect) -> bool {
        match self {
            Plan::Full => true,
            Plan::Bands(b) => rows_covered(b, r),
            Plan::Rects(rs) => rs.iter().any(|k| k.contains(r)),
        }
    }
}

/// True when every row of `r` lies in one of `bands` (sorted, disjoint).
fn rows_covered(bands: &[(u32, u32)], r: &Rect) -> bool {
    let (y0, y1) = (r.y0.max(0) as u32, r.y1.max(0) as u32);
    bands.iter().any(|&(a, b)| a <= y0 && y1 <= b)
}

/// `rects` deduplicated (a rectangle inside another is dropped) and, past
/// `max`, replaced by the bounding box of each row band: always a superset.
pub(crate) fn simplify(mut rects: Vec<Rect>, max: usize) -> Vec<Rect> {
    rects.retain(|r| !r.is_empty());
    rects.sort_unstable_by_key(|r| std::cmp::Reverse((r.x1 - r.x0) as i64 * (r.y1 - r.y0) as i64));
    let mut kept: Vec<Rect> = Vec::with_capacity(rects.len().min(max * 2));
    for r in rects {
        if kept.len() > 4 * max {
            kept.push(r); // too many to compare pairwise: simplified below anyway
        } else if !kept.iter().any(|k| k.contains(&r)) {
            kept.push(r);
        }
    }
    if kept.len() <= max {
        kept.sort_unstable_by_key(|r| (r.y0, r.x0));
        return kept;
    }
    let mut gap = 0;
    loop {
        let bs = bands(kept.iter().copied(), gap);
        if bs.len() <= max {
            return bs
                .iter()
                .map(|&(a, b)| {
                    let inside = kept.iter().filter(|r| r.y0 as u32 >= a && r.y1 as u32 <= b);
                    let (mut x0, mut x1) = (i32::MAX, i32::MIN);
                    for r in inside {
                        x0 = x0.min(r.x0);
                        x1 = x1.max(r.x1);
                    }
                    Rect {
                        x0,
                        y0: a as i32,
                        x1,
                        y1: b as i32,
                    }
                })
                .collect();
        }
        gap = (gap * 2).max(1);
    }
}

/// Add the damage `more` to `into` (both in the same frame coordinates):
/// the union, simplified to at most [`MAX_FRAME_RECTS`] rectangles. None (not
/// tracked) on either side gives None.
pub(crate) fn merge_damage(into: &mut Option<Vec<Region>>, more: Option<Vec<Region>>) {
    match (into.as_mut(), more) {
        (Some(a), Some(b)) => {
            let rects = a.iter().chain(&b).map(|r| Rect::of(*r)).collect();
            *a = simplify(rects, MAX_FRAME_RECTS)
                .into_iter()
                .map(Rect::to_region)
                .collect();
        }
        _ => *into = None,
    }
}

/// What a slot holds: pixels of `region` as of epoch `epoch`, with the cursor
/// blended into `cursor` (frame coordinates) if it was.
struct SlotState {
    epoch: u64,
    region: Region,
    cursor: Option<Rect>,
    alive: Weak<()>,
}

/// The previous frame, for `frame.damage`.
struct LastFrame {
    epoch: u64,
    region: Region,
    cursor: Option<Rect>,
}

/// The damage subscription and history of one connection.
pub(crate) struct DamageTracker {
    damage: damage::Damage,
    /// Copy only what changed (else: only report it).
    pub incremental: bool,
    /// Replies received so far (each ends an epoch).
    tick: u64,
    /// History is complete for stamps ≥ `floor`.
    floor: u64,
    history: VecDeque<(u64, Rect)>,
    slots: HashMap<u64, SlotState>,
    last: Option<LastFrame>,
    /// The grabber pool's acquire counter after our last acquire.
    acquires_seen: Option<u64>,
}

impl DamageTracker {
    /// Subscribe to damage of the root window (DAMAGE ≥ 1.1 needed).
    pub fn new(xc: &XConn, incremental: bool) -> Result<DamageTracker> {
        let unavailable = |reason: String| CaptureError::BackendUnavailable {
            backend: "damage",
            reason,
        };
        if !xc.has_extension(damage::X11_EXTENSION_NAME)? {
            return Err(unavailable("the X server has no DAMAGE extension".into()));
        }
        // XFixes must be initialised before Damage on the client side (regions).
        let _ = x11rb::protocol::xfixes::ConnectionExt::xfixes_query_version(&xc.conn, 4, 0)
            .map_err(|e| CaptureError::x("XFixesQueryVersion", e))?
            .reply();
        let v = xc
            .conn
            .damage_query_version(1, 1)
            .map_err(|e| CaptureError::x("DamageQueryVersion", e))?
            .reply()
            .map_err(|e| CaptureError::x("DamageQueryVersion", e))?;
        if (v.major_version, v.minor_version) < (1, 1) {
            return Err(unavailable(format!(
                "DAMAGE {}.{} is too old (1.1 needed)",
                v.major_version, v.minor_version
            )));
        }
        let id = x11rb::connection::Connection::generate_id(&xc.conn)
            .map_err(|e| CaptureError::x("generate_id", e))?;
        xc.conn
            .damage_create(id, xc.root, damage::ReportLevel::DELTA_RECTANGLES)
            .map_err(|e| CaptureError::x("DamageCreate", e))?
            .check()
            .map_err(|e| CaptureError::x("DamageCreate", e))?;
        Ok(DamageTracker {
            damage: id,
            incremental,
            tick: 1,
            floor: 1,
            history: VecDeque::new(),
            slots: HashMap::new(),
            last: None,
            acquires_seen: None,
        })
    }

    /// Take one event (the grabber's event loop hands every event here).
    pub fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::DamageNotify(n) if n.damage == self.damage => {
                let a = n.area;
                self.push(Rect {
                    x0: a.x as i32,
                    y0: a.y as i32,
                    x1: a.x as i32 + a.width as i32,
                    y1: a.y as i32 + a.height as i32,
                });
            }
            Event::RandrScreenChangeNotify(_) | Event::RandrNotify(_) => self.forget(),
            _ => {}
        }
    }

    fn push(&mut self, r: Rect) {
        if r.is_empty() {
            return;
        }
        if self.history.len() >= MAX_HISTORY {
            if let Some((stamp, _)) = self.history.pop_front() {
                self.floor = self.floor.max(stamp + 1);
            }
        }
        self.history.push_back((self.tick, r));
    }

    /// Nothing known before now is trusted any more (screen change, pool
    /// written by someone else): the next grab of every slot is full.
    pub fn forget(&mut self) {
        self.floor = self.tick + 1;
        self.history.clear();
        self.slots.clear();
    }

    /// Clear the server's damage region before a round (so the next change
    /// anywhere is reported again). No reply; an error would be an event.
    pub fn subtract(&self, xc: &XConn) -> Result<()> {
        xc.conn
            .damage_subtract(self.damage, x11rb::NONE, x11rb::NONE)
            .map_err(|e| CaptureError::x("DamageSubtract", e))?;
        Ok(())
    }

    /// A round's reply arrived: a new epoch starts.
    pub fn end_epoch(&mut self) {
        self.tick += 1;
    }

    /// Check the pool's acquire counter around our acquire (`before`,
    /// `after`): anyone else's acquire in between may have written a free slot.
    pub fn check_pool(&mut self, before: u64, after: u64) -> bool {
        let trusted = self.acquires_seen == Some(before) && after == before + 1;
        self.acquires_seen = Some(after);
        if !trusted {
            self.slots.clear();
        }
        trusted
    }

    fn since(&self, epoch: u64, region: Region) -> impl Iterator<Item = Rect> + '_ {
        // Stamps only grow along the deque: search the first one ≥ epoch.
        let start = self.history.partition_point(|(s, _)| *s < epoch);
        self.history
            .range(start..)
            .filter_map(move |(_, r)| r.in_frame(region))
    }

    /// What to copy into `slot_id` for `region` (rectangles when `by_rect`,
    /// else row bands): `Full` when the slot's pixels are not vouched for.
    pub fn plan(&mut self, slot_id: u64, alive: &Weak<()>, region: Region, by_rect: bool) -> Plan {
        self.slots.retain(|_, s| s.alive.strong_count() > 0);
        let Some(s) = self.slots.get(&slot_id) else {
            return Plan::Full;
        };
        if s.region != region || s.epoch < self.floor || !Weak::ptr_eq(&s.alive, alive) {
            return Plan::Full;
        }
        let rects = self.since(s.epoch, region).chain(s.cursor).collect();
        Plan::of(rects, region, by_rect)
    }

    /// After a round that copied `copied`: what to copy in another round
    /// (changes read with the reply, outside what was copied), or None when
    /// the slot is up to date.
    pub fn late(&self, region: Region, copied: &Plan, by_rect: bool) -> Option<Plan> {
        let late: Vec<Rect> = self
            .since(self.tick, region)
            .filter(|r| !copied.covers(r))
            .collect();
        (!late.is_empty()).then(|| Plan::of(late, region, by_rect))
    }

    /// The current epoch (a round's reply ends it).
    pub fn epoch(&self) -> u64 {
        self.tick
    }

    /// True when history was dropped (a screen change) after `epoch` began:
    /// copies made since may have missed pixels.
    pub fn forgot_since(&self, epoch: u64) -> bool {
        self.floor > epoch
    }

    /// The grab is done: the slot holds `region` as of now. Returns the
    /// frame's damage in frame coordinates (changes since the previous frame).
    pub fn record(
        &mut self,
        slot_id: u64,
        alive: Weak<()>,
        region: Region,
        cursor: Option<Rect>,
        track_slot: bool,
    ) -> Vec<Region> {
        let whole = Rect::of(Region::new(0, 0, region.width, region.height));
        let rects = match &self.last {
            Some(l) if l.region == region && l.epoch >= self.floor => {
                let mut v: Vec<Rect> = self.since(l.epoch, region).collect();
                v.extend(l.cursor);
                v.extend(cursor);
                simplify(v, MAX_FRAME_RECTS)
            }
            _ => vec![whole],
        };
        self.last = Some(LastFrame {
            epoch: self.tick,
            region,
            cursor,
        });
        if track_slot {
            self.slots.insert(
                slot_id,
                SlotState {
                    epoch: self.tick,
                    region,
                    cursor,
                    alive,
                },
            );
        }
        self.prune();
        rects.into_iter().map(Rect::to_region).collect()
    }

    /// True when something changed inside `region` since the previous frame
    /// (as far as the events read so far tell).
    pub fn changed_since_last(&self, region: Region) -> bool {
        match &self.last {
            Some(l) if l.region == region && l.epoch >= self.floor => {
                self.since(l.epoch, region).next().is_some()
            }
            _ => true,
        }
    }

    /// Drop history no live slot and not the last frame needs.
    fn prune(&mut self) {
        self.slots.retain(|_, s| s.alive.strong_count() > 0);
        let need = self
            .slots
            .values()
            .map(|s| s.epoch)
            .chain(self.last.as_ref().map(|l| l.epoch))
            .min()
            .unwrap_or(self.tick);
        while self.history.front().is_some_and(|(s, _)| *s < need) {
            self.history.pop_front();
        }
    }

    /// Slots whose pixels the tracker vouches for (tests).
    pub fn tracked_slots(&self) -> usize {
        self.slots.len()
    }

    /// Stop reporting (shutdown). Errors are ignored: the server frees a
    /// client's damage objects when it disconnects.
    pub fn destroy(&self, xc: &XConn) {
        let _ = xc.conn.damage_destroy(self.damage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x0: i32, y0: i32, x1: i32, y1: i32) -> Rect {
        Rect { x0, y0, x1, y1 }
    }

    #[test]
    fn bands_merge_overlapping_and_near_rows() {
        let b = bands(
            [
                r(0, 10, 5, 20),
                r(3, 15, 9, 30),
                r(0, 40, 1, 41),
                r(0, 100, 1, 110),
            ],
            16,
        );
        assert_eq!(b, vec![(10, 41), (100, 110)]);
        assert_eq!(
            bands([r(0, 10, 5, 20), r(0, 21, 1, 22)], 0),
            vec![(10, 20), (21, 22)]
        );
        assert!(
            bands([r(5, 5, 5, 9)], 16).is_empty(),
            "empty rects give no band"
        );
        assert!(rows_covered(&[(10, 41)], &r(0, 12, 3, 41)));
        assert!(!rows_covered(&[(10, 41)], &r(0, 12, 3, 42)));
    }

    #[test]
    fn rects_clip_to_the_region_in_frame_coordinates() {
        let reg = Region::new(10, 20, 30, 40);
        assert_eq!(r(0, 0, 15, 25).in_frame(reg), Some(r(0, 0, 5, 5)));
        assert_eq!(r(39, 59, 100, 100).in_frame(reg), Some(r(29, 39, 30, 40)));
        assert_eq!(r(40, 0, 100, 100).in_frame(reg), None);
    }

    #[test]
    fn simplify_is_a_bounded_superset() {
        let rects: Vec<Rect> = (0..500)
            .map(|i| r(i % 97, i * 3, i % 97 + 2, i * 3 + 2))
            .collect();
        let s = simplify(rects.clone(), 8);
        assert!(s.len() <= 8);
        for x in &rects {
            assert!(s.iter().any(|k| k.contains(x)), "{x:?} not covered");
        }
        let s = simplify(vec![r(0, 0, 10, 10), r(2, 2, 3, 3), r(20, 0, 21, 1)], 8);
        assert_eq!(s, vec![r(0, 0, 10, 10), r(20, 0, 21, 1)]);
    }
}
