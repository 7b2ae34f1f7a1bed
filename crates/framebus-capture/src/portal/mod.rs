//! The ScreenCast portal backend: any desktop with an `xdg-desktop-portal`
//! (GNOME, KDE, wlroots through xdg-desktop-portal-wlr) gives us a PipeWire
//! stream of a monitor or a window, and its buffers become [`Frame`]s.
//!
//! ```text
//!  PortalSource::open
//!     dbus  CreateSession → SelectSources (types, cursor_mode, persist_mode=2,
//!           restore_token from $XDG_STATE_HOME/framebus/) → Start → OpenPipeWireRemote
//!     pw    libpipewire (dlopen'd) stream on that fd: EnumFormat BGRx/BGRA,
//!           memfd buffers mapped by us, the newest one kept
//!  grab()
//!     whole stream, and the producer has buffers to spare → zero copy: the
//!        buffer becomes a foreign Slot (Slot::from_owner) whose last lease
//!        queues it back to PipeWire
//!     otherwise (a region, too few buffers, DMA-BUF or plain-memory buffers)
//!        → one copy into a pool slot, counted in `stats().copies` and said in
//!        `backend_reason()`
//! ```
//!
//! Coordinates are the stream's: (0, 0) is its top-left pixel; where the
//! portal reports it, the stream's place on the desktop is in
//! [`PortalSource::streams`].

pub(crate) mod dbus;
pub(crate) mod pod;
pub(crate) mod pw;

use crate::damage::{simplify, Rect, MAX_FRAME_RECTS};
use crate::source::Source;
use crate::{Backend, CaptureError, Monitor, Region, Result};
use framebus_core::{Exhausted, Frame, FrameLayout, FramePool, Lease, PixelFormat, Slot};
use std::sync::Arc;
use std::time::Duration;

pub use dbus::PortalStream;

/// What to ask the portal for.
#[derive(Clone, Debug)]
pub struct PortalOptions {
    /// Offer monitors to the user.
    pub monitors: bool,
    /// Offer windows to the user.
    pub windows: bool,
    /// Ask for the cursor drawn into the frames (if the portal can).
    pub cursor: bool,
    /// Remember the user's choice (`persist_mode = 2`, token kept under
    /// `$XDG_STATE_HOME/framebus/`), so the next run does not ask again.
    pub restore: bool,
    /// Time allowed for each portal answer, including the user's choice in
    /// the compositor's dialog.
    pub portal_timeout: Duration,
    /// Time allowed for the first frame to arrive.
    pub first_frame_timeout: Duration,
}

impl Default for PortalOptions {
    fn default() -> Self {
        PortalOptions {
            monitors: true,
            windows: false,
            cursor: false,
            restore: true,
            portal_timeout: Duration::from_secs(120),
            first_frame_timeout: Duration::from_secs(5),
        }
    }
}

impl PortalOptions {
    /// Which sources to offer, by the name users write: "monitor",
    /// "window", or "any" (the user picks either in the compositor's dialog).
    pub fn with_sources(self, sources: &str) -> Result<PortalOptions> {
        let (monitors, windows) = match sources.to_ascii_lowercase().as_str() {
            "monitor" | "monitors" | "screen" => (true, false),
            "window" | "windows" => (false, true),
            "any" | "monitor+window" | "both" => (true, true),
            _ => {
                return Err(CaptureError::BadArgument(format!(
                    "portal_source must be \"monitor\", \"window\" or \"any\", not {sources:?}"
                )))
            }
        };
        Ok(PortalOptions {
            monitors,
            windows,
            ..self
        })
    }
}

/// Counters of a portal source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortalStats {
    /// Frames handed out as PipeWire's own buffer (no copy).
    pub zero_copy: u64,
    /// Frames copied once into a pool slot.
    pub copies: u64,
    /// Buffers the PipeWire stream has.
    pub buffers: usize,
    /// Buffers held by frames (or kept as the newest) right now.
    pub held: usize,
}

/// One portal session and its PipeWire stream, shared by every
/// [`PortalSource`] of this process opened with the same source types and
/// cursor mode: a second grabber neither asks the user again nor waits for
/// a first frame (on wlroots a new session gets one only when the screen
/// changes). It ends when the last source (and held frame) is gone.
struct Shared {
    // field order = drop order: the stream first, then the session
    stream: Arc<pw::Stream>,
    session: dbus::Session,
    streams: Vec<PortalStream>,
    restored_with_token: bool,
}

