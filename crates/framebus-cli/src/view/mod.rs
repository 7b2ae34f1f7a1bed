//! `framebus view SOURCE`: a local web page that shows a source live, with
//! its fps, frame age, size and drops beside the picture.
//!
//! ```text
//!  source thread (this one)                     HTTP threads (one per browser connection)
//!  ────────────────────────                     ─────────────────────────────────────────
//!  latest frame ── encode (only while a  ─▶ Hub { newest JPEG, seq } ─▶ GET /frame.jpg?after=SEQ
//!  (channel: latest-mode subscriber;        one Arc, shared by all      waits for seq > SEQ, sends it
//!   screen: Capture.latest())               clients, condvar            GET /stats (JSON, 2×/s)
//! ```
//!
//! Transport: the page asks for the next frame only after it has drawn the
//! previous one (`fetch` → `createImageBitmap` → canvas), and the server
//! answers with the newest JPEG it has. So each browser has at most one frame
//! in flight, nothing queues in socket buffers, and a slow browser simply sees
//! fewer frames; the encoder encodes each source frame once for every client,
//! and only while someone watches. Why not MJPEG or a WebSocket: see
//! docs/cli.md.
//!
//! Security: the page and its endpoints need a random token in the URL
//! (printed on start), even on 127.0.0.1 — a TCP port is open to every local
//! user, while a channel is private to its user.

mod http;
pub(crate) mod source;

use clap::Args;
use source::{Encoder, Next, Source, SourceSpec};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Options of `framebus view`.
#[derive(Args, Debug)]
pub struct ViewArgs {
    /// What to show: channel:NAME or screen:MONITOR (0 = all monitors).
    source: String,
    /// Address to listen on; anything but loopback exposes the page to the
    /// network (the URL's token still guards it).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// TCP port (0 = a free one, printed on start).
    #[arg(short = 'p', long, default_value_t = 0)]
    port: u16,
    /// The token the URL must carry (default: a random one).
    #[arg(long)]
    token: Option<String>,
    /// JPEG quality, 1 to 100.
    #[arg(short = 'Q', long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    /// Frames wider than this are scaled down for the browser.
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(u32).range(16..=65535))]
    max_width: u32,
    /// screen: capture rate in frames per second.
    #[arg(short = 'r', long, default_value_t = 30.0)]
    fps: f64,
    /// screen: the display, an X display (":1") or a Wayland socket ("wayland-1"); default $WAYLAND_DISPLAY, else $DISPLAY.
    #[arg(short = 'd', long)]
    display: Option<String>,
    /// screen: include the mouse cursor.
    #[arg(long)]
    with_cursor: bool,
    /// channel: seconds to wait for the publisher to appear.
    #[arg(long, default_value_t = 5.0)]
    wait: f64,
    /// No status line on stderr (the URL is still printed on stdout).
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// The newest encoded frame.
#[derive(Clone, Default)]
pub(crate) struct Latest {
    pub seq: u64,
    pub jpeg: Arc<Vec<u8>>,
    /// Capture/acquire time of the frame (`CLOCK_MONOTONIC` ns).
    pub timestamp_ns: u64,
}

/// Figures shown beside the picture (`GET /stats`).
#[derive(Clone, Default)]
pub(crate) struct Figures {
    pub source: String,
    pub width: usize,
    pub height: usize,
    pub format: String,
    /// Source frames per second received by the viewer.
    pub fps: f64,
    pub received: u64,
    pub drops: u64,
    /// Age of the newest frame when it was received (ms).
    pub age_ms: f64,
    pub encode_ms: f64,
    pub jpeg_bytes: usize,
    /// Frames sent to browsers, all clients together.
    pub served: u64,
    pub clients: usize,
    pub status: String,
}

/// What the source thread and the HTTP threads share.
pub(crate) struct Hub {
    pub latest: Mutex<Latest>,
    pub fresh: Condvar,
    pub figures: Mutex<Figures>,
    /// When a browser last asked for a frame (ms since `epoch`): encoding
    /// runs only while someone watches.
    pub last_request_ms: AtomicU64,
    pub epoch: Instant,
    pub served: AtomicU64,
    pub clients: AtomicUsize,
    pub token: String,
    pub stop: crate::Stop,
}

