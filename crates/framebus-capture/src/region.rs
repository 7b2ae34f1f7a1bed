//! `Region`: a rectangle in root-window coordinates, and its validation
//! against the current screen size. Depends on nothing but the error type.
//!
//! Two checks, both errors rather than panics:
//! * [`Region::checked`] / [`Region::from_box`] turn untrusted integers (Python
//!   ints, command-line values) into a region whose edges all fit `i32`
//!   (`left + width` and `top + height` included), or
//!   [`CaptureError::InvalidRegion`] naming the values.
//! * [`Region::check_inside`] checks a region against the screen size
//!   ([`CaptureError::BadRegion`] naming the bounds); its arithmetic is done
//!   in `i64`, so any `Region` value, even one built from its public fields,
//!   is checked without overflow.

use crate::{CaptureError, Result};

/// A rectangle of the screen: top-left corner and size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    pub left: i32,
    pub top: i32,
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{} {}x{}",
            self.left, self.top, self.width, self.height
        )
    }
}

impl Region {
    pub fn new(left: i32, top: i32, width: u32, height: u32) -> Region {
        Region {
            left,
            top,
            width,
            height,
        }
    }

    /// A region from untrusted integers: `left`/`top` must fit `i32`,
    /// `width`/`height` must be in `1..=u32::MAX`, and the right and bottom
    /// edges (`left + width`, `top + height`, exclusive) must not pass
    /// `i32::MAX`. Anything else is [`CaptureError::InvalidRegion`] naming the
    /// region. (Whether it lies on the screen is checked at grab time.)
    pub fn checked(left: i64, top: i64, width: i64, height: i64) -> Result<Region> {
        Self::build(left, top, width as i128, height as i128, || {
            format!("{left},{top} {width}x{height}")
        })
    }

    /// A region from a box `(left, top, right, bottom)`, right and bottom
    /// exclusive (mss's tuple form), with the checks of [`Region::checked`];
    /// the error names the box.
    pub fn from_box(left: i64, top: i64, right: i64, bottom: i64) -> Result<Region> {
        // i128: `right - left` cannot overflow, whatever the i64 inputs.
        Self::build(
            left,
            top,
            right as i128 - left as i128,
            bottom as i128 - top as i128,
            || format!("box ({left}, {top}, {right}, {bottom})"),
        )
    }

