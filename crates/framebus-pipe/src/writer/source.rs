//! What a job writes: [`Region`] (rows of bytes behind a raw pointer) and the
//! [`Source`] contract of the owner that keeps them alive, with its
//! implementations for core frames, lease ranges, `Vec<u8>`, `Arc<[u8]>` and
//! boxed sources.

use crate::error::{PipeError, Result};
use std::sync::Arc;

/// Where a job's bytes are: `rows` rows of `row_bytes`, `stride` bytes apart.
/// A flat buffer is one row.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub ptr: *const u8,
    pub row_bytes: usize,
    pub stride: usize,
    pub rows: usize,
}

impl Region {
    /// A contiguous buffer of `len` bytes.
    pub fn flat(ptr: *const u8, len: usize) -> Region {
        Region {
            ptr,
            row_bytes: len,
            stride: len,
            rows: 1,
        }
    }

    /// Bytes that reach the fd (rows without padding).
    pub fn byte_len_tight(&self) -> usize {
        self.row_bytes * self.rows
    }

    /// True when rows follow each other with no gap, so one `write` covers all.
    pub fn is_contiguous(&self) -> bool {
        self.rows <= 1 || self.stride == self.row_bytes
    }
}

/// Something that owns bytes to be written and keeps them alive while it lives.
///
/// # Safety
/// Implementors promise that every row described by [`Source::region`] stays
/// mapped and readable, at the same address, for as long as the value lives
/// (it is only read through the kernel, so concurrent writers make torn data at
/// worst, never undefined behaviour). `region` must return the same value on
/// every call.
pub unsafe trait Source: Send + 'static {
    /// The bytes to write.
    fn region(&self) -> Region;
}

// SAFETY: a Frame owns a Lease, which keeps the slot's mapping alive; the rows
// lie within `byte_len() <= capacity` (checked by Frame::new).
unsafe impl Source for framebus_core::Frame {
    /// Packed formats: `height` rows of `width × bpp` bytes (padding is skipped);
    /// planar YUV: the whole `byte_len()` as one block.
    fn region(&self) -> Region {
        let l = self.layout();
        if l.format.is_planar() {
            Region::flat(self.as_ptr(), self.byte_len())
        } else {
            Region {
                ptr: self.as_ptr(),
                row_bytes: l.row_bytes(),
                stride: l.stride,
                rows: l.height,
            }
        }
    }
}

/// A byte range of a lease.
#[derive(Clone, Debug)]
pub struct LeaseSlice {
    lease: framebus_core::Lease,
    offset: usize,
    len: usize,
}

impl LeaseSlice {
    /// `len` bytes at `offset` of `lease`; fails if the range leaves the slot.
    pub fn new(lease: framebus_core::Lease, offset: usize, len: usize) -> Result<LeaseSlice> {
        match offset.checked_add(len) {
            Some(end) if end <= lease.capacity() => Ok(LeaseSlice { lease, offset, len }),
            _ => Err(PipeError::InvalidArgument {
                what: "lease range",
                value: format!("{offset}+{len}"),
                why: "extends past the end of the slot",
            }),
        }
    }
}

// SAFETY: the Lease keeps the mapping alive; offset+len ≤ capacity (checked in new).
unsafe impl Source for LeaseSlice {
    fn region(&self) -> Region {
        // SAFETY: offset ≤ capacity, so the pointer stays within (or one past) the mapping.
        Region::flat(unsafe { self.lease.as_ptr().add(self.offset) }, self.len)
    }
}

// SAFETY: a Vec's heap buffer does not move while the Vec is alive and unmodified
// (the job owns it, nobody can modify it).
unsafe impl Source for Vec<u8> {
    fn region(&self) -> Region {
        Region::flat(self.as_ptr(), self.len())
    }
}

// SAFETY: the Arc keeps the allocation alive; shared slices are immutable.
unsafe impl Source for Arc<[u8]> {
    fn region(&self) -> Region {
        Region::flat(self.as_ptr(), self.len())
    }
}

// SAFETY: forwards to the boxed source, which upholds the contract.
unsafe impl Source for Box<dyn Source> {
    fn region(&self) -> Region {
        (**self).region()
    }
}
