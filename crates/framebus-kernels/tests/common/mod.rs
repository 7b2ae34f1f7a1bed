//! Helpers shared by the kernels' integration tests (each test file that
//! needs them says `mod common;`).

/// A `w`x`h` image of `bpp` bytes a pixel filled with deterministic
/// pseudo-random bytes (xorshift32 from `seed`).
pub fn image(w: usize, h: usize, bpp: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..w * h * bpp)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
