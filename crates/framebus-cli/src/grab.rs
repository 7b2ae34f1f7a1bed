//! `framebus grab`: screenshots to PNG files, with mss's command-line options.
//!
//! `-m 0` (default) writes one file per monitor, `-m -1` all monitors in one
//! file, `-m N` monitor N; `-c top,left,width,height` a region (mss's order).
//! `-o` takes mss's templates: `{mon}`, `{top}`, `{left}`, `{width}`,
//! `{height}`, `{date}` (or `{date:%Y-%m-%d_%H-%M-%S}`, UTC). Prints the full
//! path of each file written, unless `-q`.

use clap::Args;
use framebus_capture::{BackendChoice, Grabber, Monitor, Region};
use framebus_core::FramePool;
use framebus_kernels::png;
use std::path::PathBuf;

/// Options of `framebus grab` (modelled on `python -m mss`).
#[derive(Args, Debug)]
pub struct GrabArgs {
    /// The part of the screen to capture: top,left,width,height.
    #[arg(short = 'c', long, value_name = "TOP,LEFT,WIDTH,HEIGHT")]
    coordinates: Option<String>,
    /// PNG compression level, 0 (store) to 9; 1 is fast.
    #[arg(short = 'l', long, default_value_t = png::DEFAULT_LEVEL, value_parser = clap::value_parser!(u8).range(0..=9))]
    level: u8,
    /// The monitor to grab: 0 = each monitor to its own file, -1 = all monitors together, N = monitor N.
    #[arg(short = 'm', long, default_value_t = 0, allow_negative_numbers = true)]
    monitor: i64,
    /// Output file name template ({mon}, {top}, {left}, {width}, {height}, {date}).
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// Include the mouse cursor.
    #[arg(long)]
    with_cursor: bool,
    /// Do not print the created files.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Capture backend: auto, x11, xshm, xgetimage, wayland, ext-image-copy, wlr-screencopy or portal.
    #[arg(short = 'b', long, default_value = "auto")]
    backend: String,
    /// Display: an X display (":1") or a Wayland socket ("wayland-1", a path); default $WAYLAND_DISPLAY, else $DISPLAY.
    #[arg(short = 'd', long)]
    display: Option<String>,
}

/// Run the subcommand; the error message is printed by `crate::run`.
pub fn run(args: GrabArgs) -> Result<(), String> {
    let choice: BackendChoice = args.backend.parse().map_err(|e| format!("{e}"))?;
    let mut grabber = Grabber::open(args.display.as_deref(), choice, FramePool::default())
        .map_err(|e| e.to_string())?;
    let mut jobs: Vec<(Region, String)> = Vec::new();
    if let Some(c) = &args.coordinates {
        let r = parse_coordinates(c)?;
        let template = args
            .output
            .as_deref()
            .unwrap_or("sct-{top}x{left}_{width}x{height}.png");
        jobs.push((r, fill_template(template, None, r)?));
    } else {
        let template = args.output.as_deref().unwrap_or("monitor-{mon}.png");
        let monitors = grabber.monitors().map_err(|e| e.to_string())?;
        match args.monitor {
            0 => {
                for (i, m) in monitors.iter().enumerate().skip(1) {
                    jobs.push((m.region(), fill_template(template, Some(i), m.region())?));
                }
            }
            n => {
                let idx = if n == -1 { 0 } else { n };
                let m: &Monitor = usize::try_from(idx)
                    .ok()
                    .and_then(|i| monitors.get(i))
                    .ok_or_else(|| {
                        format!(
                            "monitor {n} does not exist: {} monitors (0 = each, -1 = all together, 1..{})",
                            monitors.len(),
                            monitors.len() - 1
                        )
                    })?;
                jobs.push((
                    m.region(),
                    fill_template(template, Some(idx as usize), m.region())?,
                ));
            }
        }
    }
    for (region, name) in jobs {
        let frame = grabber
            .grab(Some(region), args.with_cursor, None)
            .map_err(|e| e.to_string())?;
        let path = PathBuf::from(&name);
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        png::write_png(&frame, &mut out, args.level, false)
            .map_err(|e| format!("cannot write {name}: {e}"))?;
        std::io::Write::flush(&mut out).map_err(|e| format!("cannot write {name}: {e}"))?;
        if !args.quiet {
            let shown = std::fs::canonicalize(&path).unwrap_or(path);
            println!("{}", shown.display());
        }
    }
    Ok(())
}

