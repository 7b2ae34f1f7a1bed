//! Tests of `VideoWriter`: lossless round trips through real FFmpeg, FFmpeg
//! failures carry its stderr, bounds and paths, and — with a stand-in
//! "ffmpeg" script that copies its stdin to the output file once a gate
//! opens — getters that never wait for a blocked write and bounded waits that
//! resume exactly. Tests needing FFmpeg skip themselves without it.

use super::*;
use crate::test_util::{until_done, wait_for, SLICE};
use framebus_core::{FramePool, PixelFormat};
use std::sync::{Arc, Mutex};

fn have_ffmpeg() -> bool {
    find_ffmpeg(None).is_ok()
}

/// A file path in a per-test directory, removed when the guard drops.
struct TmpDir(PathBuf);
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
thread_local!(static DIR: TmpDir = {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("framebus-pipe-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
});

fn tmp(name: &str) -> PathBuf {
    DIR.with(|d| d.0.join(name))
}

fn frame(pool: &FramePool, w: usize, h: usize, k: u8) -> Frame {
    let mut f = pool.acquire_frame(w, h, PixelFormat::Bgra, None).unwrap();
    for (i, b) in f.data_mut().unwrap().iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(k.wrapping_mul(13));
    }
    f
}

#[test]
fn lossless_encode_decodes_to_the_same_frames() {
    if !have_ffmpeg() {
        eprintln!("skipped: no ffmpeg");
        return;
    }
    let (w, h) = (64, 48);
    let path = tmp("lossless.mkv");
    let mut cfg = VideoConfig::new(&path, w, h, 25.0, PixelFormat::Bgra);
    cfg.codec = "ffv1".into();
    let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
    assert!(vw
        .command_line()
        .contains("-pix_fmt bgra -video_size 64x48 -framerate 25"));
    let pool = FramePool::default();
    let mut expect = Vec::new();
    for k in 0..12 {
        let f = frame(&pool, w, h, k);
        // SAFETY: no writer to this frame (we filled it and only the job reads it).
        expect.extend_from_slice(unsafe { f.data() });
        vw.write(&f).unwrap();
    }
    assert_eq!(vw.frames_written(), 12);
    vw.flush().unwrap();
    assert_eq!(vw.frames_queued(), 0);
    vw.close().unwrap();
    assert!(vw.output_bytes() > 0);
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-f", "rawvideo", "-pix_fmt", "bgra", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), expect.len());
    assert!(out.stdout == expect, "decoded frames differ");
}

#[test]
fn bad_codec_fails_with_stderr_tail() {
    if !have_ffmpeg() {
        return;
    }
    let mut cfg = VideoConfig::new(tmp("bad.mkv"), 32, 32, 30.0, PixelFormat::Bgra);
    cfg.codec = "no_such_codec_x".into();
    let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
    let pool = FramePool::default();
    // Writes may or may not fail first (FFmpeg exits quickly); close must fail.
    for k in 0..50 {
        if vw.write(&frame(&pool, 32, 32, k)).is_err() {
            break;
        }
    }
    let e = vw.close().unwrap_err().to_string();
    assert!(e.contains("no_such_codec_x"), "{e}");
    assert!(e.contains("ffmpeg failed"), "{e}");
    assert!(vw.close().is_err(), "close again repeats the failure");
}

#[test]
fn killed_ffmpeg_gives_an_error_not_a_hang() {
    if !have_ffmpeg() {
        return;
    }
    let cfg = VideoConfig::new(tmp("killed.mp4"), 320, 240, 30.0, PixelFormat::Bgra);
    let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
    let pool = FramePool::default();
    vw.write(&frame(&pool, 320, 240, 0)).unwrap();
    let pid = vw.pid().unwrap();
    // SAFETY: plain kill(2) of our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let mut failed = None;
    for k in 0..200 {
        if let Err(e) = vw.write(&frame(&pool, 320, 240, k)) {
            failed = Some(e);
            break;
        }
    }
    let e = failed.unwrap_or_else(|| vw.close().unwrap_err());
    let s = e.to_string();
    assert!(
        s.contains("ffmpeg failed") && s.contains("signal: 9"),
        "{s}"
    );
    assert!(vw.close().is_err());
}

