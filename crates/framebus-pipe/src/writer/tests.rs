//! Tests of `PipeWriter`: bytes arrive exactly once and in order (flat, padded,
//! chunked, spliced, several fds), owners are released before `sync` returns,
//! bounded queues, sticky errors, bounded waits that resume exactly, config
//! bounds. Synchronisation is by condition (gates, polled counters with a
//! deadline), never by sleeping; a sleep only ever plays a slow reader.

use super::*;
use crate::sys;
use crate::test_util::{until_done, wait_for, SLICE};
use framebus_core::{FramePool, PixelFormat};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0);
    // SAFETY: pipe2 just returned these fds; we own them exclusively.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn reader(rd: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(rd);
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    })
}

/// A reader that reads nothing until `go` is sent: a stalled reader that
/// resumes on demand (a condition, not a sleep).
fn gated_reader(rd: OwnedFd) -> (mpsc::Sender<()>, std::thread::JoinHandle<Vec<u8>>) {
    let (go, wait) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = wait.recv();
        let mut f = std::fs::File::from(rd);
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    });
    (go, t)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A writer of `depth` queued jobs a fd that writes each job in one call and
/// leaves pipes at their size (64 KiB), so a larger job blocks in `write`
/// until the reader reads.
fn small_pipe_writer(depth: usize) -> PipeWriter<Vec<u8>> {
    PipeWriter::new(WriterConfig {
        depth,
        chunk: 0,
        pipe_size: 0,
        splice: false,
    })
    .unwrap()
}

/// Counts drops, to prove owners are released exactly once and before sync returns.
struct Counted {
    bytes: Vec<u8>,
    drops: Arc<AtomicUsize>,
}
impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}
// SAFETY: the Vec's buffer lives and stays put as long as the Counted.
unsafe impl Source for Counted {
    fn region(&self) -> Region {
        Region::flat(self.bytes.as_ptr(), self.bytes.len())
    }
}

#[test]
fn bytes_arrive_exactly_and_in_order() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let r = reader(rd);
    let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
        depth: 3,
        ..Default::default()
    })
    .unwrap();
    let mut expect = Vec::new();
    for (i, n) in [1usize, 4095, 4096, 65537, 1 << 20, 3 << 20, 7]
        .iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let v = pattern(*n, i as u8);
        expect.extend_from_slice(&v);
        w.submit(fd, v, i as u64).unwrap();
    }
    w.close(fd).unwrap();
    assert!(w.fds().is_empty());
    drop(wr);
    let got = r.join().unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "bytes differ");
}

#[test]
fn chunked_writes_give_the_same_bytes() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let r = reader(rd);
    let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
        depth: 2,
        chunk: 100_000,
        pipe_size: 0,
        splice: false,
    })
    .unwrap();
    let v = pattern(1_234_567, 3);
    w.submit(fd, v.clone(), 0).unwrap();
    w.sync_fd(fd).unwrap();
    assert_eq!(w.fd_stats(fd).unwrap().bytes_written, v.len() as u64);
    w.close(fd).unwrap();
    drop(wr);
    assert!(r.join().unwrap() == v);
}

#[test]
fn padded_frames_are_written_as_tight_rows() {
    let pool = FramePool::default();
    let (w_px, h) = (5usize, 700usize); // > 1024/2 rows: several writev batches
    let stride = 32;
    let mut f = pool
        .acquire_frame(w_px, h, PixelFormat::Rgb, Some(stride))
        .unwrap();
    let data = f.data_mut().unwrap();
    for (i, b) in data.iter_mut().enumerate() {
        *b = if i % stride < w_px * 3 {
            (i / stride) as u8 ^ (i % stride) as u8
        } else {
            0xEE
        };
    }
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let r = reader(rd);
    let w: PipeWriter<framebus_core::Frame> = PipeWriter::new(WriterConfig::default()).unwrap();
    w.submit(fd, f.clone(), 1).unwrap();
    w.close(fd).unwrap();
    drop(wr);
    let got = r.join().unwrap();
    assert_eq!(got.len(), w_px * 3 * h);
    for row in 0..h {
        for c in 0..w_px * 3 {
            assert_eq!(got[row * w_px * 3 + c], row as u8 ^ c as u8);
        }
    }
}

