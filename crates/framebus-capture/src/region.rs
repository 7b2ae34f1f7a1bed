//! `Region`: a rectangle in root-window coordinates, and its validation
//! against the current screen size. Depends on nothing but the error type.

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
    }
}
