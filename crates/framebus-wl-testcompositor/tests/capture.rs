//! End-to-end test of the test compositor: a `wayland-client` captures outputs through
//! `ext-image-copy-capture-v1` into memfd-backed `wl_shm` buffers; pixels, damage, buffer
//! damage (via `stats`), failures and output removal are checked.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use rustix::mm::{MapFlags, ProtFlags};
use wayland_client::globals::{registry_queue_init, GlobalListContents};
use wayland_client::protocol::{wl_buffer, wl_output, wl_registry, wl_shm, wl_shm_pool};
use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle, WEnum};
use wayland_protocols::ext::image_capture_source::v1::client::{
    ext_image_capture_source_v1::ExtImageCaptureSourceV1,
    ext_output_image_capture_source_manager_v1::ExtOutputImageCaptureSourceManagerV1,
};
use wayland_protocols::ext::image_copy_capture::v1::client::{
    ext_image_copy_capture_frame_v1::{self as frame_v1, ExtImageCopyCaptureFrameV1},
    ext_image_copy_capture_manager_v1::{self as manager_v1, ExtImageCopyCaptureManagerV1},
    ext_image_copy_capture_session_v1::{self as session_v1, ExtImageCopyCaptureSessionV1},
};

// ------------------------------------------------------------------ the compositor process

struct Compositor {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    socket: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Compositor {
    fn start(extra: &[&str]) -> Compositor {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fb-wltc-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("wayland-test").to_str().unwrap().to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_framebus-wl-testcompositor"))
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the compositor");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "READY\n");
        Compositor {
            child,
            stdin,
            stdout,
            socket,
            _dir: TempDir(dir),
        }
    }

    /// Sends one command and returns its reply line (`OK ...` / `ERR ...`).
    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        reply.trim_end().to_string()
    }

    fn ok(&mut self, line: &str) {
        let reply = self.cmd(line);
        assert!(reply.starts_with("OK"), "{line} -> {reply}");
    }