#[test]
fn interleaved_fds_keep_their_own_order() {
    let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
    let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
        depth: 2,
        ..Default::default()
    })
    .unwrap();
    let mut readers = Vec::new();
    let mut wrs = Vec::new();
    for (rd, wr) in pipes {
        readers.push(reader(rd));
        wrs.push(wr);
    }
    let mut expect = vec![Vec::new(); 3];
    for i in 0..60u32 {
        let k = (i * 7 % 3) as usize;
        let mut v = i.to_le_bytes().to_vec();
        v.extend(pattern(10_000 + i as usize * 977, i as u8));
        expect[k].extend_from_slice(&v);
        w.submit(wrs[k].as_raw_fd(), v, i as u64).unwrap();
    }
    w.sync_all().unwrap();
    assert_eq!(w.fds().len(), 3);
    w.close_all().unwrap();
    drop(wrs);
    for (r, e) in readers.into_iter().zip(expect) {
        assert!(r.join().unwrap() == e);
    }
}

#[test]
fn owner_is_released_before_sync_returns_and_pool_slot_comes_back() {
    let pool = FramePool::default();
    let f = pool.acquire_frame(64, 64, PixelFormat::Bgra, None).unwrap();
    let (rd, wr) = pipe();
    let r = reader(rd);
    let w: PipeWriter<framebus_core::Frame> = PipeWriter::new(WriterConfig::default()).unwrap();
    w.submit(wr.as_raw_fd(), f.clone(), 42).unwrap();
    drop(f); // the job's clone keeps the slot leased
    w.sync_key(42).unwrap();
    let s = pool.stats();
    assert_eq!((s.slots_in_use, s.slots_free), (0, 1), "{s:?}");
    w.close(wr.as_raw_fd()).unwrap();
    drop(wr);
    assert_eq!(r.join().unwrap().len(), 64 * 64 * 4);
}

#[test]
fn bounded_queue_blocks_the_submitter() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let w = small_pipe_writer(2);
    // 64 KiB pipe, nobody reading: job 0 blocks in write, jobs 1-2 fill the
    // queue (the third submit returns only once the worker took job 0).
    for i in 0..3 {
        w.submit(fd, vec![i; 1 << 20], 0).unwrap();
    }
    assert_eq!(w.fd_stats(fd).unwrap().queued, 2);
    // A 4th job cannot get in: the bounded wait gives it back, queuing nothing.
    let rj = w
        .submit_timeout(fd, vec![9; 10], 0, false, Duration::from_millis(20))
        .unwrap_err();
    assert!(rj.error.is_timeout(), "{}", rj.error);
    assert_eq!(rj.owner, vec![9; 10]);
    assert_eq!(w.fd_stats(fd).unwrap().submitted, 3);
    let w2 = w.clone();
    let blocked = std::thread::spawn(move || {
        w2.submit(fd, vec![9; 10], 0).unwrap();
    });
    // The stats answer while that submit is blocked (they share no held lock).
    wait_for("a blocked submitter", || {
        w.fd_stats(fd).unwrap().waiting == 1
    });
    assert!(!blocked.is_finished(), "a 4th job must wait for room");
    let r = reader(rd);
    blocked.join().unwrap();
    w.close(fd).unwrap();
    drop(wr);
    assert_eq!(r.join().unwrap().len(), 3 * (1 << 20) + 10);
}

#[test]
fn broken_pipe_is_reported_and_nothing_more_is_written() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let drops = Arc::new(AtomicUsize::new(0));
    let w: PipeWriter<Counted> = PipeWriter::new(WriterConfig {
        depth: 4,
        ..Default::default()
    })
    .unwrap();
    let job = |n| Counted {
        bytes: vec![1; n],
        drops: drops.clone(),
    };
    w.submit(fd, job(100), 0).unwrap();
    w.sync_fd(fd).unwrap();
    drop(rd); // the reader dies
              // Either this submit or the sync sees EPIPE (a write happens in between).
    let mut err = None;
    let mut rejected = 0;
    for _ in 0..3 {
        if let Err(rj) = w.submit(fd, job(1 << 20), 0) {
            err = Some(rj.error);
            rejected += 1;
            break;
        }
    }
    let err = match err {
        Some(e) => e,
        None => w.sync_fd(fd).unwrap_err(),
    };
    assert_eq!(err.errno(), Some(libc::EPIPE), "{err}");
    assert!(err.to_string().contains("Broken pipe"), "{err}");
    // Sticky: later calls fail too and hand the owner back unwritten.
    let rj = w.submit(fd, job(10), 0).unwrap_err();
    assert_eq!(rj.error.errno(), Some(libc::EPIPE));
    drop(rj);
    rejected += 1;
    assert!(w.sync_all().is_err());
    let st = w.fd_stats(fd).unwrap();
    assert_eq!(st.done, st.submitted);
    assert_eq!(
        st.bytes_written, 100,
        "nothing after the failure reached the fd"
    );
    w.close(fd).unwrap(); // already reported
    assert_eq!(
        drops.load(Ordering::SeqCst),
        st.submitted as usize + rejected
    );
    drop(wr);
}