/// `top,left,width,height` (mss's order) into a region.
pub(crate) fn parse_coordinates(s: &str) -> Result<Region, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let bad = || format!("coordinates {s:?}: expected top,left,width,height (4 integers)");
    if parts.len() != 4 {
        return Err(bad());
    }
    let num = |p: &str| p.parse::<i64>().map_err(|_| bad());
    let (top, left, width, height) = (
        num(parts[0])?,
        num(parts[1])?,
        num(parts[2])?,
        num(parts[3])?,
    );
    // Empty sizes and edges past i32 are named here, before any X request.
    Region::checked(left, top, width, height).map_err(|e| format!("coordinates {s:?}: {e}"))
}

/// Expand mss's output-name keywords.
fn fill_template(t: &str, mon: Option<usize>, r: Region) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in output template {t:?}"))?
            + open;
        let key = &rest[open + 1..close];
        let (name, spec) = key.split_once(':').unwrap_or((key, ""));
        let value = match name {
            "mon" => mon
                .map(|m| m.to_string())
                .ok_or_else(|| format!("{{mon}} is not available with --coordinates in {t:?}"))?,
            "top" => r.top.to_string(),
            "left" => r.left.to_string(),
            "width" => r.width.to_string(),
            "height" => r.height.to_string(),
            "date" => format_date(
                now_utc(),
                if spec.is_empty() {
                    "%Y-%m-%d %H:%M:%S"
                } else {
                    spec
                },
            ),
            other => {
                return Err(format!(
                    "unknown keyword {{{other}}} in output template {t:?}"
                ))
            }
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// (year, month, day, hour, minute, second) in UTC now.
fn now_utc() -> (i64, u32, u32, u32, u32, u32) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

/// strftime with %Y %m %d %H %M %S %%.
fn format_date((y, mo, d, h, mi, s): (i64, u32, u32, u32, u32, u32), spec: &str) -> String {
    let mut out = String::new();
    let mut chars = spec.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&format!("{y:04}")),
            Some('m') => out.push_str(&format!("{mo:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('M') => out.push_str(&format!("{mi:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_like_mss() {
        let r = Region::new(10, 20, 300, 400);
        assert_eq!(
            fill_template("monitor-{mon}.png", Some(2), r).unwrap(),
            "monitor-2.png"
        );
        assert_eq!(
            fill_template("sct-{top}x{left}_{width}x{height}.png", None, r).unwrap(),
            "sct-20x10_300x400.png"
        );
        assert!(fill_template("{nope}", None, r)
            .unwrap_err()
            .contains("nope"));
        assert!(fill_template("{mon}", None, r).is_err());
        let d = fill_template("{date:%Y}", None, r).unwrap();
        assert!(d.len() == 4 && d.starts_with('2'), "{d}");
    }

    #[test]
    fn coordinates_are_top_left_width_height() {
        assert_eq!(
            parse_coordinates("20, 10,300,400").unwrap(),
            Region::new(10, 20, 300, 400)
        );
        assert!(parse_coordinates("1,2,3")
            .unwrap_err()
            .contains("top,left,width,height"));
        assert!(parse_coordinates("1,2,3,-4").is_err());
        let e = parse_coordinates("0,2147483000,1000,1").unwrap_err();
        assert!(
            e.contains("region 2147483000,0 1000x1 has its right"),
            "{e}"
        );
        let e = parse_coordinates("0,0,0,5").unwrap_err();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn civil_date_of_a_known_day() {
        assert_eq!(
            format_date((2026, 1, 2, 3, 4, 5), "%Y-%m-%d_%H%M%S %q"),
            "2026-01-02_030405 %q"
        );
    }
}
