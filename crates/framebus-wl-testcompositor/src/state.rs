//! The compositor's state: outputs with their framebuffers and damage history, capture
//! sessions and frames, the copy into client buffers, and the stdin commands that drive it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wayland_protocols::ext::image_copy_capture::v1::server::{
    ext_image_copy_capture_frame_v1::{ExtImageCopyCaptureFrameV1, FailureReason},
    ext_image_copy_capture_session_v1::ExtImageCopyCaptureSessionV1,
};
use wayland_protocols::xdg::xdg_output::zv1::server::zxdg_output_v1::ZxdgOutputV1;
use wayland_server::backend::{GlobalId, ObjectId};
use wayland_server::protocol::{wl_buffer::WlBuffer, wl_output, wl_shm};
use wayland_server::{DisplayHandle, Resource};

use crate::shm::{self, FORMATS};

/// A rectangle in buffer pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn area(&self) -> u64 {
        self.w as u64 * self.h as u64
    }

    /// `self` clipped to a `width`×`height` buffer, or `None` when nothing is left.
    pub fn clip(x: i64, y: i64, w: i64, h: i64, width: u32, height: u32) -> Option<Rect> {
        let x0 = x.max(0);
        let y0 = y.max(0);
        let x1 = (x + w).min(width as i64);
        let y1 = (y + h).min(height as i64);
        (x1 > x0 && y1 > y0).then(|| Rect {
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0) as u32,
            h: (y1 - y0) as u32,
        })
    }
}