impl Hub {
    fn watched(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_request_ms.load(Ordering::Relaxed)) < 3000
    }

    pub(crate) fn note_request(&self) {
        self.last_request_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// A random token: 16 bytes of the kernel's randomness, in hex.
fn random_token() -> Result<String, String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("reading /dev/urandom for the token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Run the subcommand until `stop` is set (Ctrl-C).
pub fn run(args: ViewArgs, stop: &crate::Stop) -> Result<(), String> {
    let spec = SourceSpec::parse(&args.source)?;
    if !(args.wait.is_finite() && (0.0..=86_400.0).contains(&args.wait)) {
        return Err(format!("--wait {}: must be 0 to 86400 seconds", args.wait));
    }
    let token = match args.token.clone() {
        Some(t)
            if !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            t
        }
        Some(t) => return Err(format!("--token {t:?}: 1-128 letters, digits, '-' or '_'")),
        None => random_token()?,
    };
    let listener = TcpListener::bind(SocketAddr::new(args.bind, args.port))
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.bind, args.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut source = Source::open(
        &spec,
        Duration::from_secs_f64(args.wait),
        args.fps,
        args.display.as_deref(),
        args.with_cursor,
        stop,
    )?;
    let hub = Arc::new(Hub {
        latest: Mutex::new(Latest::default()),
        fresh: Condvar::new(),
        figures: Mutex::new(Figures {
            source: spec.to_string(),
            status: "waiting for the first frame".into(),
            ..Figures::default()
        }),
        last_request_ms: AtomicU64::new(0),
        epoch: Instant::now(),
        served: AtomicU64::new(0),
        clients: AtomicUsize::new(0),
        token,
        stop: stop.clone(),
    });
    let host = match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    println!("http://{host}:{}/?token={}", addr.port(), hub.token);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    if !args.bind.is_loopback() {
        eprintln!(
            "framebus view: listening on {} — reachable from the network; the URL's token guards it",
            addr
        );
    }
    let server = {
        let hub = hub.clone();
        std::thread::Builder::new()
            .name("framebus-view-http".into())
            .spawn(move || http::serve(listener, hub))
            .map_err(|e| format!("starting the HTTP thread: {e}"))?
    };
    let result = pump(&mut source, &hub, &args, stop);
    stop.set(); // ends the HTTP threads too
    hub.fresh.notify_all();
    let _ = server.join();
    result
}

/// The source loop: take the newest frame, encode it while someone watches,
/// publish it to the hub; keep the figures and the status line up to date.
fn pump(source: &mut Source, hub: &Hub, args: &ViewArgs, stop: &crate::Stop) -> Result<(), String> {
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut enc = Encoder::new(args.quality, args.max_width as usize);
    let mut jpeg = Vec::new();
    let mut last_arrival: Option<Instant> = None;
    let mut period = 0.0f64;
    let mut received = 0u64;
    let mut seq = 0u64;
    // The newest frame not encoded yet: encoded as soon as a browser asks,
    // even if the source sends nothing new (a still picture).
    let mut pending = None;
    let mut last_status = Instant::now() - Duration::from_secs(1);
    while !stop.is_set() {
        let next = source.next(Duration::from_millis(100))?;
        let now = Instant::now();
        let mut status: Option<String> = None;
        match next {
            Next::Frame(frame) => {
                received += 1;
                if let Some(t) = last_arrival {
                    let dt = now.duration_since(t).as_secs_f64();
                    period = if period == 0.0 || dt > 1.0 {
                        dt
                    } else {
                        period * 0.9 + dt * 0.1
                    };
                }
                last_arrival = Some(now);
                let age_ms =
                    framebus_core::monotonic_ns().saturating_sub(frame.timestamp_ns()) as f64 / 1e6;
                let mut f = hub.figures.lock().unwrap_or_else(|e| e.into_inner());
                f.width = frame.width();
                f.height = frame.layout().height;
                f.format = frame.format().name().to_string();
                f.received = received;
                f.age_ms = age_ms;
                drop(f);
                pending = Some(frame);
            }
            Next::Idle => {}
            Next::NoPublisher => status = Some("waiting for a publisher".into()),
        }
        let watched = hub.watched();
        if let (true, Some(frame)) = (watched, pending.take()) {
            let t = Instant::now();
            // A frame that cannot be shown (too large for JPEG, …) is named in
            // the status; the next one may be fine.
            match enc.encode(&frame, &mut jpeg) {
                Ok(_) => {
                    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
                    let timestamp_ns = frame.timestamp_ns();
                    drop(frame); // the slot goes back to its producer
                    seq += 1;
                    let bytes = jpeg.len();
                    let mut l = hub.latest.lock().unwrap_or_else(|e| e.into_inner());
                    *l = Latest {
                        seq,
                        jpeg: Arc::new(std::mem::take(&mut jpeg)),
                        timestamp_ns,
                    };
                    drop(l);
                    hub.fresh.notify_all();
                    let mut f = hub.figures.lock().unwrap_or_else(|e| e.into_inner());
                    f.encode_ms = encode_ms;
                    f.jpeg_bytes = bytes;
                }
                Err(e) => status = Some(format!("cannot show this frame: {e}")),
            }
        }
        let idle = last_arrival
            .is_none_or(|t| now.duration_since(t).as_secs_f64() > (period * 3.0).max(1.0));
        let mut f = hub.figures.lock().unwrap_or_else(|e| e.into_inner());
        f.fps = if idle || period == 0.0 {
            0.0
        } else {
            1.0 / period
        };
        f.drops = source.drops();
        f.served = hub.served.load(Ordering::Relaxed);
        f.clients = hub.clients.load(Ordering::Relaxed);
        f.status = status.unwrap_or_else(|| if watched { "live" } else { "no browser" }.into());
        if now.duration_since(last_status) >= Duration::from_millis(250) {
            last_status = now;
            bar.set_message(format!(
                "{}  {}x{} {}  {:.1} fps  age {:.1} ms  drops {}  encode {:.1} ms  served {}  {} client(s)  {}",
                f.source, f.width, f.height, f.format, f.fps, f.age_ms, f.drops, f.encode_ms,
                f.served, f.clients, f.status
            ));
            bar.tick();
        }
    }
    bar.finish_and_clear();
    let f = hub.figures.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "framebus view: {} frames received, {} dropped by the source, {} served",
        f.received, f.drops, f.served
    );
    Ok(())
}