type SharedKey = (u32, bool);

/// Open sessions of this process, by (source types, cursor).
static OPEN: std::sync::Mutex<Vec<(SharedKey, std::sync::Weak<Shared>)>> =
    std::sync::Mutex::new(Vec::new());

/// A capture source on the ScreenCast portal. Dropping the last one of a
/// session ends the stream and closes the portal session (frames still held
/// keep their buffers mapped).
pub struct PortalSource {
    pool: FramePool,
    stream: Arc<pw::Stream>,
    shared: Arc<Shared>,
    streams: Vec<PortalStream>,
    restored_with_token: bool,
    cursor: bool,
    first_frame_timeout: Duration,
    last_seq: u64,
    stats: PortalStats,
    reason: Option<String>,
    /// Damage tracking (see [`Source::track_damage`]): the changed
    /// rectangles of the last grab (from the producer's `SPA_META_VideoDamage`),
    /// and the sequence number it showed.
    damage: Option<Vec<Region>>,
    damage_seq: u64,
    /// The region of the frame `damage` belongs to (a new region: the whole frame).
    damage_region: Option<Region>,
}

impl std::fmt::Debug for PortalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalSource")
            .field("streams", &self.streams)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Why a frame is not PipeWire's own buffer.
fn portal_err(step: &'static str, detail: impl Into<String>) -> CaptureError {
    CaptureError::Portal {
        step,
        detail: detail.into(),
    }
}