    fn stat(&mut self, key: &str) -> u64 {
        let reply = self.cmd("stats");
        reply
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {reply}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Compositor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The documented pattern (see the compositor's `state::pattern_rgba`), as RGBA.
fn pattern(x: u32, y: u32, seed: u32) -> [u8; 4] {
    let h = x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ seed.wrapping_mul(83_492_791);
    [h as u8, (h >> 8) as u8, (h >> 16) as u8, 0xff]
}

// ------------------------------------------------------------------ a minimal capture client

#[derive(Default)]
struct Client {
    outputs: Vec<(wl_output::WlOutput, Option<String>)>,
    formats: Vec<u32>,
    size: Option<(u32, u32)>,
    constraints_done: bool,
    stopped: bool,
    damage: Vec<(i32, i32, i32, i32)>,
    ready: bool,
    failed: Option<u32>,
    transform: Option<u32>,
    presented: bool,
}

struct Conn {
    _conn: Connection,
    queue: EventQueue<Client>,
    qh: QueueHandle<Client>,
    state: Client,
    shm: wl_shm::WlShm,
    sources: ExtOutputImageCaptureSourceManagerV1,
    copy: ExtImageCopyCaptureManagerV1,
}

impl Conn {
    fn connect(socket: &str) -> Conn {
        let conn = Connection::from_socket(UnixStream::connect(socket).unwrap()).unwrap();
        let (globals, mut queue) = registry_queue_init::<Client>(&conn).unwrap();
        let qh = queue.handle();
        let shm = globals.bind(&qh, 1..=2, ()).unwrap();
        let sources = globals.bind(&qh, 1..=1, ()).unwrap();
        let copy = globals.bind(&qh, 1..=1, ()).unwrap();
        let mut state = Client::default();
        for g in globals.contents().clone_list() {
            if g.interface == "wl_output" {
                let o: wl_output::WlOutput = globals.registry().bind(g.name, 4, &qh, ());
                state.outputs.push((o, None));
            }
        }
        queue.roundtrip(&mut state).unwrap();
        Conn {
            _conn: conn,
            queue,
            qh,
            state,
            shm,
            sources,
            copy,
        }
    }

    fn output(&self, name: &str) -> wl_output::WlOutput {
        self.state
            .outputs
            .iter()
            .find(|(_, n)| n.as_deref() == Some(name))
            .expect("output")
            .0
            .clone()
    }

    fn session(&mut self, output: &wl_output::WlOutput) -> ExtImageCopyCaptureSessionV1 {
        let source: ExtImageCaptureSourceV1 = self.sources.create_source(output, &self.qh, ());
        let session = self
            .copy
            .create_session(&source, manager_v1::Options::empty(), &self.qh, ());
        self.state.constraints_done = false;
        self.state.formats.clear();
        while !self.state.constraints_done && !self.state.stopped {
            self.queue.blocking_dispatch(&mut self.state).unwrap();
        }
        session
    }

    /// One capture: attach, damage_buffer each of `damage`, capture, wait for ready/failed.
    fn capture(
        &mut self,
        session: &ExtImageCopyCaptureSessionV1,
        buffer: &wl_buffer::WlBuffer,
        damage: &[(i32, i32, i32, i32)],
    ) -> Result<Vec<(i32, i32, i32, i32)>, u32> {
        let frame = self.start_capture(session, buffer, damage);
        while !self.state.ready && self.state.failed.is_none() {
            self.queue.blocking_dispatch(&mut self.state).unwrap();
        }
        frame.destroy();
        match self.state.failed {
            Some(r) => Err(r),
            None => {
                assert_eq!(self.state.transform, Some(0));
                assert!(self.state.presented);
                Ok(std::mem::take(&mut self.state.damage))
            }
        }
    }

    fn start_capture(
        &mut self,
        session: &ExtImageCopyCaptureSessionV1,
        buffer: &wl_buffer::WlBuffer,
        damage: &[(i32, i32, i32, i32)],
    ) -> ExtImageCopyCaptureFrameV1 {
        self.state.ready = false;
        self.state.failed = None;
        self.state.damage.clear();
        self.state.transform = None;
        self.state.presented = false;
        let frame = session.create_frame(&self.qh, ());
        frame.attach_buffer(buffer);
        for &(x, y, w, h) in damage {
            frame.damage_buffer(x, y, w, h);
        }
        frame.capture();
        self.queue.flush().unwrap();
        frame
    }
}

/// A memfd-backed buffer and its mapping.
struct Buffer {
    buffer: wl_buffer::WlBuffer,
    _fd: OwnedFd,
    ptr: *mut u8,
    len: usize,
    stride: usize,
}

impl Buffer {
    fn new(conn: &Conn, w: u32, h: u32, format: wl_shm::Format) -> Buffer {
        let stride = w as usize * 4;
        let len = stride * h as usize;
        let fd = rustix::fs::memfd_create("test-buffer", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len as u64).unwrap();
        // SAFETY: a fresh shared mapping of the whole new memfd, unmapped in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
            .unwrap()
        };
        let pool: wl_shm_pool::WlShmPool =
            conn.shm.create_pool(fd.as_fd(), len as i32, &conn.qh, ());
        let buffer = pool.create_buffer(0, w as i32, h as i32, stride as i32, format, &conn.qh, ());
        pool.destroy();
        Buffer {
            buffer,
            _fd: fd,
            ptr: ptr.cast(),
            len,
            stride,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping lives as long as `self`; the compositor writes it only between
        // capture and ready, and the tests read it only after ready.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn px(&self, x: u32, y: u32) -> [u8; 4] {
        let i = y as usize * self.stride + x as usize * 4;
        self.bytes()[i..i + 4].try_into().unwrap()
    }

    fn clear(&mut self, v: u8) {
        // SAFETY: as in `bytes`, and no capture is in flight.
        unsafe { std::ptr::write_bytes(self.ptr, v, self.len) }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.buffer.destroy();
        // SAFETY: unmaps the mapping made in `new`, once.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// BGRA bytes of an XRGB/ARGB8888 buffer → RGBA.
fn rgba_of_xrgb(p: [u8; 4]) -> [u8; 4] {
    [p[2], p[1], p[0], p[3]]
}

// ------------------------------------------------------------------ tests

#[test]
fn captures_pattern_and_copies_only_the_damage() {
    let mut comp = Compositor::start(&[]);
    comp.ok("pattern HEADLESS-1 7");
    let mut conn = Conn::connect(&comp.socket);
    let out = conn.output("HEADLESS-1");
    let session = conn.session(&out);
    assert_eq!(conn.state.size, Some((1920, 1080)));
    assert_eq!(
        conn.state.formats,
        vec![
            wl_shm::Format::Xrgb8888 as u32,
            wl_shm::Format::Argb8888 as u32
        ]
    );
    let buf = Buffer::new(&conn, 1920, 1080, wl_shm::Format::Xrgb8888);

    let damage = conn
        .capture(&session, &buf.buffer, &[(0, 0, 1920, 1080)])
        .unwrap();
    assert_eq!(
        damage,
        vec![(0, 0, 1920, 1080)],
        "the first frame carries full damage"
    );
    for &(x, y) in &[(0, 0), (1, 0), (0, 1), (1919, 1079), (300, 700), (1000, 17)] {
        assert_eq!(
            rgba_of_xrgb(buf.px(x, y)),
            pattern(x, y, 7),
            "pixel {x},{y}"
        );
    }
    let full = 1920 * 1080 * 4;
    assert_eq!(comp.stat("bytes_written"), full);

    // A small fill, then a capture into the same buffer with no buffer damage: only the
    // filled area is copied and reported.
    comp.ok("fill HEADLESS-1 100 200 30 20 11223344");
    let damage = conn.capture(&session, &buf.buffer, &[]).unwrap();
    assert_eq!(damage, vec![(100, 200, 30, 20)]);
    assert_eq!(comp.stat("bytes_written"), full + 30 * 20 * 4);
    assert_eq!(rgba_of_xrgb(buf.px(100, 200)), [0x11, 0x22, 0x33, 0x44]);
    assert_eq!(rgba_of_xrgb(buf.px(129, 219)), [0x11, 0x22, 0x33, 0x44]);
    assert_eq!(rgba_of_xrgb(buf.px(130, 219)), pattern(130, 219, 7));

    // Buffer damage from the client is honoured on top of the frame damage (overlaps once).
    comp.ok("fill HEADLESS-1 0 0 10 10 ffffffff");
    let damage = conn
        .capture(&session, &buf.buffer, &[(5, 5, 10, 10), (500, 500, 4, 4)])
        .unwrap();
    assert_eq!(damage, vec![(0, 0, 10, 10)]);
    assert_eq!(
        comp.stat("bytes_written"),
        full + 30 * 20 * 4 + (100 + 75 + 16) * 4
    );
    assert_eq!(comp.stat("frames"), 3);
}

#[test]
fn later_frames_wait_for_damage() {
    let mut comp = Compositor::start(&["--no-default-output", "--output", "A 64x48 0 0"]);
    let mut conn = Conn::connect(&comp.socket);
    let out = conn.output("A");
    let session = conn.session(&out);
    let buf = Buffer::new(&conn, 64, 48, wl_shm::Format::Argb8888);
    conn.capture(&session, &buf.buffer, &[(0, 0, 64, 48)])
        .unwrap();
    let frame = conn.start_capture(&session, &buf.buffer, &[]);
    conn.queue.roundtrip(&mut conn.state).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    conn.queue.roundtrip(&mut conn.state).unwrap();
    assert!(!conn.state.ready, "no damage yet: the frame must wait");
    comp.ok("fill A 60 40 10 10 ff0000ff");
    while !conn.state.ready {
        conn.queue.blocking_dispatch(&mut conn.state).unwrap();
    }
    assert_eq!(
        conn.state.damage,
        vec![(60, 40, 4, 8)],
        "clipped to the output"
    );
    assert_eq!(rgba_of_xrgb(buf.px(63, 47)), [0xff, 0, 0, 0xff]);
    frame.destroy();
}

#[test]
fn xbgr_buffers_hold_rgb_order() {
    let mut comp = Compositor::start(&[
        "--no-default-output",
        "--output",
        "A 32x16 0 0",
        "--format",
        "XBGR8888",
    ]);
    comp.ok("pattern A 1");
    let mut conn = Conn::connect(&comp.socket);
    let out = conn.output("A");
    let session = conn.session(&out);
    assert_eq!(conn.state.formats, vec![wl_shm::Format::Xbgr8888 as u32]);
    let buf = Buffer::new(&conn, 32, 16, wl_shm::Format::Xbgr8888);
    conn.capture(&session, &buf.buffer, &[(0, 0, 32, 16)])
        .unwrap();
    for y in 0..16 {
        for x in 0..32 {
            assert_eq!(buf.px(x, y), pattern(x, y, 1));
        }
    }
    // A format the session does not offer, or a wrong size, fails with buffer_constraints.
    let wrong = Buffer::new(&conn, 32, 16, wl_shm::Format::Xrgb8888);
    assert_eq!(
        conn.capture(&session, &wrong.buffer, &[(0, 0, 32, 16)]),
        Err(frame_v1::FailureReason::BufferConstraints as u32)
    );
    let small = Buffer::new(&conn, 16, 16, wl_shm::Format::Xbgr8888);
    assert_eq!(
        conn.capture(&session, &small.buffer, &[(0, 0, 16, 16)]),
        Err(frame_v1::FailureReason::BufferConstraints as u32)
    );
    assert_eq!(comp.stat("failed"), 2);
}

#[test]
fn a_removed_output_stops_its_session() {
    let mut comp = Compositor::start(&["--output", "B 40x30 1920 0 2"]);
    let mut conn = Conn::connect(&comp.socket);
    let out = conn.output("B");
    let session = conn.session(&out);
    let mut buf = Buffer::new(&conn, 40, 30, wl_shm::Format::Xrgb8888);
    buf.clear(0x55);
    conn.capture(&session, &buf.buffer, &[(0, 0, 40, 30)])
        .unwrap();
    assert_eq!(buf.px(0, 0), [0, 0, 0, 0xff]);
    // A waiting frame fails with `stopped` when the output goes.
    let frame = conn.start_capture(&session, &buf.buffer, &[]);
    conn.queue.roundtrip(&mut conn.state).unwrap();
    comp.ok("remove B");
    while conn.state.failed.is_none() {
        conn.queue.blocking_dispatch(&mut conn.state).unwrap();
    }
    assert_eq!(
        conn.state.failed,
        Some(frame_v1::FailureReason::Stopped as u32)
    );
    assert!(conn.state.stopped);
    frame.destroy();
    assert_eq!(comp.cmd("remove B"), "ERR no output B");
}

#[test]
fn protocol_errors_not_panics() {
    let mut comp = Compositor::start(&[]);
    let mut conn = Conn::connect(&comp.socket);
    let out = conn.output("HEADLESS-1");
    let session = conn.session(&out);
    let frame = session.create_frame(&conn.qh, ());
    frame.capture(); // no buffer: a protocol error that kills this client only
    let err = conn.queue.roundtrip(&mut conn.state);
    assert!(err.is_err(), "no_buffer must be a protocol error");
    // The compositor is still alive and serving.
    assert!(comp.cmd("stats").starts_with("OK"));
    let mut again = Conn::connect(&comp.socket);
    let out = again.output("HEADLESS-1");
    let _session = again.session(&out);
    assert_eq!(again.state.size, Some((1920, 1080)));
}

#[test]
fn outputs_describe_themselves() {
    use wayland_protocols::xdg::xdg_output::zv1::client::{zxdg_output_manager_v1, zxdg_output_v1};
    #[derive(Default)]
    struct Info {
        done: u32,
        wl: Vec<String>,
        xdg: Vec<String>,
    }
    impl Dispatch<wl_output::WlOutput, ()> for Info {
        fn event(
            s: &mut Self,
            _: &wl_output::WlOutput,
            e: wl_output::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
            match e {
                wl_output::Event::Geometry { x, y, .. } => s.wl.push(format!("geometry {x},{y}")),
                wl_output::Event::Mode {
                    width,
                    height,
                    refresh,
                    ..
                } => s.wl.push(format!("mode {width}x{height}@{refresh}")),
                wl_output::Event::Scale { factor } => s.wl.push(format!("scale {factor}")),
                wl_output::Event::Name { name } => s.wl.push(format!("name {name}")),
                wl_output::Event::Description { description } => {
                    s.wl.push(format!("description {description}"))
                }
                wl_output::Event::Done => s.done += 1,
                _ => {}
            }
        }
    }
    impl Dispatch<zxdg_output_v1::ZxdgOutputV1, ()> for Info {
        fn event(
            s: &mut Self,
            _: &zxdg_output_v1::ZxdgOutputV1,
            e: zxdg_output_v1::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
            match e {
                zxdg_output_v1::Event::LogicalPosition { x, y } => {
                    s.xdg.push(format!("position {x},{y}"))
                }
                zxdg_output_v1::Event::LogicalSize { width, height } => {
                    s.xdg.push(format!("size {width}x{height}"))
                }
                zxdg_output_v1::Event::Name { name } => s.xdg.push(format!("name {name}")),
                _ => {}
            }
        }
    }
    impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for Info {
        fn event(
            _: &mut Self,
            _: &wl_registry::WlRegistry,
            _: wl_registry::Event,
            _: &GlobalListContents,
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }
    impl Dispatch<zxdg_output_manager_v1::ZxdgOutputManagerV1, ()> for Info {
        fn event(
            _: &mut Self,
            _: &zxdg_output_manager_v1::ZxdgOutputManagerV1,
            _: zxdg_output_manager_v1::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }

    let comp = Compositor::start(&["--no-default-output", "--output", "B 800x600 -800 100 2"]);
    let conn = Connection::from_socket(UnixStream::connect(&comp.socket).unwrap()).unwrap();
    let (globals, mut queue) = registry_queue_init::<Info>(&conn).unwrap();
    let qh = queue.handle();
    let out: wl_output::WlOutput = globals.bind(&qh, 4..=4, ()).unwrap();
    let manager: zxdg_output_manager_v1::ZxdgOutputManagerV1 =
        globals.bind(&qh, 3..=3, ()).unwrap();
    let mut info = Info::default();
    queue.roundtrip(&mut info).unwrap();
    let _xdg = manager.get_xdg_output(&out, &qh, ());
    queue.roundtrip(&mut info).unwrap();
    assert_eq!(
        info.wl,
        [
            "geometry -800,100",
            "mode 800x600@60000",
            "scale 2",
            "name B",
            "description framebus test output B"
        ]
    );
    assert_eq!(info.xdg, ["position -800,100", "size 400x300", "name B"]);
    assert_eq!(
        info.done, 2,
        "wl_output.done after the output and after xdg-output v3"
    );
}

#[test]
fn rotated_outputs_report_their_transform() {
    let mut comp = Compositor::start(&["--no-default-output", "--output", "R 40x30 0 0 1 1"]);
    assert_eq!(comp.cmd("outputs"), "OK R=40x30+0+0@1");
    assert!(comp
        .cmd("output X 4x4 0 0 1 9")
        .starts_with("ERR transform 9"));
    let mut conn = Conn::connect(&comp.socket);
    let out = conn.output("R");
    let session = conn.session(&out);
    assert_eq!(
        conn.state.size,
        Some((40, 30)),
        "buffer size stays in buffer pixels"
    );
    let buf = Buffer::new(&conn, 40, 30, wl_shm::Format::Xrgb8888);
    let frame = conn.start_capture(&session, &buf.buffer, &[(0, 0, 40, 30)]);
    while !conn.state.ready {
        conn.queue.blocking_dispatch(&mut conn.state).unwrap();
    }
    assert_eq!(conn.state.transform, Some(wl_output::Transform::_90 as u32));
    frame.destroy();
}

#[test]
fn sigterm_and_stdin_eof_exit_cleanly() {
    let mut comp = Compositor::start(&[]);
    let socket = comp.socket.clone();
    assert!(std::path::Path::new(&socket).exists());
    let pid = rustix::process::Pid::from_child(&comp.child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = comp.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !std::path::Path::new(&socket).exists(),
        "the socket is removed"
    );

    // stdin closed: exits too.
    let dir = std::env::temp_dir().join(format!("fb-wltc-eof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("wayland-eof");
    let mut child = Command::new(env!("CARGO_BIN_EXE_framebus-wl-testcompositor"))
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "READY\n");
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ client dispatch

impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for Client {
    fn event(
        _: &mut Self,
        _: &wl_registry::WlRegistry,
        _: wl_registry::Event,
        _: &GlobalListContents,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<wl_output::WlOutput, ()> for Client {
    fn event(
        state: &mut Self,
        o: &wl_output::WlOutput,
        event: wl_output::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_output::Event::Name { name } = event {
            if let Some(e) = state.outputs.iter_mut().find(|(x, _)| x == o) {
                e.1 = Some(name);
            }
        }
    }
}

impl Dispatch<ExtImageCopyCaptureSessionV1, ()> for Client {
    fn event(
        state: &mut Self,
        _: &ExtImageCopyCaptureSessionV1,
        event: session_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            session_v1::Event::ShmFormat {
                format: WEnum::Value(f),
            } => state.formats.push(f as u32),
            session_v1::Event::ShmFormat {
                format: WEnum::Unknown(f),
            } => state.formats.push(f),
            session_v1::Event::BufferSize { width, height } => state.size = Some((width, height)),
            session_v1::Event::Done => state.constraints_done = true,
            session_v1::Event::Stopped => state.stopped = true,
            _ => {}
        }
    }
}

impl Dispatch<ExtImageCopyCaptureFrameV1, ()> for Client {
    fn event(
        state: &mut Self,
        _: &ExtImageCopyCaptureFrameV1,
        event: frame_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            frame_v1::Event::Damage {
                x,
                y,
                width,
                height,
            } => state.damage.push((x, y, width, height)),
            frame_v1::Event::Transform { transform } => state.transform = Some(transform.into()),
            frame_v1::Event::PresentationTime { .. } => state.presented = true,
            frame_v1::Event::Ready => state.ready = true,
            frame_v1::Event::Failed { reason } => state.failed = Some(reason.into()),
            _ => {}
        }
    }
}

macro_rules! ignore_events {
    ($($t:ty),*) => {$(
        impl Dispatch<$t, ()> for Client {
            fn event(_: &mut Self, _: &$t, _: <$t as wayland_client::Proxy>::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {}
        }
    )*};
}
ignore_events!(
    wl_shm::WlShm,
    wl_shm_pool::WlShmPool,
    wl_buffer::WlBuffer,
    ExtOutputImageCaptureSourceManagerV1,
    ExtImageCaptureSourceV1,
    ExtImageCopyCaptureManagerV1
);
