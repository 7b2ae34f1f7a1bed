//! `framebus-wl-testcompositor`: a headless Wayland compositor for tests, offering `wl_shm`,
//! `wl_output` v4, `zxdg_output_manager_v1` v3 and `ext-image-copy-capture-v1` over output
//! capture sources, with outputs and their pixels driven by commands on stdin.
//!
//! ```text
//! framebus-wl-testcompositor --socket NAME|PATH [--no-default-output]
//!                            [--output "NAME WxH X Y [SCALE [TRANSFORM]]"]...
//!                            [--format FMT[,FMT...]]
//! ```
//! Prints `READY` once listening. Commands (one per line, each answered `OK ...` or
//! `ERR reason`): `output NAME WxH X Y [SCALE [TRANSFORM]]` (wl_output.transform 0-7),
//! `remove NAME`, `fill NAME X Y W H RRGGBBAA`, `pattern NAME SEED`, `freeze MS` (reply, then
//! stop answering anyone for MS ms), `format FMT[,FMT...]` (exactly the shm formats sessions
//! offer, in order; default `XRGB8888,ARGB8888`), `outputs`,
//! `stats` (`OK bytes_written=N frames=N failed=N sessions=N`). Exits on SIGTERM, SIGINT or
//! stdin EOF. The pattern formula is in `state::pattern_rgba`.

mod protocol;
mod shm;
mod state;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wayland_protocols::ext::image_capture_source::v1::server::ext_output_image_capture_source_manager_v1::ExtOutputImageCaptureSourceManagerV1;
use wayland_protocols::ext::image_copy_capture::v1::server::ext_image_copy_capture_manager_v1::ExtImageCopyCaptureManagerV1;
use wayland_protocols::xdg::xdg_output::zv1::server::zxdg_output_manager_v1::ZxdgOutputManagerV1;
use wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use wayland_server::protocol::wl_shm::WlShm;
use wayland_server::{Display, ListeningSocket};

use state::State;

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

struct ClientState;
impl ClientData for ClientState {
    fn disconnected(&self, _id: ClientId, _reason: DisconnectReason) {}
}

struct Args {
    socket: String,
    default_output: bool,
    outputs: Vec<String>,
    format: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        socket: String::new(),
        default_output: true,
        outputs: Vec::new(),
        format: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--socket" => args.socket = value("--socket")?,
            "--no-default-output" => args.default_output = false,
            "--output" => args.outputs.push(value("--output")?),
            "--format" => args.format = Some(value("--format")?),
            "-h" | "--help" => {
                println!("usage: framebus-wl-testcompositor --socket NAME|PATH [--no-default-output] [--output \"NAME WxH X Y [SCALE [TRANSFORM]]\"]... [--format FMT[,FMT...]]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.socket.is_empty() {
        return Err("--socket NAME|PATH is required".into());
    }
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("framebus-wl-testcompositor: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `on_signal` is async-signal-safe (one atomic store); no SA_RESTART, so a
        // blocked poll returns EINTR and the loop sees the flag at once.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: ignoring SIGPIPE (a vanished client or test harness) is process-wide and has no
    // memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }

    let mut display: Display<State> = Display::new().map_err(|e| format!("display: {e}"))?;
    let dh = display.handle();
    let listener = if args.socket.contains('/') {
        ListeningSocket::bind_absolute(args.socket.clone().into())
    } else {
        ListeningSocket::bind(&args.socket)
    }
    .map_err(|e| format!("cannot listen on {}: {e}", args.socket))?;

    let mut state = State::new();
    dh.create_global::<State, WlShm, ()>(2, ());
    dh.create_global::<State, ZxdgOutputManagerV1, ()>(3, ());
    dh.create_global::<State, ExtOutputImageCaptureSourceManagerV1, ()>(1, ());
    dh.create_global::<State, ExtImageCopyCaptureManagerV1, ()>(1, ());
    if args.default_output {
        state.add_output(
            &dh,
            "HEADLESS-1",
            1920,
            1080,
            0,
            0,
            1,
            wayland_server::protocol::wl_output::Transform::Normal,
        )?;
    }
    for o in &args.outputs {
        state
            .command(&format!("output {o}"), &dh)
            .map_err(|e| format!("--output {o}: {e}"))?;
    }
    if let Some(f) = &args.format {
        state
            .command(&format!("format {f}"), &dh)
            .map_err(|e| format!("--format {f}: {e}"))?;
    }

    let stdin = std::io::stdin();
    let stdin_fd = stdin.as_fd();
    rustix::io::ioctl_fionbio(stdin_fd, true).map_err(|e| format!("stdin: {e}"))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "READY")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("stdout: {e}"))?;

    let mut pending = Vec::<u8>::new();
    let mut stdin_open = true;
    let tick = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 250_000_000,
    };
    while !TERMINATE.load(Ordering::SeqCst) && stdin_open {
        let (wl_ready, in_ready, accept_ready);
        {
            use rustix::event::{PollFd, PollFlags};
            let mut fds = [
                PollFd::new(&listener, PollFlags::IN),
                PollFd::new(&display, PollFlags::IN),
                PollFd::new(&stdin_fd, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, Some(&tick)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("poll: {e}")),
            }
            let hit = |f: &PollFd| !f.revents().is_empty();
            accept_ready = hit(&fds[0]);
            wl_ready = hit(&fds[1]);
            in_ready = hit(&fds[2]);
        }
        if accept_ready {
            while let Ok(Some(stream)) = listener.accept() {
                if let Err(e) = display
                    .handle()
                    .insert_client(stream, Arc::new(ClientState))
                {
                    eprintln!("framebus-wl-testcompositor: client: {e}");
                }
            }
        }
        if wl_ready {
            display
                .dispatch_clients(&mut state)
                .map_err(|e| format!("dispatch: {e}"))?;
        }
        if in_ready {
            let mut buf = [0u8; 4096];
            loop {
                match stdin.lock().read(&mut buf) {
                    Ok(0) => {
                        stdin_open = false;
                        break;
                    }
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("stdin: {e}")),
                }
            }
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let reply = match state.command(line.trim(), &dh) {
                    Ok(text) if text.is_empty() => "OK".to_string(),
                    Ok(text) => format!("OK {text}"),
                    Err(reason) => format!("ERR {reason}"),
                };
                // Events caused by the command reach the clients before the reply reaches
                // the test, so "OK" means "sent".
                let _ = display.flush_clients();
                if writeln!(stdout, "{reply}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    stdin_open = false;
                }
                if let Some(d) = state.freeze.take() {
                    std::thread::sleep(d);
                }
            }
        }
        state.reap_globals(&dh);
        let _ = display.flush_clients();
    }
    Ok(())
}
