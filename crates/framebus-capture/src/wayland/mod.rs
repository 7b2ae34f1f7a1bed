//! Wayland: the connection, the outputs, slot-backed `wl_shm` buffers, and
//! which Wayland backend a grabber gets.
//!
//! ```text
//!  open(socket, choice) ── WlConn::connect (wayland-client, pure-Rust wire)
//!     ├─ ext_image_copy_capture_manager_v1 advertised ─▶ ext_copy::ExtCopySource
//!     ├─ zwlr_screencopy_manager_v1 advertised       ─▶ wlr_screencopy::WlrSource
//!     └─ else (or no compositor socket)              ─▶ the ScreenCast portal
//! ```
//!
//! Shared by the backends: [`WlConn`] (one event queue; `pump` reads events
//! with a timeout, so no wait can hang), [`WlState`] (globals, outputs from
//! `wl_output` v4 + `xdg-output`, and the events of capture frames in
//! flight, keyed by a frame id — both protocols' frames report into the same
//! [`FrameEvents`]), and [`SlotBuffers`] (one `wl_shm_pool` per pool slot,
//! made from the slot's memfd, so the compositor writes straight into it).
//!
//! Coordinates: monitors report the compositor's logical layout
//! (xdg-output); frames are in the output's physical (buffer) pixels.

pub(crate) mod ext_copy;
pub(crate) mod wlr_screencopy;

use crate::source::Source;
use crate::{BackendChoice, CaptureError, Monitor, Region, Result};
use framebus_core::{FramePool, Lease};
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::Weak;
use std::time::{Duration, Instant};
use wayland_client::globals::{registry_queue_init, GlobalList, GlobalListContents};
use wayland_client::protocol::{wl_buffer, wl_output, wl_registry, wl_shm, wl_shm_pool};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle, WEnum};
use wayland_protocols::xdg::xdg_output::zv1::client::{zxdg_output_manager_v1, zxdg_output_v1};