impl PortalSource {
    /// Open a portal session (which may show the compositor's picker, unless
    /// a saved restore token is accepted) and connect its PipeWire stream.
    pub fn open(pool: FramePool, opts: PortalOptions) -> Result<PortalSource> {
        let source_types = (opts.monitors as u32 * dbus::SOURCE_MONITOR)
            | (opts.windows as u32 * dbus::SOURCE_WINDOW);
        if source_types == 0 {
            return Err(CaptureError::BadArgument(
                "the portal needs monitors or windows (or both) to offer".into(),
            ));
        }
        // Fail early, before any dialog, when PipeWire is not there.
        pw::available().map_err(|e| portal_err("load PipeWire", e))?;
        let key = (source_types, opts.cursor);
        // Held while a session opens, so two grabbers opening at once share
        // one dialog instead of showing two.
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        let reuse = open
            .iter()
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, w)| w.upgrade())
            .find(|sh| !sh.stream.failed());
        let shared = match reuse {
            Some(sh) => sh,
            None => {
                let started = dbus::start(&dbus::Request {
                    source_types,
                    cursor: opts.cursor,
                    restore: opts.restore,
                    timeout: opts.portal_timeout,
                })?;
                let node = started.streams[0].node_id;
                let stream = pw::Stream::connect(started.fd, node)?;
                let sh = Arc::new(Shared {
                    stream,
                    session: started.session,
                    streams: started.streams,
                    restored_with_token: started.restored_with_token,
                });
                open.push((key, Arc::downgrade(&sh)));
                sh
            }
        };
        drop(open);
        Ok(PortalSource {
            pool,
            stream: shared.stream.clone(),
            streams: shared.streams.clone(),
            restored_with_token: shared.restored_with_token,
            shared,
            cursor: opts.cursor,
            first_frame_timeout: opts.first_frame_timeout,
            last_seq: 0,
            stats: PortalStats::default(),
            reason: None,
            damage: None,
            damage_seq: 0,
            damage_region: None,
        })
    }

    /// The streams the portal started (node id, desktop position and size).
    pub fn streams(&self) -> &[PortalStream] {
        &self.streams
    }

    /// True when the session was started with a saved restore token.
    pub fn restored_with_token(&self) -> bool {
        self.restored_with_token
    }

    /// Where the restore token is kept.
    pub fn token_path() -> Option<std::path::PathBuf> {
        dbus::token_path()
    }

    /// The pool frames come from by default.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// The open portal session's object path.
    pub fn session_handle(&self) -> &str {
        self.shared.session.handle()
    }

    /// Counters: zero-copy frames, copies, buffers.
    pub fn stats(&self) -> PortalStats {
        let (buffers, held) = self.stream.buffer_counts();
        PortalStats {
            buffers,
            held,
            ..self.stats
        }
    }

    /// Why frames are (also) copied, when they are.
    pub fn backend_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    fn wait_first(&self) -> Result<()> {
        if self.stream.seq() > 0 {
            return Ok(());
        }
        if !self.stream.wait_frame(0, self.first_frame_timeout)? {
            return Err(portal_err(
                "waiting for the first frame",
                format!(
                    "no frame from PipeWire within {:.1} s (the stream is {}; on wlroots, \
                     xdg-desktop-portal-wlr sends a new session its first frame only when the \
                     screen changes; elsewhere, is a session manager such as WirePlumber \
                     running?)",
                    self.first_frame_timeout.as_secs_f64(),
                    if self.stream.streaming() {
                        "streaming"
                    } else {
                        "not streaming"
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Size of the stream (waits for the first frame).
    pub fn screen_size(&mut self) -> Result<(u32, u32)> {
        self.wait_first()?;
        let f = self
            .stream
            .format()
            .ok_or_else(|| portal_err("reading the stream format", "no format negotiated"))?;
        Ok((f.width, f.height))
    }

    /// Index 0: the whole stream; then the stream itself as one monitor
    /// (named after the portal's stream id, or "portal").
    pub fn monitors(&mut self) -> Result<Vec<Monitor>> {
        let (w, h) = self.screen_size()?;
        let name = self.streams[0]
            .id
            .clone()
            .unwrap_or_else(|| "portal".into());
        let m = |name: String| Monitor {
            left: 0,
            top: 0,
            width: w,
            height: h,
            name,
            output: None,
            primary: false,
            description: Some("xdg-desktop-portal ScreenCast stream".into()),
            scale: 1.0,
            transform: 0,
            physical: (w, h),
        };
        Ok(vec![
            m("all".into()),
            Monitor {
                primary: true,
                ..m(name)
            },
        ])
    }

    /// The newest frame of the stream. `region` crops (a copy, unless it is
    /// the whole stream); `with_cursor` must match what the session was
    /// opened with (the portal decides the cursor per session).
    pub fn grab(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Frame> {
        if with_cursor && !self.cursor {
            return Err(CaptureError::BadArgument(
                "the portal session was opened without the cursor: open the portal source \
                 with cursor=true to capture it"
                    .into(),
            ));
        }
        self.wait_first()?;
        let hold = self.stream.latest()?;
        let (w, h) = (hold.format.width, hold.format.height);
        let region = region.unwrap_or(Region::new(0, 0, w, h));
        region.check_inside(w, h)?;
        self.last_seq = hold.seq;
        let (seq, ts) = (hold.seq, hold.timestamp_ns);
        let whole = region == Region::new(0, 0, w, h);
        let (buffers, held) = self.stream.buffer_counts();
        // The producer must keep at least two buffers to draw into.
        let spare = held + 2 <= buffers;
        if whole && hold.mappable() && spare && hold.len >= hold.stride * h as usize {
            let layout =
                FrameLayout::new(w as usize, h as usize, PixelFormat::Bgra, Some(hold.stride))?;
            let (ptr, len) = (hold.ptr, hold.len);
            // SAFETY: `hold` keeps our read-only mapping of the buffer (an
            // Arc<Mapping>) and the buffer out of PipeWire's hands until it is
            // dropped, which is what the slot's owner drop does; the producer
            // writes a buffer only after it is queued back.
            let slot = unsafe { Slot::from_owner(ptr, len, None, Box::new(hold)) };
            let frame = Frame::new(Lease::detached(slot), layout)?
                .with_meta(ts, seq)
                .into_readonly();
            self.stats.zero_copy += 1;
            return Ok(frame);
        }
        let pool = pool.unwrap_or(&self.pool);
        let layout = FrameLayout::new(
            region.width as usize,
            region.height as usize,
            PixelFormat::Bgra,
            None,
        )?;
        let mut lease = match policy {
            Some(p) => pool.acquire_with(layout.byte_len(), p)?,
            None => pool.acquire(layout.byte_len())?,
        };
        let dst = lease
            .get_mut()
            .ok_or_else(|| portal_err("copying a frame", "a fresh pool slot was shared"))?;
        pw::Stream::copy_rows(
            &hold,
            region.left as usize * 4,
            region.width as usize * 4,
            region.top as usize..region.top as usize + region.height as usize,
            dst,
            layout.stride,
        );
        drop(hold);
        self.stats.copies += 1;
        if !whole {
            // a crop is a copy by nature; nothing to explain
        } else {
            self.reason = Some(if !spare {
                format!(
                    "portal: the producer has {buffers} PipeWire buffers and frames already \
                     hold {}; holding more would leave it fewer than 2 to draw into, so frames \
                     past that are copied once into a pool slot (counted in stats().copies)",
                    held.saturating_sub(1)
                )
            } else if self.stream.saw_dmabuf() {
                "portal: DMA-BUF buffers are copied once into a pool slot (DMA_BUF_IOCTL_SYNC \
                 around the read; counted in stats().copies)"
                    .to_string()
            } else {
                "portal: the buffers are not memfds framebus can map, so each frame is copied \
                 once into a pool slot (counted in stats().copies)"
                    .to_string()
            });
        }
        Ok(Frame::new(lease, layout)?
            .with_meta(ts, seq)
            .into_readonly())
    }

    /// Wait up to `timeout` for a frame newer than the last one grabbed.
    pub fn wait_for_change(&mut self, timeout: Duration) -> Result<bool> {
        self.stream.wait_frame(self.last_seq, timeout)
    }

    /// Whether a frame newer than the last grab has arrived (does not block).
    pub fn has_new_frame(&self) -> bool {
        self.stream.seq() > self.last_seq
    }
}

/// Open the portal as a [`Grabber`](crate::Grabber) source.
pub(crate) fn open_source(pool: FramePool, opts: &PortalOptions) -> Result<Box<dyn Source>> {
    PortalSource::open(pool, opts.clone()).map(|s| Box::new(s) as Box<dyn Source>)
}

impl Source for PortalSource {
    fn backend(&self) -> Backend {
        Backend::Portal
    }

    fn backend_reason(&self) -> Option<&str> {
        PortalSource::backend_reason(self)
    }

    fn display(&self) -> &str {
        "portal"
    }

    fn pool(&self) -> &FramePool {
        &self.pool
    }

    fn screen_size(&mut self) -> Result<(u32, u32)> {
        PortalSource::screen_size(self)
    }

    fn monitors(&mut self) -> Result<Vec<Monitor>> {
        PortalSource::monitors(self)
    }

    fn grab_with(
        &mut self,
        region: Option<Region>,
        with_cursor: bool,
        pool: Option<&FramePool>,
        policy: Option<Exhausted>,
    ) -> Result<Frame> {
        let frame = self.grab(region, with_cursor, pool, policy)?;
        if self.damage.is_some() {
            let (w, h) = (frame.width() as u32, frame.height() as u32);
            // Frame coordinates: the region's, or the whole stream's.
            let region = region.unwrap_or(Region::new(0, 0, w, h));
            let known = (self.damage_seq > 0 && self.damage_region == Some(region))
                .then(|| self.stream.damage_since(self.damage_seq, frame.seq()))
                .flatten();
            let whole = Rect::of(Region::new(0, 0, w, h));
            let rects = match known {
                Some(rects) => rects
                    .into_iter()
                    .filter_map(|r| Rect::of(r).in_frame(region))
                    .collect(),
                None => vec![whole],
            };
            self.damage = Some(
                simplify(rects, MAX_FRAME_RECTS)
                    .into_iter()
                    .map(Rect::to_region)
                    .collect(),
            );
            self.damage_seq = frame.seq();
            self.damage_region = Some(region);
        }
        Ok(frame)
    }

    fn track_damage(&mut self, _incremental: bool) -> Result<()> {
        // Frames are PipeWire's buffers or whole copies: never incremental.
        if self.damage.is_none() {
            self.damage = Some(Vec::new());
        }
        Ok(())
    }

    fn tracks_damage(&self) -> bool {
        self.damage.is_some()
    }

    fn is_incremental(&self) -> bool {
        false
    }

    fn last_damage(&self) -> Option<&[Region]> {
        self.damage.as_deref()
    }

    fn changed_since_last(&mut self, _region: Option<Region>) -> Result<bool> {
        Ok(self.has_new_frame())
    }

    fn wait_for_events(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for_change(timeout).map(|_| ())
    }
}