#[test]
fn mismatched_frames_and_bad_configs_are_refused() {
    if !have_ffmpeg() {
        return;
    }
    let mut cfg = VideoConfig::new(tmp("m.mkv"), 32, 32, 30.0, PixelFormat::Bgra);
    cfg.codec = "ffv1".into();
    let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
    let pool = FramePool::default();
    let e = vw.write(&frame(&pool, 32, 16, 0)).unwrap_err().to_string();
    assert!(e.contains("expects 32x32, got 32x16"), "{e}");
    let f = pool.acquire_frame(32, 32, PixelFormat::Rgba, None).unwrap();
    let e = vw.write(&f).unwrap_err().to_string();
    assert!(
        e.contains("format mismatch") && e.contains("expects BGRA, got RGBA"),
        "{e}"
    );
    vw.close().unwrap();
    let e = vw.write(&frame(&pool, 32, 32, 0)).unwrap_err();
    assert!(matches!(e, PipeError::WriterClosed), "{e}");

    let odd = VideoConfig::new(tmp("o.mp4"), 33, 32, 30.0, PixelFormat::Bgra);
    let e = VideoWriter::<Frame>::open(odd).err().unwrap().to_string();
    assert!(e.contains("33x32") && e.contains("even"), "{e}");
    let zero_fps = VideoConfig::new(tmp("z.mp4"), 32, 32, 0.0, PixelFormat::Bgra);
    let e = VideoWriter::<Frame>::open(zero_fps)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("invalid fps: 0.0"), "{e}");
    let mut nf = VideoConfig::new(tmp("n.mp4"), 32, 32, 30.0, PixelFormat::Bgra);
    nf.ffmpeg = Some("/nonexistent/ffmpeg".into());
    let e = VideoWriter::<Frame>::open(nf).err().unwrap().to_string();
    assert!(
        e.contains("/nonexistent/ffmpeg is not an executable"),
        "{e}"
    );
}

#[test]
fn output_pix_fmt_rules() {
    let mut c = VideoConfig::new("x.mp4", 2, 2, 29.97, PixelFormat::Rgb);
    assert_eq!(c.output_pix_fmt().as_deref(), Some("yuv420p"));
    let a = c.args().join(" ");
    assert!(
        a.contains("-pix_fmt rgb24 -video_size 2x2 -framerate 29.97 -i pipe:0"),
        "{a}"
    );
    c.codec = "libx264rgb".into();
    assert_eq!(c.output_pix_fmt(), None);
    c.pix_fmt = Some("bgr0".into());
    c.extra_args = vec!["-qp".into(), "0".into()];
    c.preset = Some("ultrafast".into());
    let a = c.args().join(" ");
    assert!(
        a.ends_with("-c:v libx264rgb -preset ultrafast -pix_fmt bgr0 -qp 0 file:x.mp4"),
        "{a}"
    );
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo only creates a node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Let a stand-in ffmpeg blocked on the FIFO `gate` go on: opening the write
/// end waits for its reader, the line lets its `read` return.
fn open_gate(gate: &Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(gate).unwrap();
    f.write_all(b"go\n").unwrap();
}

/// A stand-in for ffmpeg (a slow reader on demand): waits for `gate`, copies
/// its stdin to its last argument (minus `file:`), then waits for `exit_gate`
/// if there is one, and exits 0. Returns (script, gate, exit_gate).
fn fake_ffmpeg(name: &str, exit_gate: bool) -> (PathBuf, PathBuf, Option<PathBuf>) {
    use std::os::unix::fs::PermissionsExt;
    let gate = tmp(&format!("{name}.gate"));
    mkfifo(&gate);
    let exit = exit_gate.then(|| {
        let p = tmp(&format!("{name}.exit"));
        mkfifo(&p);
        p
    });
    let mut sh = format!(
        "#!/bin/sh\nread go < '{}'\nfor a; do last=$a; done\ncat > \"${{last#file:}}\"\n",
        gate.display()
    );
    if let Some(e) = &exit {
        sh.push_str(&format!("read go < '{}'\n", e.display()));
    }
    let script = tmp(&format!("{name}.sh"));
    std::fs::write(&script, sh).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, gate, exit)
}

/// `VideoWriter::open`, retrying while the fresh script is "text file busy"
/// (another test thread's fork may briefly hold its write fd).
fn open_fake<O: Source>(cfg: VideoConfig) -> VideoWriter<O> {
    for _ in 0..100 {
        match VideoWriter::open(cfg.clone()) {
            Err(PipeError::FfmpegSpawn { source, .. })
                if source.raw_os_error() == Some(libc::ETXTBSY) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r.unwrap(),
        }
    }
    panic!("the stand-in ffmpeg stayed busy");
}

fn raw_frames(n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(k as u8))
                .collect()
        })
        .collect()
}

