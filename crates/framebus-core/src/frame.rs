//! `Frame`: a lease plus geometry and capture metadata.
//!
//! A frame is a view of the first `layout.byte_len()` bytes of its slot. Cloning
//! a frame clones the lease (no pixel copy). Frames produced by framebus
//! (captured, received) are read-only; frames a user acquires to fill are
//! writable until shared.

use crate::{Error, FrameLayout, FramePool, Lease, Result, Slot};

/// An image living in a slot.
#[derive(Clone, Debug)]
pub struct Frame {
    lease: Lease,
    layout: FrameLayout,
    timestamp_ns: u64,
    seq: u64,
    writable: bool,
}

impl Frame {
    /// Wrap a lease. Fails if the slot is smaller than the layout.
    pub fn new(lease: Lease, layout: FrameLayout) -> Result<Frame> {
        if lease.capacity() < layout.byte_len() {
            return Err(Error::BufferTooSmall {
                needed: layout.byte_len(),
                got: lease.capacity(),
                what: format!(
                    "a {}x{} {} frame with stride {}",
                    layout.width, layout.height, layout.format, layout.stride
                ),
            });
        }
        let writable = lease.slot().is_writable();
        Ok(Frame {
            lease,
            layout,
            timestamp_ns: crate::monotonic_ns(),
            seq: 0,
            writable,
        })
    }

    /// Set capture metadata (builder style).
    pub fn with_meta(mut self, timestamp_ns: u64, seq: u64) -> Frame {
        self.timestamp_ns = timestamp_ns;
        self.seq = seq;
        self
    }

    /// Mark read-only (for frames framebus produced and hands out).
    pub fn into_readonly(mut self) -> Frame {
        self.writable = false;
        self
    }

    pub fn layout(&self) -> &FrameLayout {
        &self.layout
    }
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
    pub fn into_lease(self) -> Lease {
        self.lease
    }
    pub fn width(&self) -> usize {
        self.layout.width
    }
    pub fn height(&self) -> usize {
        self.layout.height
    }
    pub fn stride(&self) -> usize {
        self.layout.stride
    }
    pub fn format(&self) -> crate::PixelFormat {
        self.layout.format
    }
    /// Capture (or acquire) time, `CLOCK_MONOTONIC` nanoseconds.
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }
    /// Sequence number given by the producer (gaps mean dropped frames).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    /// Bytes the frame covers in its slot.
    pub fn byte_len(&self) -> usize {
        self.layout.byte_len()
    }
    /// Address of the first pixel.
    pub fn as_ptr(&self) -> *mut u8 {
        self.lease.as_ptr()
    }

    /// The frame's bytes.
    ///
    /// # Safety
    /// As [`Lease::as_slice`]: nobody may write the slot while the slice lives.
    pub unsafe fn data(&self) -> &[u8] {
        // SAFETY: forwarded to the caller; byte_len ≤ capacity was checked in `new`.
        unsafe { &self.lease.as_slice()[..self.layout.byte_len()] }
    }

    /// Mutable bytes, while the frame is writable and holds the only lease.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if !self.writable {
            return None;
        }
        let n = self.layout.byte_len();
        self.lease.get_mut().map(|b| &mut b[..n])
    }

    /// Copy the pixels into a new writable frame: from `pool` when given (else the
    /// source frame's own pool) when open, else into a fresh detached slot.
    /// Padding is preserved (same stride).
    pub fn copy(&self, pool: Option<&FramePool>) -> Result<Frame> {
        let n = self.layout.byte_len();
        let own = self.lease.pool();
        let lease = match pool.or(own.as_ref()) {
            Some(p) if !p.is_closed() => p.acquire(n)?,
            _ => Lease::detached(Slot::new(n, false)?),
        };
        // SAFETY: `lease` is brand new and unique, so the destination is not
        // aliased; the source is valid for `n` bytes (checked in `new`). A
        // concurrent writer to the source can at worst produce torn pixels in
        // the copy, never an out-of-bounds access.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), lease.as_ptr(), n) };
        Ok(Frame {
            lease,
            layout: self.layout,
            timestamp_ns: self.timestamp_ns,
            seq: self.seq,
            writable: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PixelFormat;

    #[test]
    fn acquire_frame_write_and_copy() {
        let pool = FramePool::default();
        let mut f = pool
            .acquire_frame(3, 2, PixelFormat::Rgb, Some(12))
            .unwrap();
        assert_eq!(f.byte_len(), 24);
        f.data_mut().unwrap().copy_from_slice(&[5u8; 24]);
        let c = f.copy(Some(&pool)).unwrap();
        assert_ne!(c.as_ptr(), f.as_ptr());
        // SAFETY: single-threaded test, no writer.
        unsafe { assert_eq!(c.data(), &[5u8; 24]) };
        let ro = f.clone().into_readonly();
        assert!(!ro.is_writable());
        let mut f2 = f.clone();
        assert!(f2.data_mut().is_none(), "shared frame must not be writable");
    }

    #[test]
    fn frame_larger_than_slot_is_refused() {
        let lease = Lease::detached(Slot::new(100, false).unwrap());
        let layout = FrameLayout::new(4096, 4096, PixelFormat::Bgra, None).unwrap();
        let e = Frame::new(lease, layout).unwrap_err().to_string();
        assert!(e.contains("4096x4096 BGRA"), "{e}");
    }
}