#[test]
fn bad_fd_gives_ebadf_not_a_panic() {
    let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig::default()).unwrap();
    let fd = 1_000_000 - 7; // above any fd this test process has open
    w.submit(fd, vec![0; 10], 0).unwrap();
    let e = w.sync_fd(fd).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EBADF), "{e}");
    let e = w.submit(-1, vec![0; 1], 0).unwrap_err().error;
    assert!(e.to_string().contains("invalid fd: -1"), "{e}");
    assert!(PipeWriter::<Vec<u8>>::new(WriterConfig {
        depth: 0,
        ..Default::default()
    })
    .is_err());
}

#[test]
fn full_disk_gives_enospc() {
    let Ok(f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return; // no /dev/full in this sandbox
    };
    let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig::default()).unwrap();
    w.submit(f.as_raw_fd(), vec![0; 4096], 0).unwrap();
    let e = w.close(f.as_raw_fd()).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOSPC), "{e}");
}

#[test]
fn pipe_is_grown_to_the_configured_size() {
    let (_rd, wr) = pipe();
    let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
        pipe_size: 1 << 20,
        ..Default::default()
    })
    .unwrap();
    w.submit(wr.as_raw_fd(), vec![0; 1], 0).unwrap();
    assert_eq!(w.fd_stats(wr.as_raw_fd()).unwrap().pipe_size, Some(1 << 20));
    w.close(wr.as_raw_fd()).unwrap();
}

#[test]
fn lease_slice_range_is_checked() {
    let lease = framebus_core::Lease::detached(framebus_core::Slot::new(4096, false).unwrap());
    assert!(LeaseSlice::new(lease.clone(), 4000, 96).is_ok());
    let e = LeaseSlice::new(lease, 4000, 97).unwrap_err();
    assert!(e.to_string().contains("4000+97"), "{e}");
}

fn splice_writer<O: Source>() -> PipeWriter<O> {
    PipeWriter::new(WriterConfig {
        splice: true,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn spliced_bytes_arrive_exactly_flat_and_padded() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let r = reader(rd);
    let pool = FramePool::default();
    let w: PipeWriter<framebus_core::Frame> = splice_writer();
    let mut expect = Vec::new();
    for k in 0..20u8 {
        let (wpx, h, stride) = if k % 2 == 0 {
            (640, 480, None)
        } else {
            (33, 700, Some(128))
        };
        let mut f = pool
            .acquire_frame(wpx, h, PixelFormat::Rgb, stride)
            .unwrap();
        let st = f.stride();
        for (i, b) in f.data_mut().unwrap().iter_mut().enumerate() {
            *b = (i as u8) ^ k;
            if i % st < wpx * 3 {
                expect.push(*b);
            }
        }
        w.submit(fd, f, k as u64).unwrap();
    }
    w.close(fd).unwrap();
    drop(wr);
    let got = r.join().unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect, "spliced bytes differ");
    assert_eq!(
        pool.stats().slots_in_use,
        0,
        "every lease released after close"
    );
}

#[test]
fn spliced_slot_is_not_reused_before_the_reader_read_it() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let pool = FramePool::default();
    let w: PipeWriter<framebus_core::Frame> = splice_writer();
    let mut f = pool
        .acquire_frame(256, 100, PixelFormat::Bgra, None)
        .unwrap(); // 100 KiB: fits the pipe
    f.data_mut().unwrap().fill(1);
    let slot = f.lease().slot_id();
    w.submit(fd, f, 7).unwrap();
    // The reader reads only once told to; until then the pages sit in the pipe
    // by reference, so the slot must stay leased and sync must not return.
    let (go, r) = gated_reader(rd);
    wait_for("the frame spliced into the pipe", || {
        w.fd_stats(fd).unwrap().bytes_written == 102_400
    });
    assert_eq!(
        pool.stats().slots_in_use,
        1,
        "slot released while its pages sit unread in the pipe"
    );
    let e = w
        .sync_key_timeout(7, Duration::from_millis(20))
        .unwrap_err();
    assert!(e.is_timeout(), "sync returned before the reader read: {e}");
    assert_eq!(pool.stats().slots_in_use, 1);
    go.send(()).unwrap();
    w.sync_key(7).unwrap();
    // Now the slot is free; reusing and overwriting it must not change what was read.
    let mut again = pool
        .acquire_frame(256, 100, PixelFormat::Bgra, None)
        .unwrap();
    assert_eq!(
        again.lease().slot_id(),
        slot,
        "the pool hands the same slot back"
    );
    again.data_mut().unwrap().fill(2);
    w.submit(fd, again, 8).unwrap();
    w.close(fd).unwrap();
    drop(wr);
    let got = r.join().unwrap();
    assert_eq!(got.len(), 2 * 256 * 100 * 4);
    assert!(
        got[..102_400].iter().all(|&b| b == 1),
        "first frame changed after release"
    );
    assert!(got[102_400..].iter().all(|&b| b == 2));
}

