//! The argument layer: every number, timeout and environment value that comes
//! from Python is checked here, once, and a bad one becomes a `ValueError`
//! naming the argument and the value — never a panic, an abort or a silent
//! reinterpretation.
//!
//! * [`Int`] takes any Python int (however large) so that `2**64` is reported
//!   as "width=18446744073709551616 is out of range" instead of CPython's
//!   "Python int too large to convert to C long" that names nothing.
//! * [`timeout`]: `None` or `inf` wait forever; a negative or NaN value is an
//!   error; anything above [`MAX_TIMEOUT_S`] (about 31 years) also means
//!   forever, so that no deadline arithmetic can overflow.
//! * [`count`] / [`size`]: integers within documented bounds.
//! * [`env_count`]: a `FRAMEBUS_*` environment variable that is set must parse
//!   and be in range, or the call that reads it fails naming the variable.
//! * [`per_channel`]: `mean=` / `std=` — one number or three (R, G, B), finite.

use crate::errors::{Error, Result};
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use std::time::Duration;

/// Timeouts above this many seconds mean "forever", like `None`.
pub const MAX_TIMEOUT_S: f64 = 1e9;

/// Largest width or height of an image (pixels).
pub const MAX_DIMENSION: usize = 1 << 20;

/// A Python int of any size: the value, saturated to `i128` (only values
/// beyond ±1.7e38 are saturated, and those are out of every range anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int(pub i128);

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i128>() {
            Ok(v) => Ok(Int(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                let negative = obj.lt(0)?;
                Ok(Int(if negative { i128::MIN } else { i128::MAX }))
            }
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Display for Int {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            i128::MAX => write!(f, ">= 2**127"),
            i128::MIN => write!(f, "<= -2**127"),
            v => write!(f, "{v}"),
        }
    }
}

/// `name` as an integer in `min..=max`, or a `ValueError` naming it.
pub fn count(name: &str, v: Int, min: usize, max: usize) -> Result<usize> {
    usize::try_from(v.0)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| Error::value(format!("invalid {name}={v} (must be {min}..={max})")))
}

/// A width, height, stride or byte size: `1..=max`.
pub fn size(name: &str, v: Int, max: usize) -> Result<usize> {
    count(name, v, 1, max)
}

/// An image dimension (width or height): `1..=MAX_DIMENSION`.
pub fn dimension(name: &str, v: Int) -> Result<usize> {
    size(name, v, MAX_DIMENSION)
}

/// A frame's `width`, `height`, `format` and optional `stride` arguments as
/// a checked layout (each bad value named; the size must fit memory).
pub fn layout(
    width: Int,
    height: Int,
    format: &str,
    stride: Option<Int>,
) -> Result<framebus_core::FrameLayout> {
    Ok(framebus_core::FrameLayout::new(
        dimension("width", width)?,
        dimension("height", height)?,
        format.parse()?,
        opt_count("stride", stride, 1, isize::MAX as usize)?,
    )?)
}

/// An optional [`count`].
pub fn opt_count(name: &str, v: Option<Int>, min: usize, max: usize) -> Result<Option<usize>> {
    v.map(|v| count(name, v, min, max)).transpose()
}

/// A timeout in seconds: `None`/`inf`/above [`MAX_TIMEOUT_S`] → forever
/// (`None`); negative or NaN → `ValueError` naming `name`.
pub fn timeout(name: &str, v: Option<f64>) -> Result<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(Error::value(format!(
            "invalid {name}={t} (seconds >= 0, or None to wait forever)"
        ))),
        Some(t) if t > MAX_TIMEOUT_S => Ok(None),
        Some(t) => Ok(Some(Duration::from_secs_f64(t))),
    }
}

/// A finite float in `min..=max`, or a `ValueError` naming it.
pub fn float_in(name: &str, v: f64, min: f64, max: f64) -> Result<f64> {
    if v.is_finite() && (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(Error::value(format!(
            "invalid {name}={v} (must be {min}..={max})"
        )))
    }
}

/// The environment variable `name` as an integer in `min..=max`; `None` when it
/// is unset or empty; a `ValueError` naming the variable when it is anything else.
pub fn env_count(name: &str, min: usize, max: usize) -> Result<Option<usize>> {
    let Ok(raw) = std::env::var(name) else {
        return Ok(None);
    };
    let text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .map(Some)
        .ok_or_else(|| {
            Error::value(format!(
                "invalid environment variable {name}={raw:?} (must be an integer {min}..={max})"
            ))
        })
}

/// One of `choices`, or a `ValueError` naming `name` and listing them.
pub fn choice<'a>(name: &str, v: &str, choices: &[&'a str]) -> Result<&'a str> {
    choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
        Error::value(format!(
            "invalid {name}={v:?} (expected one of {})",
            choices
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Per-channel values (`mean=`, `std=`): one number for R, G and B, or a
/// sequence of 3; each finite, and non-zero when `nonzero` (a divisor).
/// `None` gives `default` for all three.
pub fn per_channel(
    name: &str,
    v: Option<&Bound<'_, PyAny>>,
    default: f32,
    nonzero: bool,
) -> Result<[f32; 3]> {
    let Some(v) = v else {
        return Ok([default; 3]);
    };
    let xs: Vec<f64> = match v.extract::<f64>() {
        Ok(x) => vec![x; 3],
        Err(_) => v
            .extract()
            .map_err(|_| Error::type_(format!("{name} must be a number or 3 numbers (R, G, B)")))?,
    };
    let [a, b, c] = xs[..] else {
        return Err(Error::value(format!(
            "invalid {name}={xs:?} (one number, or 3 values: R, G, B)"
        )));
    };
    let out = [a as f32, b as f32, c as f32];
    if let Some(x) = out
        .iter()
        .find(|x| !x.is_finite() || (nonzero && **x == 0.0))
    {
        return Err(Error::value(format!(
            "invalid {name}={x} (must be finite{})",
            if nonzero { " and non-zero" } else { "" }
        )));
    }
    Ok(out)
}
