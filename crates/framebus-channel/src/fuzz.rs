//! Randomised tests (proptest) of everything this crate parses from bytes a
//! peer controls: socket messages ([`Msg::decode`]), the hello and slot
//! messages' checks, descriptors ([`Desc::read`], [`frame_layout`]), control
//! blocks ([`Control::open`]), and a live channel whose control block is
//! scribbled over. Property: any input gives an error or a value inside its
//! bounds — never a panic or an out-of-bounds access. Case counts are kept
//! small (the whole file runs in a few seconds).

use crate::shm::{control_len, view, Control, Desc, DescValue, MAX_RING};
use crate::subscriber::{check_hello, check_slot_msg, frame_layout};
use crate::wire::{Msg, MAX_SLOT_TABLE, MSG_LEN};
use crate::{Mode, OnFull, Publisher, PublisherConfig, Subscriber};
use framebus_core::{PixelFormat, Slot};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Small values (which pass the first checks and reach the later ones),
/// boundary values and anything.
fn word32() -> impl Strategy<Value = u32> {
    prop_oneof![0..8u32, 0..5000u32, Just(u32::MAX), any::<u32>()]
}

fn word64() -> impl Strategy<Value = u64> {
    prop_oneof![0..8u64, 0..100_000u64, Just(u64::MAX), any::<u64>()]
}