#[test]
fn spliced_pages_are_released_when_the_reader_dies() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let drops = Arc::new(AtomicUsize::new(0));
    let w: PipeWriter<Counted> = splice_writer();
    w.submit(
        fd,
        Counted {
            bytes: vec![3; 10_000],
            drops: drops.clone(),
        },
        0,
    )
    .unwrap();
    wait_for("the job spliced into the pipe", || {
        w.fd_stats(fd).unwrap().bytes_written == 10_000
    });
    assert_eq!(drops.load(Ordering::SeqCst), 0, "unread: still held");
    assert!(w.sync_fd_timeout(fd, SLICE).unwrap_err().is_timeout());
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "a timed-out sync releases nothing"
    );
    drop(rd); // nobody will ever read it
    w.sync_fd(fd).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    let rj = w.submit(
        fd,
        Counted {
            bytes: vec![3; 10],
            drops: drops.clone(),
        },
        0,
    );
    let e = match rj {
        Ok(_) => w.sync_fd(fd).unwrap_err(),
        Err(rj) => rj.error,
    };
    assert_eq!(e.errno(), Some(libc::EPIPE), "{e}");
    w.close(fd).ok();
}

#[test]
fn only_anonymous_pipes_are_spliced_into() {
    let (rd, wr) = pipe();
    assert!(sys::is_anonymous_pipe(wr.as_raw_fd()));
    assert!(sys::is_anonymous_pipe(rd.as_raw_fd()));
    let f = std::fs::File::open("/dev/null").unwrap();
    assert!(!sys::is_anonymous_pipe(f.as_raw_fd()));
}

#[test]
fn timeouts_hand_back_the_owner_and_resume_exactly() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let (go, r) = gated_reader(rd);
    let w = small_pipe_writer(1); // a 100 KB job fills the pipe
    let jobs: Vec<Vec<u8>> = (0..16u8)
        .map(|i| pattern(100_000 + 7 * i as usize, i))
        .collect();
    let expect = jobs.concat();
    let mut timeouts = 0;
    for (i, job) in jobs.into_iter().enumerate() {
        let mut job = job;
        let addr = job.as_ptr();
        loop {
            match w.submit_timeout(fd, job, i as u64, false, SLICE) {
                Ok(t) => {
                    assert_eq!(t.seq, i as u64, "each job queued exactly once");
                    break;
                }
                Err(rj) => {
                    assert!(rj.error.is_timeout(), "{}", rj.error);
                    assert_eq!(rj.owner.as_ptr(), addr, "the same owner comes back");
                    timeouts += 1;
                    if timeouts == 1 {
                        // Stalled (job 0 in write, job 1 queued): every wait
                        // times out and changes nothing.
                        assert_eq!(i, 2);
                        assert!(w.sync_fd_timeout(fd, SLICE).unwrap_err().is_timeout());
                        assert!(w.sync_key_timeout(0, SLICE).unwrap_err().is_timeout());
                        assert!(w.sync_all_timeout(SLICE).unwrap_err().is_timeout());
                        let t = Ticket { fd, seq: 0 };
                        assert!(w.sync_ticket_timeout(t, SLICE).unwrap_err().is_timeout());
                        let st = w.fd_stats(fd).unwrap();
                        assert_eq!((st.submitted, st.done, st.queued), (2, 0, 1));
                    }
                    if timeouts == 3 {
                        go.send(()).unwrap(); // the reader resumes
                    }
                    job = rj.owner;
                }
            }
        }
    }
    assert!(timeouts >= 3);
    until_done("sync", || w.sync_fd_timeout(fd, SLICE));
    let st = w.fd_stats(fd).unwrap();
    assert_eq!((st.submitted, st.done), (16, 16));
    assert_eq!(st.bytes_written, expect.len() as u64);
    until_done("close", || w.close_timeout(fd, SLICE));
    drop(wr);
    let got = r.join().unwrap();
    assert_eq!(got.len(), expect.len(), "every byte once");
    assert!(got == expect, "in order");
}