/// How long a capture may take before the compositor is declared stuck.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Open the best Wayland source on `socket` that `choice` allows; every
/// backend tried and failed is pushed on `tried` with the reason.
pub(crate) fn open(
    socket: &str,
    choice: BackendChoice,
    pool: FramePool,
    portal: &crate::PortalOptions,
    tried: &mut Vec<(&'static str, String)>,
) -> Result<Box<dyn Source>> {
    let wants = |c: BackendChoice| {
        choice == c || choice == BackendChoice::Auto || choice == BackendChoice::Wayland
    };
    if choice != BackendChoice::Portal {
        match WlConn::connect(socket) {
            Ok(wl) => {
                let has = |name: &str| wl.has_global(name);
                if wants(BackendChoice::ExtImageCopy) {
                    if has("ext_image_copy_capture_manager_v1")
                        && has("ext_output_image_capture_source_manager_v1")
                    {
                        return ext_copy::ExtCopySource::open(wl, pool, None)
                            .map(|s| Box::new(s) as Box<dyn Source>);
                    }
                    tried.push((
                        "ext-image-copy",
                        "the compositor does not advertise ext_image_copy_capture_manager_v1 \
                         with ext_output_image_capture_source_manager_v1"
                            .to_owned(),
                    ));
                }
                if wants(BackendChoice::WlrScreencopy) {
                    if has("zwlr_screencopy_manager_v1") {
                        let reason = (!tried.is_empty()).then(|| describe(tried));
                        return wlr_screencopy::WlrSource::open(wl, pool, reason)
                            .map(|s| Box::new(s) as Box<dyn Source>);
                    }
                    tried.push((
                        "wlr-screencopy",
                        "the compositor does not advertise zwlr_screencopy_manager_v1".to_owned(),
                    ));
                }
            }
            Err(e) => tried.push(("wayland", e.to_string())),
        }
    }
    if wants(BackendChoice::Portal) {
        match crate::portal::open_source(pool, portal) {
            Ok(source) => return Ok(source),
            Err(e) => tried.push(("portal", e.to_string())),
        }
    }
    Err(CaptureError::NoBackend {
        display: socket.to_owned(),
        tried: describe(tried),
    })
}

/// "name: reason; name: reason".
pub(crate) fn describe(tried: &[(&'static str, String)]) -> String {
    tried
        .iter()
        .map(|(n, why)| format!("{n}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A Wayland failure as a [`CaptureError`].
pub(crate) fn wl_err(op: &'static str, detail: impl std::fmt::Display) -> CaptureError {
    CaptureError::Wayland {
        op,
        detail: detail.to_string(),
    }
}

/// The path of a Wayland socket: absolute as given, else under `$XDG_RUNTIME_DIR`.
pub(crate) fn socket_path(socket: &str) -> Result<std::path::PathBuf> {
    if socket.starts_with('/') {
        return Ok(socket.into());
    }
    match crate::connection::non_empty_env("XDG_RUNTIME_DIR") {
        Some(dir) => Ok(std::path::Path::new(&dir).join(socket)),
        None => Err(wl_err(
            "connect",
            format!(
                "the Wayland socket {socket:?} is a name relative to $XDG_RUNTIME_DIR, which \
                 is not set: set it, or pass an absolute socket path"
            ),
        )),
    }
}

/// One output as the compositor describes it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Output {
    /// The registry name of its `wl_output` global (stable while it exists).
    pub global: u32,
    pub wl: Option<wl_output::WlOutput>,
    pub xdg: Option<zxdg_output_v1::ZxdgOutputV1>,
    pub name: String,
    pub description: Option<String>,
    /// wl_output.geometry position (compositor space).
    pub x: i32,
    pub y: i32,
    /// The current mode: physical pixels.
    pub mode: (i32, i32),
    pub scale: i32,
    pub transform: u32,
    /// xdg-output logical position and size, when known.
    pub logical_pos: Option<(i32, i32)>,
    pub logical_size: Option<(i32, i32)>,
    /// wl_output.done seen at least once.
    pub done: bool,
}

impl Output {
    /// The logical rectangle in the desktop layout.
    pub fn logical(&self) -> Region {
        let (x, y) = self.logical_pos.unwrap_or((self.x, self.y));
        let (w, h) = self.logical_size.unwrap_or_else(|| {
            let s = self.scale.max(1);
            let (w, h) = (self.mode.0 / s, self.mode.1 / s);
            // 90° and 270° transforms (odd values) swap the sides.
            if self.transform % 2 == 1 {
                (h, w)
            } else {
                (w, h)
            }
        });
        Region::new(x, y, w.max(1) as u32, h.max(1) as u32)
    }

    /// Physical pixels per logical pixel, when it is a whole number
    /// (None for fractional scales).
    pub fn integer_scale(&self) -> Option<u32> {
        let l = self.logical();
        let (pw, ph) = if self.transform % 2 == 1 {
            (self.mode.1, self.mode.0)
        } else {
            self.mode
        };
        let (pw, ph) = (pw.max(1) as u32, ph.max(1) as u32);
        (pw % l.width == 0 && ph % l.height == 0 && pw / l.width == ph / l.height)
            .then_some(pw / l.width)
    }

    fn monitor(&self) -> Monitor {
        let r = self.logical();
        let physical_w = if self.transform % 2 == 1 {
            self.mode.1
        } else {
            self.mode.0
        };
        let scale = if physical_w > 0 {
            physical_w as f64 / r.width as f64
        } else {
            self.scale.max(1) as f64
        };
        Monitor {
            left: r.left,
            top: r.top,
            width: r.width,
            height: r.height,
            name: self.name.clone(),
            output: Some(self.name.clone()),
            primary: false,
            description: self.description.clone(),
            scale,
            transform: self.transform,
            physical: (self.mode.0.max(0) as u32, self.mode.1.max(0) as u32),
        }
    }
}

/// The events a capture frame (wlr-screencopy frame, or ext-image-copy
/// session + frame) has delivered so far.
#[derive(Debug, Default)]
pub(crate) struct FrameEvents {
    /// Buffer constraints offered: (wl_shm format, width, height, stride).
    pub shm: Vec<(u32, u32, u32, u32)>,
    /// The constraints are complete (`buffer_done` / `done`, or the first
    /// `buffer` event of a version 1–2 wlr frame).
    pub constraints_done: bool,
    pub y_invert: bool,
    /// Damage in buffer coordinates.
    pub damage: Vec<Region>,
    /// `ready`: the presentation time in ns (0 when unknown).
    pub ready: Option<u64>,
    /// `failed`, with the reason when the protocol gives one.
    pub failed: Option<String>,
}

/// Everything the event handlers write.
#[derive(Default)]
pub(crate) struct WlState {
    pub outputs: Vec<Output>,
    /// Bumped whenever outputs appear, vanish or change.
    pub outputs_epoch: u64,
    pub shm_formats: Vec<u32>,
    pub frames: HashMap<u64, FrameEvents>,
    pub xdg_manager: Option<zxdg_output_manager_v1::ZxdgOutputManagerV1>,
    /// A `wl_display.sync` sent by [`probe`] was answered.
    pub synced: bool,
}

impl WlState {
    fn output_mut(&mut self, global: u32) -> Option<&mut Output> {
        self.outputs.iter_mut().find(|o| o.global == global)
    }
}

/// One connection to a compositor and its event queue.
pub(crate) struct WlConn {
    pub queue: EventQueue<WlState>,
    pub qh: QueueHandle<WlState>,
    pub state: WlState,
    pub globals: GlobalList,
    pub shm: wl_shm::WlShm,
    /// The socket as given, for messages and `display()`.
    pub socket: String,
    next_id: u64,
}

impl WlConn {
    /// Connect to `socket` and learn the globals and outputs (two round trips).
    pub fn connect(socket: &str) -> Result<WlConn> {
        let path = socket_path(socket)?;
        let stream = UnixStream::connect(&path).map_err(|e| {
            wl_err(
                "connect",
                format!(
                    "cannot connect to the Wayland socket {}: {e}",
                    path.display()
                ),
            )
        })?;
        let conn = Connection::from_socket(stream).map_err(|e| wl_err("connect", e))?;
        // The registry's round trip below blocks: first make sure the peer
        // answers at all.
        probe(&conn, FRAME_TIMEOUT).map_err(|e| {
            wl_err(
                "connect",
                format!(
                    "{} accepted the connection but did not answer ({e}): is it a Wayland \
                     compositor?",
                    path.display()
                ),
            )
        })?;
        let (globals, queue) =
            registry_queue_init::<WlState>(&conn).map_err(|e| wl_err("reading the registry", e))?;
        let qh = queue.handle();
        let shm: wl_shm::WlShm = globals
            .bind(&qh, 1..=1, ())
            .map_err(|e| wl_err("binding wl_shm", e))?;
        let mut state = WlState {
            xdg_manager: globals.bind(&qh, 1..=3, ()).ok(),
            ..Default::default()
        };
        for g in globals.contents().clone_list() {
            if g.interface == wl_output::WlOutput::interface().name {
                bind_output(&mut state, globals.registry(), &qh, g.name, g.version);
            }
        }
        let mut wl = WlConn {
            queue,
            qh,
            state,
            globals,
            shm,
            socket: socket.to_owned(),
            next_id: 1,
        };
        wl.roundtrip()?; // wl_output / xdg_output events
        wl.roundtrip()?; // xdg_output objects created during the first
        Ok(wl)
    }

    /// True when the compositor advertises the global `interface`.
    pub fn has_global(&self, interface: &str) -> bool {
        self.globals
            .contents()
            .with_list(|l| l.iter().any(|g| g.interface == interface))
    }

    /// A fresh id for a capture frame's events.
    pub fn new_frame_id(&mut self) -> u64 {
        self.next_id += 1;
        self.state
            .frames
            .insert(self.next_id, FrameEvents::default());
        self.next_id
    }

    /// Send everything and wait for the compositor to process it.
    pub fn roundtrip(&mut self) -> Result<()> {
        self.queue
            .roundtrip(&mut self.state)
            .map(drop)
            .map_err(|e| self.broken("round trip", e))
    }

    /// A connection error, worded for users (the usual one: the compositor
    /// exited).
    fn broken(&self, op: &'static str, e: impl std::fmt::Display) -> CaptureError {
        wl_err(
            op,
            format!(
                "the connection to the compositor on {:?} failed ({e}); it may have exited",
                self.socket
            ),
        )
    }

    /// Send pending requests, then read and dispatch events for up to
    /// `timeout` (zero: only what has arrived).
    pub fn pump(&mut self, timeout: Duration) -> Result<()> {
        pump_queue(&mut self.queue, &mut self.state, timeout).map_err(|(op, e)| self.broken(op, e))
    }

    /// Pump until `done(state)` or `timeout`; true when done.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&WlState) -> bool,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.state) {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.pump(deadline - now)?;
        }
    }

    /// The outputs that have sent `done`, in the order they appeared.
    pub fn outputs(&self) -> impl Iterator<Item = &Output> {
        self.state
            .outputs
            .iter()
            .filter(|o| o.done && o.wl.is_some())
    }

    /// Monitors: 0 = the bounding box of all outputs ("all"), then each.
    pub fn monitors(&self) -> Vec<Monitor> {
        let each: Vec<Monitor> = self.outputs().map(Output::monitor).collect();
        let all = bounding_box(each.iter().map(Monitor::region));
        let mut list = Vec::with_capacity(each.len() + 1);
        list.push(Monitor {
            left: all.left,
            top: all.top,
            width: all.width,
            height: all.height,
            name: "all".to_owned(),
            output: None,
            primary: false,
            description: None,
            scale: 1.0,
            transform: 0,
            physical: (all.width, all.height),
        });
        list.extend(each);
        list
    }
}

/// Send pending requests, then read and dispatch what arrives within
/// `timeout` (zero: only what has arrived). Never blocks longer: the read
/// happens only once poll says the socket is readable.
fn pump_queue(
    queue: &mut EventQueue<WlState>,
    state: &mut WlState,
    timeout: Duration,
) -> std::result::Result<(), (&'static str, String)> {
    use rustix::event::{poll, PollFd, PollFlags};
    queue
        .flush()
        .map_err(|e| ("sending requests", e.to_string()))?;
    queue
        .dispatch_pending(state)
        .map_err(|e| ("handling events", e.to_string()))?;
    if let Some(guard) = queue.prepare_read() {
        let ready = {
            let fd = guard.connection_fd();
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let ns = timeout.as_nanos().min(i64::MAX as u128) as i64;
            let ts = rustix::event::Timespec {
                tv_sec: ns / 1_000_000_000,
                tv_nsec: ns % 1_000_000_000,
            };
            matches!(poll(&mut fds, Some(&ts)), Ok(n) if n > 0)
        };
        if ready {
            match guard.read() {
                Ok(_) => {}
                Err(wayland_client::backend::WaylandError::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(("reading events", e.to_string())),
            }
        }
    }
    queue
        .dispatch_pending(state)
        .map_err(|e| ("handling events", e.to_string()))?;
    Ok(())
}

/// One `wl_display.sync` answered within `timeout`: the peer is a live
/// Wayland server (the registry's own round trip would block for ever on a
/// socket that accepts and never answers).
fn probe(conn: &Connection, timeout: Duration) -> std::result::Result<(), String> {
    let mut queue = conn.new_event_queue::<WlState>();
    let mut state = WlState::default();
    let _callback = conn.display().sync(&queue.handle(), ());
    let deadline = Instant::now() + timeout;
    while !state.synced {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("no answer within {} s", timeout.as_secs()));
        }
        pump_queue(&mut queue, &mut state, deadline - now)
            .map_err(|(op, e)| format!("{op}: {e}"))?;
    }
    Ok(())
}

impl Dispatch<wayland_client::protocol::wl_callback::WlCallback, ()> for WlState {
    fn event(
        state: &mut Self,
        _: &wayland_client::protocol::wl_callback::WlCallback,
        event: wayland_client::protocol::wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wayland_client::protocol::wl_callback::Event::Done { .. } = event {
            state.synced = true;
        }
    }
}

/// One output's share of a region (see [`WlConn::split`]).
#[derive(Clone, Debug)]
pub(crate) struct Share {
    pub global: u32,
    pub name: String,
    pub output: wl_output::WlOutput,
    /// The share in output-local logical coordinates.
    pub local: Region,
    /// The share is the whole output.
    pub whole: bool,
    /// Where it lands in the frame (logical pixels from the region's corner).
    pub dst: (u32, u32),
    /// The output's whole-number scale (None: fractional) and transform.
    pub scale: Option<u32>,
    pub transform: u32,
}

/// A region checked against the desktop and split over the outputs.
pub(crate) struct Split {
    pub region: Region,
    pub shares: Vec<Share>,
    /// The shares cover the whole region (no gaps between outputs).
    pub covers: bool,
}

impl WlConn {
    /// Check `region` (None = the whole desktop) against the desktop's
    /// bounding box and split it over the outputs it touches: the one
    /// geometry both wlr-screencopy and ext-image-copy plan grabs from.
    pub fn split(&self, region: Option<Region>) -> Result<Split> {
        if self.outputs().next().is_none() {
            return Err(wl_err(
                "capture",
                format!("the compositor on {:?} has no outputs", self.socket),
            ));
        }
        let desk = bounding_box(self.outputs().map(Output::logical));
        let region = region.unwrap_or(desk);
        Region::new(
            region.left.wrapping_sub(desk.left),
            region.top.wrapping_sub(desk.top),
            region.width,
            region.height,
        )
        .check_inside(desk.width, desk.height)
        .map_err(|e| match e {
            CaptureError::BadRegion {
                screen_w,
                screen_h,
                why,
                ..
            } => CaptureError::BadRegion {
                region,
                screen_w,
                screen_h,
                why,
            },
            e => e,
        })?;
        let mut shares = Vec::new();
        let mut area = 0u64;
        for o in self.outputs() {
            let l = o.logical();
            let x0 = (region.left as i64).max(l.left as i64);
            let y0 = (region.top as i64).max(l.top as i64);
            let x1 = region.right().min(l.right());
            let y1 = region.bottom().min(l.bottom());
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            let (w, h) = ((x1 - x0) as u32, (y1 - y0) as u32);
            area += w as u64 * h as u64;
            let local = Region::new(
                (x0 - l.left as i64) as i32,
                (y0 - l.top as i64) as i32,
                w,
                h,
            );
            shares.push(Share {
                global: o.global,
                name: o.name.clone(),
                output: o.wl.clone().expect("outputs() yields bound outputs only"),
                whole: local == Region::new(0, 0, l.width, l.height),
                local,
                dst: (
                    (x0 - region.left as i64) as u32,
                    (y0 - region.top as i64) as u32,
                ),
                scale: o.integer_scale(),
                transform: o.transform,
            });
        }
        Ok(Split {
            region,
            covers: area == region.width as u64 * region.height as u64,
            shares,
        })
    }
}

/// The smallest rectangle around `rects` (0,0 1x1 when there are none).
pub(crate) fn bounding_box(rects: impl Iterator<Item = Region>) -> Region {
    let mut b: Option<(i64, i64, i64, i64)> = None;
    for r in rects {
        let (x0, y0) = (r.left as i64, r.top as i64);
        let (x1, y1) = (x0 + r.width as i64, y0 + r.height as i64);
        b = Some(match b {
            None => (x0, y0, x1, y1),
            Some((a0, b0, a1, b1)) => (a0.min(x0), b0.min(y0), a1.max(x1), b1.max(y1)),
        });
    }
    match b {
        None => Region::new(0, 0, 1, 1),
        Some((x0, y0, x1, y1)) => {
            Region::new(x0 as i32, y0 as i32, (x1 - x0) as u32, (y1 - y0) as u32)
        }
    }
}

fn bind_output(
    state: &mut WlState,
    registry: &wl_registry::WlRegistry,
    qh: &QueueHandle<WlState>,
    name: u32,
    version: u32,
) {
    let wl: wl_output::WlOutput = registry.bind(name, version.min(4), qh, name);
    let xdg = state
        .xdg_manager
        .as_ref()
        .map(|m| m.get_xdg_output(&wl, qh, name));
    state.outputs.push(Output {
        global: name,
        wl: Some(wl),
        xdg,
        name: format!("wl_output-{name}"),
        scale: 1,
        ..Default::default()
    });
    state.outputs_epoch += 1;
}

impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for WlState {
    fn event(
        state: &mut Self,
        registry: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        match event {
            wl_registry::Event::Global {
                name,
                interface,
                version,
            } if interface == wl_output::WlOutput::interface().name => {
                bind_output(state, registry, qh, name, version);
            }
            wl_registry::Event::GlobalRemove { name } => {
                if let Some(i) = state.outputs.iter().position(|o| o.global == name) {
                    let o = state.outputs.remove(i);
                    if let Some(x) = o.xdg {
                        x.destroy();
                    }
                    if let Some(w) = o.wl {
                        if w.version() >= 3 {
                            w.release();
                        }
                    }
                    state.outputs_epoch += 1;
                }
            }
            _ => {}
        }
    }
}

impl Dispatch<wl_output::WlOutput, u32> for WlState {
    fn event(
        state: &mut Self,
        _: &wl_output::WlOutput,
        event: wl_output::Event,
        global: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(o) = state.output_mut(*global) else {
            return;
        };
        match event {
            wl_output::Event::Geometry {
                x, y, transform, ..
            } => {
                o.x = x;
                o.y = y;
                o.transform = match transform {
                    WEnum::Value(t) => t as u32,
                    WEnum::Unknown(t) => t,
                };
            }
            wl_output::Event::Mode {
                flags,
                width,
                height,
                ..
            } => {
                let current = match flags {
                    WEnum::Value(f) => f.contains(wl_output::Mode::Current),
                    WEnum::Unknown(f) => f & 1 != 0,
                };
                if current {
                    o.mode = (width, height);
                }
            }
            wl_output::Event::Scale { factor } => o.scale = factor,
            wl_output::Event::Name { name } => o.name = name,
            wl_output::Event::Description { description } => o.description = Some(description),
            wl_output::Event::Done => {
                o.done = true;
                state.outputs_epoch += 1;
            }
            _ => {}
        }
    }
}

impl Dispatch<zxdg_output_v1::ZxdgOutputV1, u32> for WlState {
    fn event(
        state: &mut Self,
        xdg: &zxdg_output_v1::ZxdgOutputV1,
        event: zxdg_output_v1::Event,
        global: &u32,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let Some(o) = state.output_mut(*global) else {
            return;
        };
        match event {
            zxdg_output_v1::Event::LogicalPosition { x, y } => o.logical_pos = Some((x, y)),
            zxdg_output_v1::Event::LogicalSize { width, height } => {
                o.logical_size = Some((width, height))
            }
            zxdg_output_v1::Event::Name { name } if o.name.starts_with("wl_output-") => {
                o.name = name
            }
            zxdg_output_v1::Event::Description { description } if o.description.is_none() => {
                o.description = Some(description)
            }
            // Version < 3 ends its updates with its own `done`.
            zxdg_output_v1::Event::Done if xdg.version() < 3 => state.outputs_epoch += 1,
            _ => {}
        }
    }
}

impl Dispatch<wl_shm::WlShm, ()> for WlState {
    fn event(
        state: &mut Self,
        _: &wl_shm::WlShm,
        event: wl_shm::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_shm::Event::Format { format } = event {
            state.shm_formats.push(match format {
                WEnum::Value(f) => f as u32,
                WEnum::Unknown(f) => f,
            });
        }
    }
}

wayland_client::delegate_noop!(WlState: ignore zxdg_output_manager_v1::ZxdgOutputManagerV1);
wayland_client::delegate_noop!(WlState: ignore wl_shm_pool::WlShmPool);
wayland_client::delegate_noop!(WlState: ignore wl_buffer::WlBuffer);

/// The geometry of a `wl_buffer` inside a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct BufferKey {
    pub offset: i32,
    pub width: i32,
    pub height: i32,
    pub stride: i32,
    pub format: u32,
}

struct SlotEntry {
    alive: Weak<()>,
    pool: wl_shm_pool::WlShmPool,
    size: i32,
    buffers: Vec<(BufferKey, wl_buffer::WlBuffer)>,
}

/// `wl_shm_pool`s made from pool slots' memfds (one per slot, created the
/// first time the slot is grabbed into) and the `wl_buffer`s inside them;
/// an entry goes when its slot is unmapped (the pool trimmed or evicted it).
#[derive(Default)]
pub(crate) struct SlotBuffers {
    entries: HashMap<u64, SlotEntry>,
}

impl SlotBuffers {
    /// Slots with a `wl_shm_pool` now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Destroy the pools of slots that no longer exist.
    pub fn sweep(&mut self) {
        self.entries.retain(|_, e| {
            let keep = e.alive.upgrade().is_some();
            if !keep {
                destroy_entry(e);
            }
            keep
        });
    }

    /// Destroy everything (the connection is closing).
    pub fn clear(&mut self) {
        for e in self.entries.values() {
            destroy_entry(e);
        }
        self.entries.clear();
    }

    /// A `wl_buffer` of geometry `key` inside `lease`'s slot, so the
    /// compositor writes into the slot itself.
    pub fn buffer(
        &mut self,
        wl: &WlConn,
        lease: &Lease,
        key: BufferKey,
    ) -> Result<wl_buffer::WlBuffer> {
        let fd = lease.fd().ok_or_else(|| {
            wl_err(
                "wl_shm.create_pool",
                "the destination slot has no file descriptor",
            )
        })?;
        let size = i32::try_from(lease.capacity()).map_err(|_| {
            wl_err(
                "wl_shm.create_pool",
                format!(
                    "a {} byte slot is larger than wl_shm allows (2 GiB)",
                    lease.capacity()
                ),
            )
        })?;
        let end = key.offset as i64 + key.stride as i64 * key.height as i64;
        if key.offset < 0 || end > size as i64 || key.stride < key.width * 4 {
            return Err(wl_err(
                "wl_shm_pool.create_buffer",
                format!("buffer {key:?} does not fit a {size} byte slot"),
            ));
        }
        let entry = self
            .entries
            .entry(lease.slot_id())
            .or_insert_with(|| SlotEntry {
                alive: lease.slot_liveness(),
                pool: wl.shm.create_pool(fd, size, &wl.qh, ()),
                size,
                buffers: Vec::new(),
            });
        debug_assert_eq!(entry.size, size);
        if let Some((_, b)) = entry.buffers.iter().find(|(k, _)| *k == key) {
            return Ok(b.clone());
        }
        let format = wl_shm::Format::try_from(key.format).map_err(|_| {
            wl_err(
                "wl_shm_pool.create_buffer",
                format!("unknown shm format {:#x}", key.format),
            )
        })?;
        let b = entry.pool.create_buffer(
            key.offset,
            key.width,
            key.height,
            key.stride,
            format,
            &wl.qh,
            (),
        );
        entry.buffers.push((key, b.clone()));
        Ok(b)
    }
}

fn destroy_entry(e: &SlotEntry) {
    for (_, b) in &e.buffers {
        b.destroy();
    }
    e.pool.destroy();
}

/// wl_shm formats framebus takes: byte order in memory B,G,R,A (the frame
/// format) or R,G,B,A (converted in place).
pub(crate) mod shm_format {
    pub const ARGB8888: u32 = 0;
    pub const XRGB8888: u32 = 1;
    pub const ABGR8888: u32 = 0x3432_4241;
    pub const XBGR8888: u32 = 0x3432_4258;

    /// True for formats that are RGBA in memory (swapped to BGRA).
    pub fn is_rgba(f: u32) -> bool {
        f == ABGR8888 || f == XBGR8888
    }

    /// Preference among offered formats: BGRA first, then RGBA.
    pub fn rank(f: u32) -> Option<u8> {
        match f {
            XRGB8888 => Some(0),
            ARGB8888 => Some(1),
            XBGR8888 => Some(2),
            ABGR8888 => Some(3),
            _ => None,
        }
    }

    /// A name for messages (the fourcc, or the two legacy codes).
    pub fn name(f: u32) -> String {
        match f {
            ARGB8888 => "ARGB8888".to_owned(),
            XRGB8888 => "XRGB8888".to_owned(),
            _ => f.to_le_bytes().iter().map(|&b| b as char).collect(),
        }
    }
}

/// Swap R and B of the BGRA rows `[y0, y0+h)`, columns `[x0, x0+w)` of a
/// frame with `stride` bytes per row: RGBA in memory becomes BGRA.
pub(crate) fn swap_red_blue(
    bytes: &mut [u8],
    stride: usize,
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
) {
    for row in bytes[y0 * stride..].chunks_mut(stride).take(h) {
        for px in row[x0 * 4..(x0 + w) * 4].chunks_exact_mut(4) {
            px.swap(0, 2);
        }
    }
}

/// Turn rows `[y0, y0+h)` (columns `[x0, x0+w)`) upside down in place: a
/// `y_invert` buffer.
pub(crate) fn flip_rows(bytes: &mut [u8], stride: usize, x0: usize, y0: usize, w: usize, h: usize) {
    let (a, b) = (x0 * 4, (x0 + w) * 4);
    for i in 0..h / 2 {
        let (top, bottom) = (y0 + i, y0 + h - 1 - i);
        let (head, tail) = bytes.split_at_mut(bottom * stride);
        head[top * stride + a..top * stride + b].swap_with_slice(&mut tail[a..b]);
    }
}

/// Where upright pixel (ux, uy) of a `bw`×`bh` buffer of an output with
/// wl_output transform `t` lies in the buffer. Transforms 0–3 rotate the
/// buffer by `t`·90° clockwise, 4–7 also mirror it (checked against grim,
/// which composes outputs upright, for all eight under sway).
fn source_of(ux: usize, uy: usize, bw: usize, bh: usize, t: u32) -> (usize, usize) {
    let (uw, _) = if t % 2 == 1 { (bh, bw) } else { (bw, bh) };
    let ux = if t >= 4 { uw - 1 - ux } else { ux };
    match t % 4 {
        0 => (ux, uy),
        1 => (uy, bh - 1 - ux), // upright = buffer turned 90° clockwise
        2 => (bw - 1 - ux, bh - 1 - uy),
        _ => (bw - 1 - uy, ux), // upright = buffer turned 90° counter-clockwise
    }
}

/// Copy the rectangle `crop` of the upright picture of a `bw`×`bh` BGRA
/// buffer (`stride` bytes a row) of an output with transform `t` into `dst`
/// (packed, `crop.width` pixels a row).
pub(crate) fn untransform(
    src: &[u8],
    (bw, bh, stride): (usize, usize, usize),
    dst: &mut [u8],
    t: u32,
    crop: Region,
) {
    let (cx, cy) = (crop.left as usize, crop.top as usize);
    for (row_i, row) in dst.chunks_exact_mut(crop.width as usize * 4).enumerate() {
        for (col_i, px) in row.chunks_exact_mut(4).enumerate() {
            let (bx, by) = source_of(cx + col_i, cy + row_i, bw, bh, t);
            let at = by * stride + bx * 4;
            px.copy_from_slice(&src[at..at + 4]);
        }
    }
}

/// A rectangle of the buffer, in upright coordinates (the box of its two
/// opposite corner pixels' preimages: the map is a rotation or mirror).
pub(crate) fn untransform_rect(r: Region, bw: u32, bh: u32, t: u32) -> Region {
    let (bw, bh) = (bw as usize, bh as usize);
    let a = preimage(
        (r.left.max(0) as usize).min(bw - 1),
        (r.top.max(0) as usize).min(bh - 1),
        bw,
        bh,
        t,
    );
    let b = preimage(
        (r.right().max(1) as usize).min(bw) - 1,
        (r.bottom().max(1) as usize).min(bh) - 1,
        bw,
        bh,
        t,
    );
    let (x0, x1) = (a.0.min(b.0), a.0.max(b.0));
    let (y0, y1) = (a.1.min(b.1), a.1.max(b.1));
    Region::new(
        x0 as i32,
        y0 as i32,
        (x1 - x0 + 1) as u32,
        (y1 - y0 + 1) as u32,
    )
}

/// The upright pixel whose source is buffer pixel (bx, by).
fn preimage(bx: usize, by: usize, bw: usize, bh: usize, t: u32) -> (usize, usize) {
    let uw = if t % 2 == 1 { bh } else { bw };
    let (ux, uy) = match t % 4 {
        0 => (bx, by),
        1 => (bh - 1 - by, bx),
        2 => (bw - 1 - bx, bh - 1 - by),
        _ => (by, bw - 1 - bx),
    };
    let ux = if t >= 4 { uw - 1 - ux } else { ux };
    (ux, uy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_and_swap_touch_only_their_rectangle() {
        let stride = 4 * 4;
        let mut px: Vec<u8> = (0..stride as u8 * 3).collect();
        let orig = px.clone();
        flip_rows(&mut px, stride, 1, 0, 2, 3);
        // row 0 and row 2 swapped in columns 1..3, row 1 and column 0, 3 untouched
        assert_eq!(&px[4..12], &orig[2 * stride + 4..2 * stride + 12]);
        assert_eq!(&px[2 * stride + 4..2 * stride + 12], &orig[4..12]);
        assert_eq!(&px[stride..2 * stride], &orig[stride..2 * stride]);
        assert_eq!(&px[0..4], &orig[0..4]);
        let mut px = orig.clone();
        swap_red_blue(&mut px, stride, 0, 1, 1, 1);
        assert_eq!(
            &px[stride..stride + 4],
            &[
                orig[stride + 2],
                orig[stride + 1],
                orig[stride],
                orig[stride + 3]
            ]
        );
        assert_eq!(&px[stride + 4..], &orig[stride + 4..]);
    }

    #[test]
    fn untransform_inverts_each_of_the_eight_transforms() {
        // A 3x2 buffer whose pixels are their own index.
        let (bw, bh) = (3usize, 2usize);
        let src: Vec<u8> = (0..6u8).flat_map(|i| [i, 0, 0, 0]).collect();
        // Upright pictures as numpy's rot90/fliplr gave them against grim.
        let want: [&[u8]; 8] = [
            &[0, 1, 2, 3, 4, 5],
            &[3, 0, 4, 1, 5, 2], // 90° clockwise
            &[5, 4, 3, 2, 1, 0],
            &[2, 5, 1, 4, 0, 3], // 90° counter-clockwise
            &[2, 1, 0, 5, 4, 3],
            &[0, 3, 1, 4, 2, 5],
            &[3, 4, 5, 0, 1, 2],
            &[5, 2, 4, 1, 3, 0],
        ];
        for (t, want) in want.iter().enumerate() {
            let mut dst = vec![0u8; 24];
            let (uw, uh) = if t % 2 == 1 { (bh, bw) } else { (bw, bh) };
            let all = Region::new(0, 0, uw as u32, uh as u32);
            untransform(&src, (bw, bh, bw * 4), &mut dst, t as u32, all);
            // A crop is the same pixels, cut out.
            let mut one = vec![0u8; 4];
            untransform(
                &src,
                (bw, bh, bw * 4),
                &mut one,
                t as u32,
                Region::new(1, 1, 1, 1),
            );
            assert_eq!(one[..], dst[(uw + 1) * 4..(uw + 2) * 4]);
            let got: Vec<u8> = dst.chunks(4).map(|p| p[0]).collect();
            assert_eq!(&got, want, "transform {t}");
            // Each buffer pixel's rectangle maps onto where its value went.
            for i in 0..6usize {
                let r = untransform_rect(
                    Region::new((i % bw) as i32, (i / bw) as i32, 1, 1),
                    bw as u32,
                    bh as u32,
                    t as u32,
                );
                let uw = if t % 2 == 1 { bh } else { bw };
                let at = got.iter().position(|&v| v as usize == i).unwrap();
                assert_eq!(
                    (r.left as usize, r.top as usize),
                    (at % uw, at / uw),
                    "t {t} px {i}"
                );
            }
        }
    }

    #[test]
    fn the_bounding_box_spans_every_output() {
        let b =
            bounding_box([Region::new(0, 0, 100, 50), Region::new(100, -20, 30, 30)].into_iter());
        assert_eq!(b, Region::new(0, -20, 130, 70));
    }
}