#[test]
fn status_is_readable_while_a_write_blocks() {
    let (ff, gate, _) = fake_ffmpeg("status", false);
    let out = tmp("status.raw");
    let mut cfg = VideoConfig::new(&out, 320, 240, 30.0, PixelFormat::Bgra);
    cfg.ffmpeg = Some(ff);
    cfg.queue_depth = 1;
    let vw: VideoWriter<Vec<u8>> = open_fake(cfg);
    let status = vw.status();
    assert!(status.pid().is_some());
    assert_eq!(status.pid(), vw.pid());
    assert!(!status.closed() && !status.failed());
    // 20 frames of 300 KB; with nobody reading, at most the 1 MiB pipe, one
    // frame in the worker and one queued get in, so the writing thread blocks
    // in `write_owner` holding the lock, like the Python binding's mutex.
    let n = 20;
    let frames = raw_frames(n, 320 * 240 * 4);
    let expect = frames.concat();
    let vw = Arc::new(Mutex::new(vw));
    let writing = {
        let vw = vw.clone();
        std::thread::spawn(move || {
            let mut g = vw.lock().unwrap();
            for f in frames {
                g.write_owner(f).unwrap();
            }
        })
    };
    wait_for("two frames queued", || status.frames_written() >= 2);
    assert!(vw.try_lock().is_err(), "the blocked writer holds the lock");
    assert!(status.frames_written() < n as u64);
    assert!(status.pid().is_some() && !status.closed() && !status.failed());
    open_gate(&gate);
    writing.join().unwrap();
    vw.lock().unwrap().close().unwrap();
    assert_eq!(status.frames_written(), n as u64);
    assert!(status.closed() && !status.failed());
    assert_eq!(status.pid(), None, "reaped");
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "every frame once, in order");
}

#[test]
fn timed_out_writes_hand_the_frame_back_and_resume_exactly() {
    let (ff, gate, exit_gate) = fake_ffmpeg("slices", true);
    let exit_gate = exit_gate.unwrap();
    let out = tmp("slices.raw");
    let mut cfg = VideoConfig::new(&out, 320, 240, 30.0, PixelFormat::Bgra);
    cfg.ffmpeg = Some(ff);
    cfg.queue_depth = 1;
    let mut vw: VideoWriter<Vec<u8>> = open_fake(cfg);
    let status = vw.status();
    let frames = raw_frames(12, 320 * 240 * 4);
    let expect = frames.concat();
    let mut timeouts = 0;
    for f in frames {
        let mut f = f;
        let addr = f.as_ptr();
        loop {
            match vw.write_owner_timeout(f, SLICE) {
                Ok(()) => break,
                Err(Rejected {
                    error: WaitError::Timeout,
                    owner,
                }) => {
                    assert_eq!(owner.as_ptr(), addr, "the same frame comes back");
                    timeouts += 1;
                    if timeouts == 1 {
                        assert!(vw.flush_timeout(SLICE).unwrap_err().is_timeout());
                    }
                    if timeouts == 3 {
                        open_gate(&gate); // FFmpeg starts reading
                    }
                    f = owner;
                }
                Err(r) => panic!("{}", r.error),
            }
        }
    }
    assert!(timeouts >= 3);
    assert_eq!(status.frames_written(), 12);
    until_done("flush", || vw.flush_timeout(SLICE));
    // FFmpeg finishes only once told to, so close must time out at least once,
    // in the flush or the wait phase; it refuses writes from its first call on.
    let e = vw.close_timeout(SLICE).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(status.closed() && status.pid().is_some());
    let rj = vw.write_owner(vec![0; 320 * 240 * 4]).unwrap_err();
    assert!(matches!(rj.error, PipeError::WriterClosed), "{}", rj.error);
    let release = std::thread::spawn(move || open_gate(&exit_gate));
    until_done("close", || vw.close_timeout(SLICE));
    release.join().unwrap();
    assert_eq!(status.pid(), None);
    assert!(!status.failed());
    vw.close().unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "every frame once, in order");
}