fn desc_value() -> impl Strategy<Value = DescValue> {
    (
        (word64(), word64(), word64(), word64(), word64()),
        (word32(), word32(), word32(), word32(), 0..12u32),
    )
        .prop_map(
            |(
                (ticket, timestamp_ns, seq, sent_ns, stride),
                (index, gen, width, height, format),
            )| {
                DescValue {
                    ticket,
                    timestamp_ns,
                    seq,
                    sent_ns,
                    stride,
                    index,
                    gen,
                    width,
                    height,
                    format,
                }
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_bytes_decode_to_a_message_or_an_error(
        b in proptest::collection::vec(any::<u8>(), 0..40),
        kind in 0..16u32,
    ) {
        let mut b = b;
        if b.len() >= 4 && kind < 12 {
            b[..4].copy_from_slice(&kind.to_le_bytes()); // reach the known kinds
        }
        if let Ok(m) = Msg::decode(&b) {
            prop_assert_eq!(b.len(), MSG_LEN);
            prop_assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn a_hello_is_accepted_only_within_bounds(
        version in prop_oneof![Just(crate::wire::PROTOCOL_VERSION), word32()],
        mode in 0..4u32,
        depth in word32(),
        ring in word32(),
        first_ticket in word64(),
        max_slots in word32(),
    ) {
        let msg = Msg::Hello { version, mode, depth, ring, first_ticket, max_slots };
        if let Ok(h) = check_hello(msg) {
            prop_assert!(h.ring >= 1 && h.ring <= MAX_RING);
            prop_assert!(h.max_slots >= 1 && h.max_slots <= MAX_SLOT_TABLE);
            prop_assert!(h.first_ticket >= 1);
            if let Mode::Lossless { depth } = h.mode {
                prop_assert!(depth >= 1 && depth <= h.ring);
            }
        }
    }

    #[test]
    fn a_slot_message_is_accepted_only_within_bounds(
        index in word32(),
        gen in word32(),
        capacity in word64(),
    ) {
        if let Ok(cap) = check_slot_msg(index, gen, capacity) {
            prop_assert!(index < MAX_SLOT_TABLE && gen != 0);
            prop_assert!(cap >= 1 && cap as u64 == capacity && capacity <= 1 << 40);
        }
    }

    #[test]
    fn a_descriptor_layout_lies_inside_its_slot(
        d in desc_value(),
        cap in prop_oneof![1..64usize, 1..(1usize << 22), Just(1usize << 40)],
    ) {
        if let Ok(l) = frame_layout(&d, cap) {
            prop_assert!(l.byte_len() <= cap);
            // every row the frame's views can touch ends inside the slot
            let rows = if l.format.is_planar() { l.height / 2 * 3 } else { l.height };
            if rows > 0 {
                prop_assert!((rows - 1) * l.stride + l.row_bytes() <= cap);
            }
            prop_assert_eq!(PixelFormat::ALL[d.format as usize], l.format);
        }
    }

    #[test]
    fn a_descriptor_read_is_a_snapshot_or_nothing(
        words in proptest::collection::vec(word64(), 8),
        ticket in word64(),
    ) {
        let c = Control::create(1).unwrap();
        let (p, len) = c.as_ptr_len();
        for (k, w) in words.iter().enumerate() {
            // SAFETY: (p, len) is the live mapping of `c`; `view` bounds-checks.
            let word: &AtomicU64 = unsafe { view(p, len, 64 + 8 * k) };
            word.store(*w, Ordering::Relaxed);
        }
        if let Some(v) = c.desc(0).read(ticket) {
            prop_assert_eq!(v.ticket, ticket);
            prop_assert!(ticket != 0);
            prop_assert_eq!(v.stride, words[4]);
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn any_control_block_opens_checked_or_is_refused(
        fill in proptest::collection::vec(any::<u64>(), 0..64),
        magic in any::<bool>(),
        ring in prop_oneof![0..8u32, 0..5000u32],
        size in 1..200_000usize,
    ) {
        let slot = Slot::new(size, false).unwrap();
        let len = slot.capacity();
        for (k, w) in fill.iter().enumerate() {
            if 8 * k + 8 <= len {
                // SAFETY: the slot's live mapping; `view` bounds-checks.
                let word: &AtomicU64 = unsafe { view(slot.as_ptr(), len, 8 * k) };
                word.store(*w, Ordering::Relaxed);
            }
        }
        if magic {
            // SAFETY: as above (offset 0, len >= one page).
            let word: &AtomicU64 = unsafe { view(slot.as_ptr(), len, 0) };
            word.store(crate::shm::MAGIC, Ordering::Relaxed);
        }
        let fd = slot.fd().unwrap().try_clone_to_owned().unwrap();
        if let Ok(c) = Control::open(fd, ring) {
            prop_assert!(control_len(ring) <= len);
            for i in 0..u64::from(ring) {
                let d: &Desc = c.desc(i);
                let t = d.ticket.load(Ordering::Relaxed);
                let _ = d.read(t);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// A live channel: the publisher sends while arbitrary words are written
    /// over the subscriber's control block; each `recv` gives an error or a
    /// frame inside its slot that reads end to end, quickly.
    #[test]
    fn garbage_in_a_live_control_block_gives_errors_or_frames_in_bounds(
        lossless in any::<bool>(),
        scribbles in proptest::collection::vec(
            proptest::collection::vec((any::<u16>(), word64()), 1..6),
            1..8,
        ),
    ) {
        let name = format!("fz-{}-{}", std::process::id(), rand_tag());
        let mode = if lossless { Mode::Lossless { depth: 4 } } else { Mode::Latest };
        let p = Publisher::new(
            &name,
            PublisherConfig { mode, on_full: OnFull::Raise, ..Default::default() },
        ).unwrap();
        let mut s = Subscriber::connect(&name, Duration::from_secs(1)).unwrap();
        let (ptr, len) = s.control_bytes();
        for (k, round) in scribbles.iter().enumerate() {
            if let Ok(mut f) = p.acquire(16, 8, PixelFormat::Bgra) {
                f.data_mut().unwrap().fill(k as u8);
                let _ = p.send(&f);
            }
            for &(off, v) in round {
                let off = (usize::from(off) % (len / 8)) * 8;
                // SAFETY: the subscriber's live control mapping; `view`
                // bounds-checks; the word is only accessed atomically.
                let word: &AtomicU64 = unsafe { view(ptr, len, off) };
                word.store(v, Ordering::Relaxed);
            }
            let t = std::time::Instant::now();
            if let Ok(f) = s.recv(Some(Duration::from_millis(2))) {
                prop_assert!(f.byte_len() <= f.lease().capacity());
                // SAFETY: read-only received frame; reading it must not fault.
                let sum: u64 = unsafe { f.data() }.iter().map(|&b| u64::from(b)).sum();
                std::hint::black_box(sum);
            }
            prop_assert!(t.elapsed() < Duration::from_secs(2), "recv hung");
        }
    }
}

fn rand_tag() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