/// The union of `rects` as disjoint rectangles (horizontal bands, merged spans inside each),
/// so that copying them writes every covered pixel exactly once.
pub fn disjoint(rects: &[Rect]) -> Vec<Rect> {
    let mut ys: Vec<u32> = rects.iter().flat_map(|r| [r.y, r.y + r.h]).collect();
    ys.sort_unstable();
    ys.dedup();
    let mut out: Vec<Rect> = Vec::new();
    for band in ys.windows(2) {
        let (y0, y1) = (band[0], band[1]);
        let mut spans: Vec<(u32, u32)> = rects
            .iter()
            .filter(|r| r.y <= y0 && r.y + r.h >= y1)
            .map(|r| (r.x, r.x + r.w))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (a, b) in spans {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        for (a, b) in merged {
            // Grow the rectangle above when it has the same span and touches this band.
            if let Some(prev) = out
                .iter_mut()
                .rev()
                .find(|r| r.x == a && r.w == b - a && r.y + r.h == y0)
            {
                prev.h += y1 - y0;
            } else {
                out.push(Rect {
                    x: a,
                    y: y0,
                    w: b - a,
                    h: y1 - y0,
                });
            }
        }
    }
    out
}

/// The documented test pattern: pixel (x, y) of seed `s` has
/// `h = (x·73856093) ^ (y·19349663) ^ (s·83492791)` (wrapping u32 arithmetic) and
/// R = h & 0xff, G = (h >> 8) & 0xff, B = (h >> 16) & 0xff, A = 0xff.
pub fn pattern_rgba(x: u32, y: u32, seed: u32) -> [u8; 4] {
    let h = x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ seed.wrapping_mul(83_492_791);
    [h as u8, (h >> 8) as u8, (h >> 16) as u8, 0xff]
}

/// One output: its geometry, its framebuffer (ARGB8888 little-endian: bytes B, G, R, A) and
/// its damage history (sequence number of each content change and the rectangle it touched).
pub struct Output {
    pub key: u32,
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub x: i32,
    pub y: i32,
    pub scale: i32,
    /// wl_output.transform: sent in geometry and as every frame's `transform`; odd values
    /// swap the logical (xdg-output) width and height. The framebuffer stays in buffer pixels.
    pub transform: wl_output::Transform,
    pub fb: Vec<u8>,
    pub seq: u64,
    pub damage_log: Vec<(u64, Rect)>,
    pub changed_at: Duration,
    pub global: GlobalId,
    pub wl_outputs: Vec<wl_output::WlOutput>,
}

impl Output {
    pub fn logical_size(&self) -> (i32, i32) {
        let (w, h) = (
            self.width as i32 / self.scale,
            self.height as i32 / self.scale,
        );
        if u32::from(self.transform) % 2 == 1 {
            (h, w)
        } else {
            (w, h)
        }
    }

    fn record(&mut self, rect: Rect) {
        self.seq += 1;
        self.changed_at = monotonic();
        // A full-output change makes every older entry redundant.
        if rect
            == (Rect {
                x: 0,
                y: 0,
                w: self.width,
                h: self.height,
            })
        {
            self.damage_log.clear();
        }
        self.damage_log.push((self.seq, rect));
    }

    /// The content damage after sequence number `since` (`None`: the whole output).
    fn damage_since(&self, since: Option<u64>) -> Vec<Rect> {
        match since {
            None => vec![Rect {
                x: 0,
                y: 0,
                w: self.width,
                h: self.height,
            }],
            Some(s) => disjoint(
                &self
                    .damage_log
                    .iter()
                    .filter(|(q, _)| *q > s)
                    .map(|(_, r)| *r)
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// A capture session on one output.
pub struct Session {
    pub resource: ExtImageCopyCaptureSessionV1,
    /// `None` once the output is gone (the session is stopped).
    pub output: Option<u32>,
    /// The output's sequence number at this session's last ready frame (`None`: no frame yet).
    pub last_seq: Option<u64>,
    /// The live frame object of this session, if any (at most one may exist).
    pub frame: Option<ObjectId>,
}

/// A frame object and what the client set on it.
pub struct FrameState {
    pub resource: ExtImageCopyCaptureFrameV1,
    pub session: ObjectId,
    pub buffer: Option<WlBuffer>,
    pub buffer_damage: Vec<(i32, i32, i32, i32)>,
    pub captured: bool,
    /// Captured, waiting for new damage on the output.
    pub waiting: bool,
}

pub struct State {
    pub outputs: Vec<Output>,
    pub next_key: u32,
    pub sessions: HashMap<ObjectId, Session>,
    pub frames: HashMap<ObjectId, FrameState>,
    /// The shm formats every session offers, in this order.
    pub formats: Vec<wl_shm::Format>,
    pub bytes_written: u64,
    pub frames_ready: u64,
    pub frames_failed: u64,
    /// Disabled globals of removed outputs, destroyed a little later (clients binding them
    /// in the meantime must not hit a protocol error).
    pub dying_globals: Vec<(GlobalId, Instant)>,
    /// Set by `freeze`: how long the loop sleeps after replying.
    pub freeze: Option<Duration>,
}

pub fn monotonic() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn parse_format(s: &str) -> Option<wl_shm::Format> {
    FORMATS
        .into_iter()
        .find(|f| format!("{f:?}").eq_ignore_ascii_case(s))
}

impl State {
    pub fn new() -> State {
        State {
            outputs: Vec::new(),
            next_key: 1,
            sessions: HashMap::new(),
            frames: HashMap::new(),
            formats: vec![wl_shm::Format::Xrgb8888, wl_shm::Format::Argb8888],
            bytes_written: 0,
            frames_ready: 0,
            frames_failed: 0,
            dying_globals: Vec::new(),
            freeze: None,
        }
    }

    pub fn output(&self, key: u32) -> Option<&Output> {
        self.outputs.iter().find(|o| o.key == key)
    }

    /// Runs one stdin command; `Ok(text)` is printed as `OK text`, `Err(reason)` as `ERR reason`.
    pub fn command(&mut self, line: &str, dh: &DisplayHandle) -> Result<String, String> {
        let args: Vec<&str> = line.split_whitespace().collect();
        let int = |s: &str| s.parse::<i64>().map_err(|_| format!("not an integer: {s}"));
        match args.as_slice() {
            ["output", name, size, x, y, rest @ ..] => {
                let (w, h) = size
                    .split_once('x')
                    .ok_or_else(|| format!("size is not WIDTHxHEIGHT: {size}"))?;
                let (w, h) = (int(w)?, int(h)?);
                let (scale, transform) = match rest {
                    [] => (1, 0),
                    [s] => (int(s)?, 0),
                    [s, t] => (int(s)?, int(t)?),
                    _ => {
                        return Err(
                            "usage: output NAME WIDTHxHEIGHT X Y [SCALE [TRANSFORM 0-7]]".into(),
                        )
                    }
                };
                let transform = u32::try_from(transform)
                    .ok()
                    .and_then(|t| wl_output::Transform::try_from(t).ok())
                    .ok_or_else(|| format!("transform {transform} is not 0-7"))?;
                if !(1..=16384).contains(&w)
                    || !(1..=16384).contains(&h)
                    || !(1..=8).contains(&scale)
                {
                    return Err(format!("bad size {w}x{h} or scale {scale}"));
                }
                let (x, y) = (int(x)?, int(y)?);
                if x.abs() > 1 << 24 || y.abs() > 1 << 24 {
                    return Err("position out of range".into());
                }
                self.add_output(
                    dh,
                    name,
                    w as u32,
                    h as u32,
                    x as i32,
                    y as i32,
                    scale as i32,
                    transform,
                )?;
                Ok(String::new())
            }
            ["remove", name] => self.remove_output(dh, name).map(|()| String::new()),
            ["fill", name, x, y, w, h, color] => {
                let c = u32::from_str_radix(color, 16)
                    .ok()
                    .filter(|_| color.len() == 8)
                    .ok_or_else(|| format!("colour is not RRGGBBAA: {color}"))?;
                let rgba = c.to_be_bytes();
                let (x, y, w, h) = (int(x)?, int(y)?, int(w)?, int(h)?);
                let out = self
                    .outputs
                    .iter_mut()
                    .find(|o| o.name == *name)
                    .ok_or_else(|| format!("no output {name}"))?;
                let r = Rect::clip(x, y, w, h, out.width, out.height)
                    .ok_or("rectangle is outside the output")?;
                let px = [rgba[2], rgba[1], rgba[0], rgba[3]];
                for row in r.y..r.y + r.h {
                    let start = (row as usize * out.width as usize + r.x as usize) * 4;
                    for p in out.fb[start..start + r.w as usize * 4].chunks_exact_mut(4) {
                        p.copy_from_slice(&px);
                    }
                }
                out.record(r);
                let key = out.key;
                self.content_changed(key);
                Ok(String::new())
            }
            ["pattern", name, seed] => {
                let seed = int(seed)? as u32;
                let out = self
                    .outputs
                    .iter_mut()
                    .find(|o| o.name == *name)
                    .ok_or_else(|| format!("no output {name}"))?;
                let w = out.width;
                for (i, p) in out.fb.chunks_exact_mut(4).enumerate() {
                    let [r, g, b, a] = pattern_rgba(i as u32 % w, i as u32 / w, seed);
                    p.copy_from_slice(&[b, g, r, a]);
                }
                let full = Rect {
                    x: 0,
                    y: 0,
                    w,
                    h: out.height,
                };
                out.record(full);
                let key = out.key;
                self.content_changed(key);
                Ok(String::new())
            }
            ["format", list] => {
                let formats = list
                    .split(',')
                    .map(|f| parse_format(f).ok_or_else(|| format!("unknown format {f}")))
                    .collect::<Result<Vec<_>, _>>()?;
                self.formats = formats;
                // New constraints for every live session (the protocol allows re-sending).
                let ids: Vec<ObjectId> = self.sessions.keys().cloned().collect();
                for id in ids {
                    self.send_constraints(&id);
                }
                Ok(String::new())
            }
            ["freeze", ms] => {
                // A compositor that stops answering (tests of client timeouts): the whole
                // loop sleeps right after this reply, so "OK" means "frozen now".
                let ms = int(ms)?;
                if !(0..=60_000).contains(&ms) {
                    return Err(format!("freeze takes 0-60000 ms, not {ms}"));
                }
                self.freeze = Some(Duration::from_millis(ms as u64));
                Ok(String::new())
            }
            ["stats"] => Ok(format!(
                "bytes_written={} frames={} failed={} sessions={}",
                self.bytes_written,
                self.frames_ready,
                self.frames_failed,
                self.sessions.len()
            )),
            ["outputs"] => Ok(self
                .outputs
                .iter()
                .map(|o| {
                    format!(
                        "{}={}x{}+{}+{}@{}",
                        o.name, o.width, o.height, o.x, o.y, o.scale
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")),
            [] => Err("empty command".into()),
            _ => Err(format!("unknown command: {line}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_output(
        &mut self,
        dh: &DisplayHandle,
        name: &str,
        width: u32,
        height: u32,
        x: i32,
        y: i32,
        scale: i32,
        transform: wl_output::Transform,
    ) -> Result<(), String> {
        if self.outputs.iter().any(|o| o.name == name) {
            return Err(format!("output {name} exists"));
        }
        let key = self.next_key;
        self.next_key += 1;
        let global = dh.create_global::<State, wl_output::WlOutput, u32>(4, key);
        let mut fb = vec![0u8; width as usize * height as usize * 4];
        for p in fb.chunks_exact_mut(4) {
            p[3] = 0xff;
        }
        self.outputs.push(Output {
            key,
            name: name.to_string(),
            width,
            height,
            x,
            y,
            scale,
            transform,
            fb,
            seq: 0,
            damage_log: Vec::new(),
            changed_at: monotonic(),
            global,
            wl_outputs: Vec::new(),
        });
        Ok(())
    }

    fn remove_output(&mut self, dh: &DisplayHandle, name: &str) -> Result<(), String> {
        let i = self
            .outputs
            .iter()
            .position(|o| o.name == name)
            .ok_or_else(|| format!("no output {name}"))?;
        let out = self.outputs.remove(i);
        dh.disable_global::<State>(out.global.clone());
        self.dying_globals
            .push((out.global, Instant::now() + Duration::from_secs(2)));
        // Stop every session on it; a waiting frame fails with `stopped`.
        let ids: Vec<ObjectId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.output == Some(out.key))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.output = None;
                s.resource.stopped();
                if let Some(fid) = s.frame.clone() {
                    if let Some(f) = self.frames.get_mut(&fid) {
                        if f.waiting {
                            f.waiting = false;
                            f.resource.failed(FailureReason::Stopped);
                            self.frames_failed += 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Destroys the globals of removed outputs whose grace period is over.
    pub fn reap_globals(&mut self, dh: &DisplayHandle) {
        let now = Instant::now();
        self.dying_globals.retain(|(id, at)| {
            if *at <= now {
                dh.remove_global::<State>(id.clone());
                false
            } else {
                true
            }
        });
    }

    /// Sends the buffer constraints (shm formats, size, done) to one session.
    pub fn send_constraints(&self, session: &ObjectId) {
        let Some(s) = self.sessions.get(session) else {
            return;
        };
        let Some(out) = s.output.and_then(|k| self.output(k)) else {
            return;
        };
        for f in &self.formats {
            s.resource.shm_format(*f);
        }
        s.resource.buffer_size(out.width, out.height);
        s.resource.done();
    }

    /// Completes every frame waiting for damage on output `key`.
    fn content_changed(&mut self, key: u32) {
        let waiting: Vec<ObjectId> = self
            .frames
            .iter()
            .filter(|(_, f)| f.waiting)
            .filter(|(_, f)| self.sessions.get(&f.session).and_then(|s| s.output) == Some(key))
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            if let Some(f) = self.frames.get_mut(&id) {
                f.waiting = false;
            }
            self.copy_frame(&id);
        }
    }

    /// The `capture` request: fail, wait for damage, or copy now.
    pub fn capture(&mut self, frame: &ObjectId) {
        let Some(f) = self.frames.get(frame) else {
            return;
        };
        let session = self.sessions.get(&f.session);
        let Some((s, out)) = session.and_then(|s| Some((s, self.output(s.output?)?))) else {
            f.resource.failed(FailureReason::Stopped);
            self.frames_failed += 1;
            return;
        };
        if let Err(reason) = self.check_buffer(f, out) {
            eprintln!("framebus-wl-testcompositor: frame failed (buffer_constraints): {reason}");
            f.resource.failed(FailureReason::BufferConstraints);
            self.frames_failed += 1;
            return;
        }
        // wlroots: the first frame of a session is ready at once, later ones wait for damage.
        let has_damage = match s.last_seq {
            None => true,
            Some(last) => out.seq > last,
        };
        if has_damage {
            self.copy_frame(frame);
        } else if let Some(f) = self.frames.get_mut(frame) {
            f.waiting = true;
        }
    }

    fn check_buffer(&self, f: &FrameState, out: &Output) -> Result<(), String> {
        let buffer = f.buffer.as_ref().ok_or("no buffer")?;
        let b = shm::buffer_data(buffer).ok_or("the buffer is gone or not a wl_shm buffer")?;
        if (b.width, b.height) != (out.width, out.height) {
            return Err(format!(
                "buffer is {}x{}, the output {}x{}",
                b.width, b.height, out.width, out.height
            ));
        }
        if !self.formats.contains(&b.format) {
            return Err(format!(
                "format {:?} is not offered (offered: {:?})",
                b.format, self.formats
            ));
        }
        Ok(())
    }

    /// Copies the frame's region (frame damage ∪ client buffer damage) and sends the metadata
    /// and `ready`, or `failed`.
    fn copy_frame(&mut self, frame: &ObjectId) {
        let Some(f) = self.frames.get(frame) else {
            return;
        };
        let Some(s) = self.sessions.get(&f.session) else {
            f.resource.failed(FailureReason::Stopped);
            self.frames_failed += 1;
            return;
        };
        let Some(out) = s
            .output
            .and_then(|k| self.outputs.iter().find(|o| o.key == k))
        else {
            f.resource.failed(FailureReason::Stopped);
            self.frames_failed += 1;
            return;
        };
        if let Err(reason) = self.check_buffer(f, out) {
            eprintln!("framebus-wl-testcompositor: frame failed (buffer_constraints): {reason}");
            f.resource.failed(FailureReason::BufferConstraints);
            self.frames_failed += 1;
            return;
        }
        let frame_damage = out.damage_since(s.last_seq);
        let mut region = frame_damage.clone();
        region.extend(f.buffer_damage.iter().filter_map(|&(x, y, w, h)| {
            Rect::clip(
                x as i64, y as i64, w as i64, h as i64, out.width, out.height,
            )
        }));
        let region = disjoint(&region);
        let buffer = f.buffer.as_ref().expect("checked by check_buffer");
        let b = shm::buffer_data(buffer).expect("checked by check_buffer");
        let swap = matches!(
            b.format,
            wl_shm::Format::Xbgr8888 | wl_shm::Format::Abgr8888
        );
        let written = b.with_bytes(|dst| {
            let mut n = 0u64;
            for r in &region {
                for row in r.y..r.y + r.h {
                    let src = (row as usize * out.width as usize + r.x as usize) * 4;
                    let src = &out.fb[src..src + r.w as usize * 4];
                    let d = row as usize * b.stride + r.x as usize * 4;
                    let d = &mut dst[d..d + r.w as usize * 4];
                    if swap {
                        for (dp, sp) in d.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                            dp.copy_from_slice(&[sp[2], sp[1], sp[0], sp[3]]);
                        }
                    } else {
                        d.copy_from_slice(src);
                    }
                }
                n += r.area() * 4;
            }
            n
        });
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                buffer.post_error(
                    wl_shm::Error::InvalidFd,
                    format!("cannot write the buffer: {e:?}"),
                );
                return;
            }
        };
        let (seq, changed_at) = (out.seq, out.changed_at);
        f.resource.transform(out.transform);
        for r in &frame_damage {
            f.resource
                .damage(r.x as i32, r.y as i32, r.w as i32, r.h as i32);
        }
        let secs = changed_at.as_secs();
        f.resource
            .presentation_time((secs >> 32) as u32, secs as u32, changed_at.subsec_nanos());
        f.resource.ready();
        self.bytes_written += n;
        self.frames_ready += 1;
        let session = f.session.clone();
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_seq = Some(seq);
        }
    }

    /// Forgets a destroyed `wl_output` resource.
    pub fn forget_wl_output(&mut self, id: &ObjectId) {
        for o in &mut self.outputs {
            o.wl_outputs.retain(|w| w.id() != *id);
        }
    }

    /// Sends the xdg-output description of `key` to `xdg` (and `done` the way its version asks).
    pub fn send_xdg_output(&self, key: u32, xdg: &ZxdgOutputV1, wl: &wl_output::WlOutput) {
        let Some(o) = self.output(key) else { return };
        let (lw, lh) = o.logical_size();
        xdg.logical_position(o.x, o.y);
        xdg.logical_size(lw, lh);
        if xdg.version() >= 2 {
            xdg.name(o.name.clone());
            xdg.description(format!("framebus test output {}", o.name));
        }
        if xdg.version() >= 3 {
            if wl.version() >= 2 {
                wl.done();
            }
        } else {
            xdg.done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_merges_overlaps_and_keeps_area() {
        let a = Rect {
            x: 0,
            y: 0,
            w: 10,
            h: 10,
        };
        let b = Rect {
            x: 5,
            y: 5,
            w: 10,
            h: 10,
        };
        let u = disjoint(&[a, b]);
        assert_eq!(u.iter().map(Rect::area).sum::<u64>(), 175);
        assert_eq!(disjoint(&[a, a]), vec![a]);
        let c = Rect {
            x: 20,
            y: 0,
            w: 5,
            h: 5,
        };
        assert_eq!(disjoint(&[a, c]).iter().map(Rect::area).sum::<u64>(), 125);
    }

    #[test]
    fn pattern_formula_is_stable() {
        assert_eq!(pattern_rgba(0, 0, 0), [0, 0, 0, 255]);
        let h = 5u32.wrapping_mul(73_856_093)
            ^ 7u32.wrapping_mul(19_349_663)
            ^ 3u32.wrapping_mul(83_492_791);
        assert_eq!(
            pattern_rgba(5, 7, 3),
            [h as u8, (h >> 8) as u8, (h >> 16) as u8, 255]
        );
    }
}