#[test]
fn out_of_range_arguments_are_invalid_not_aborts() {
    let base = || VideoConfig::new(tmp("b.mp4"), 32, 32, 30.0, PixelFormat::Bgra);
    let mut cases: Vec<(VideoConfig, &str)> = Vec::new();
    let mut c = base();
    c.queue_depth = 1 << 40;
    cases.push((c, "invalid queue_depth: 1099511627776"));
    let mut c = base();
    c.queue_depth = 0;
    cases.push((c, "invalid queue_depth: 0"));
    for (fps, want) in [
        (1e300, "invalid fps: 1e300"),
        (1e-9, "invalid fps: 1e-9"),
        (f64::NAN, "invalid fps: NaN"),
        (f64::INFINITY, "invalid fps: inf"),
        (-30.0, "invalid fps: -30.0"),
    ] {
        let mut c = base();
        c.fps = fps;
        cases.push((c, want));
    }
    let mut c = base();
    c.crf = Some(64);
    cases.push((c, "invalid crf: 64"));
    let mut c = base();
    c.width = 0;
    cases.push((c, "invalid width: 0"));
    let mut c = base();
    c.height = MAX_VIDEO_SIZE + 2;
    cases.push((c, "invalid height: 32770"));
    let mut c = base();
    c.width = 1 << 40;
    cases.push((c, "invalid width: 1099511627776"));
    cases.push((
        VideoConfig::url("-f", 32, 32, 30.0, PixelFormat::Bgra),
        "invalid url: \"-f\"",
    ));
    cases.push((
        VideoConfig::url("out.mp4", 32, 32, 30.0, PixelFormat::Bgra),
        "invalid url: \"out.mp4\"",
    ));
    cases.push((
        VideoConfig::new("", 32, 32, 30.0, PixelFormat::Bgra),
        "invalid path",
    ));
    for (cfg, want) in cases {
        let e = VideoWriter::<Frame>::open(cfg).err().unwrap();
        assert!(matches!(e, PipeError::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e} (want {want})");
    }
    // The bounds themselves are accepted.
    let mut c = base();
    (c.queue_depth, c.fps, c.crf) = (crate::MAX_DEPTH, MAX_FPS, Some(MAX_CRF));
    c.validate().unwrap();
    (c.fps, c.crf) = (MIN_FPS, Some(0));
    c.validate().unwrap();
    let mut c = VideoConfig::new("x.mkv", MAX_VIDEO_SIZE, 1, 30.0, PixelFormat::Gray8);
    c.codec = "ffv1".into();
    c.validate().unwrap();
    VideoConfig::url("rtmp://host/live", 32, 32, 30.0, PixelFormat::Bgra)
        .validate()
        .unwrap();
}

/// Runs in `dir` as the working directory and restores the previous one on
/// drop (the only test that depends on the working directory).
struct Cwd(PathBuf);
impl Cwd {
    fn enter(dir: &Path) -> Cwd {
        let old = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir).unwrap();
        Cwd(old)
    }
}
impl Drop for Cwd {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.0);
    }
}

#[test]
fn a_path_is_always_that_file() {
    let c = VideoConfig::new("-out.mp4", 2, 2, 30.0, PixelFormat::Bgra);
    assert_eq!(c.args().last().unwrap(), "file:-out.mp4");
    assert_eq!(c.path(), Some(Path::new("-out.mp4")));
    let u = VideoConfig::url("udp://127.0.0.1:1234", 2, 2, 30.0, PixelFormat::Bgra);
    assert_eq!(u.args().last().unwrap(), "udp://127.0.0.1:1234");
    assert_eq!(u.path(), None);
    if !have_ffmpeg() {
        eprintln!("skipped: no ffmpeg");
        return;
    }
    let dir = tmp("paths");
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["-out.mp4", "file:x.mp4", "http:y.mp4"];
    {
        let _cwd = Cwd::enter(&dir);
        let pool = FramePool::default();
        for name in names {
            let mut cfg = VideoConfig::new(name, 64, 48, 25.0, PixelFormat::Bgra);
            cfg.preset = Some("ultrafast".into());
            let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
            for k in 0..5 {
                vw.write(&frame(&pool, 64, 48, k)).unwrap();
            }
            vw.close().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(vw.output_bytes() > 0, "{name}");
        }
    }
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "exactly those files, nothing else");
    for name in names {
        let b = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(
            &b[4..8],
            b"ftyp",
            "{name}: the mp4 muxer picked by extension"
        );
    }
}

#[test]
fn a_url_is_passed_to_ffmpeg_verbatim() {
    if !have_ffmpeg() {
        return;
    }
    // The explicit protocol is honoured: `file:` + absolute path writes that file.
    let path = tmp("url.mkv");
    let url = format!("file:{}", path.display());
    let mut cfg = VideoConfig::url(&url, 32, 32, 25.0, PixelFormat::Bgra);
    cfg.codec = "ffv1".into();
    let mut vw: VideoWriter = VideoWriter::open(cfg).unwrap();
    assert!(vw.command_line().ends_with(&format!(" {url}")));
    let pool = FramePool::default();
    for k in 0..3 {
        vw.write(&frame(&pool, 32, 32, k)).unwrap();
    }
    vw.close().unwrap();
    assert_eq!(vw.output_bytes(), 0, "no file size for a URL");
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
}