    fn build(
        left: i64,
        top: i64,
        width: i128,
        height: i128,
        name: impl Fn() -> String,
    ) -> Result<Region> {
        let bad = |why| CaptureError::InvalidRegion {
            region: name(),
            why,
        };
        let (Ok(l), Ok(t)) = (i32::try_from(left), i32::try_from(top)) else {
            return Err(bad(
                "has a left or top edge outside -2147483648..=2147483647",
            ));
        };
        if width < 1 || height < 1 {
            return Err(bad("is empty (width and height must be at least 1)"));
        }
        let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
            return Err(bad("is wider or taller than 4294967295 pixels"));
        };
        if l as i64 + w as i64 > i32::MAX as i64 || t as i64 + h as i64 > i32::MAX as i64 {
            return Err(bad(
                "has its right or bottom edge (left + width, top + height) past 2147483647",
            ));
        }
        Ok(Region::new(l, t, w, h))
    }

    /// Right edge (exclusive).
    pub fn right(&self) -> i64 {
        self.left as i64 + self.width as i64
    }

    /// Bottom edge (exclusive).
    pub fn bottom(&self) -> i64 {
        self.top as i64 + self.height as i64
    }

    /// Check that the region is non-empty and lies inside a `w`×`h` screen.
    pub fn check_inside(&self, screen_w: u32, screen_h: u32) -> Result<()> {
        let bad = |why| CaptureError::BadRegion {
            region: *self,
            screen_w,
            screen_h,
            why,
        };
        if self.width == 0 || self.height == 0 {
            return Err(bad("is empty (width and height must be at least 1)"));
        }
        if self.left < 0 || self.top < 0 {
            return Err(bad("starts before the screen's top-left corner"));
        }
        if self.right() > screen_w as i64 || self.bottom() > screen_h as i64 {
            return Err(bad("extends past the screen's right or bottom edge"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_inside_and_outside() {
        assert!(Region::new(0, 0, 10, 10).check_inside(10, 10).is_ok());
        assert!(Region::new(9, 9, 1, 1).check_inside(10, 10).is_ok());
        let e = Region::new(5, 0, 6, 1).check_inside(10, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "region 5,0 6x1 extends past the screen's right or bottom edge; \
             the screen is 0,0 10x10 (x in 0..10, y in 0..10)"
        );
        assert!(Region::new(-1, 0, 1, 1).check_inside(10, 10).is_err());
        assert!(Region::new(0, 0, 0, 1).check_inside(10, 10).is_err());
        assert!(Region::new(i32::MAX, 0, u32::MAX, 1)
            .check_inside(10, 10)
            .is_err());
        // The extremes of every field: an error naming the bounds, never an overflow.
        for r in [
            Region::new(i32::MAX, i32::MAX, u32::MAX, u32::MAX),
            Region::new(i32::MIN, i32::MIN, u32::MAX, u32::MAX),
            Region::new(0, 0, u32::MAX, u32::MAX),
        ] {
            let e = r.check_inside(1920, 1080).unwrap_err();
            assert!(
                e.is_bad_input() && e.to_string().contains(&r.to_string()),
                "{e}"
            );
        }
    }

    #[test]
    fn untrusted_integers_that_overflow_are_named_errors() {
        assert_eq!(
            Region::checked(1, 2, 3, 4).unwrap(),
            Region::new(1, 2, 3, 4)
        );
        assert_eq!(
            Region::checked(i32::MAX as i64 - 1, 0, 1, 1).unwrap(),
            Region::new(i32::MAX - 1, 0, 1, 1)
        );
        assert_eq!(
            Region::from_box(10, 20, 13, 24).unwrap(),
            Region::new(10, 20, 3, 4)
        );
        for (args, name) in [
            ((i32::MAX as i64, 0, 1, 1), "2147483647,0 1x1"),
            ((0, i32::MAX as i64, 1, 1), "0,2147483647 1x1"),
            ((1, 0, u32::MAX as i64, 1), "1,0 4294967295x1"),
            ((0, 0, u32::MAX as i64 + 1, 1), "0,0 4294967296x1"),
            ((i64::MAX, 0, 1, 1), "9223372036854775807,0 1x1"),
            ((0, i64::MIN, 1, 1), "0,-9223372036854775808 1x1"),
            ((0, 0, 0, 1), "0,0 0x1"),
            ((0, 0, 1, -5), "0,0 1x-5"),
            (
                (0, 0, i64::MAX, i64::MAX),
                "0,0 9223372036854775807x9223372036854775807",
            ),
        ] {
            let e = Region::checked(args.0, args.1, args.2, args.3).unwrap_err();
            assert!(matches!(e, CaptureError::InvalidRegion { .. }), "{e}");
            assert!(e.is_bad_input());
            assert!(e.to_string().starts_with(&format!("region {name} ")), "{e}");
        }
        for b in [
            (i64::MIN, 0, i64::MAX, 1), // right - left overflows i64
            (i64::MAX, 0, i64::MIN, 1),
            (0, 0, i64::MAX, 1),
            (5, 5, 5, 6),
            (2_000_000_000, 0, 2_200_000_000, 1), // right edge past i32::MAX
        ] {
            let e = Region::from_box(b.0, b.1, b.2, b.3).unwrap_err();
            let want = format!("region box ({}, {}, {}, {}) ", b.0, b.1, b.2, b.3);
            assert!(e.to_string().starts_with(&want), "{e}");
        }
    }
}