#[test]
fn close_in_slices_refuses_new_jobs_and_loses_nothing() {
    let (rd, wr) = pipe();
    let fd = wr.as_raw_fd();
    let (go, r) = gated_reader(rd);
    let w = small_pipe_writer(2);
    let jobs: Vec<Vec<u8>> = (0..3u8).map(|i| pattern(200_000, i)).collect();
    for j in &jobs {
        w.submit(fd, j.clone(), 0).unwrap();
    }
    assert!(w.close_timeout(fd, SLICE).unwrap_err().is_timeout());
    let st = w.fd_stats(fd).unwrap();
    assert!(st.closing, "{st:?}");
    let rj = w.submit(fd, vec![1; 10], 0).unwrap_err();
    assert!(
        matches!(rj.error, PipeError::Closing(f) if f == fd),
        "{}",
        rj.error
    );
    assert_eq!(rj.owner, vec![1; 10]);
    assert!(w.close_timeout(fd, SLICE).unwrap_err().is_timeout());
    go.send(()).unwrap();
    until_done("close", || w.close_timeout(fd, SLICE));
    assert!(w.fds().is_empty());
    assert!(
        w.close_timeout(fd, SLICE).is_ok(),
        "closing again is a no-op"
    );
    drop(wr);
    assert!(r.join().unwrap() == jobs.concat());
}

#[test]
fn config_bounds_are_invalid_arguments_not_aborts() {
    let d = WriterConfig::default;
    let cases = [
        (
            WriterConfig {
                depth: 1 << 40,
                ..d()
            },
            "invalid depth: 1099511627776",
        ),
        (WriterConfig { depth: 0, ..d() }, "invalid depth: 0"),
        (
            WriterConfig {
                depth: MAX_DEPTH + 1,
                ..d()
            },
            "invalid depth: 4097",
        ),
        (WriterConfig { chunk: 1, ..d() }, "invalid chunk: 1"),
        (
            WriterConfig {
                chunk: MAX_CHUNK + 1,
                ..d()
            },
            "invalid chunk: 1073741825",
        ),
        (
            WriterConfig {
                pipe_size: 1 << 40,
                ..d()
            },
            "invalid pipe_size: 1099511627776",
        ),
        (
            WriterConfig {
                pipe_size: 1,
                ..d()
            },
            "invalid pipe_size: 1",
        ),
    ];
    for (cfg, want) in cases {
        let e = PipeWriter::<Vec<u8>>::new(cfg).err().unwrap();
        assert!(matches!(e, PipeError::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
    }
    assert!(WriterConfig::default().validate().is_ok());
    // The extremes are accepted and work.
    let (rd, wr) = pipe();
    let r = reader(rd);
    let w: PipeWriter<Vec<u8>> = PipeWriter::new(WriterConfig {
        depth: MAX_DEPTH,
        chunk: MIN_CHUNK,
        pipe_size: MIN_PIPE_SIZE,
        splice: false,
    })
    .unwrap();
    let v = pattern(50_000, 1);
    w.submit(wr.as_raw_fd(), v.clone(), 0).unwrap();
    w.close(wr.as_raw_fd()).unwrap();
    drop(wr);
    assert!(r.join().unwrap() == v);
}
