//! `framebus ls`: the live channels of this user, read from the channels
//! themselves (no daemon): names from the kernel's list of listening sockets,
//! figures from each publisher's info socket (`framebus_channel::discover`).
//! `--watch` refreshes until Ctrl-C; `--json` prints one JSON array (per
//! refresh, one per line) for scripts.

use clap::Args;
use framebus_channel::discover::{self, ChannelInfo};
use framebus_channel::{ChannelError, Mode};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Options of `framebus ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    json: bool,
    /// Refresh every SECONDS (default 1) until Ctrl-C.
    #[arg(short = 'w', long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1")]
    watch: Option<f64>,
    /// How long to wait for each publisher's answer, in seconds.
    #[arg(long, default_value_t = 0.5)]
    timeout: f64,
}

type Row = (String, Result<ChannelInfo, ChannelError>);

/// Run the subcommand; `--watch` runs until `stop` is set.
pub fn run(args: LsArgs, stop: &crate::Stop) -> Result<(), String> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 60.0) {
        return Err(format!(
            "--timeout {}: must be in (0, 60] seconds",
            args.timeout
        ));
    }
    if let Some(w) = args.watch {
        if !(w.is_finite() && (0.05..=3600.0).contains(&w)) {
            return Err(format!("--watch {w}: must be 0.05 to 3600 seconds"));
        }
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let tty = std::io::stdout().is_terminal();
    loop {
        let rows = discover::list(timeout).map_err(|e| e.to_string())?;
        let text = if args.json {
            format!("{}\n", json(&rows))
        } else {
            table(&rows)
        };
        let mut out = std::io::stdout().lock();
        if args.watch.is_some() && tty && !args.json {
            // Home + clear, so the table refreshes in place.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing the list: {e}"))?;
        drop(out);
        match args.watch {
            Some(w) if !stop.sleep(Duration::from_secs_f64(w)) => {
                if !tty && !args.json {
                    println!();
                }
            }
            _ => return Ok(()),
        }
    }
}

fn mode(m: Mode) -> String {
    match m {
        Mode::Latest => "latest".into(),
        Mode::Lossless { depth } => format!("lossless/{depth}"),
    }
}

/// The table: one row per channel, aligned columns.
fn table(rows: &[Row]) -> String {
    let mut cells: Vec<[String; 8]> = vec![[
        "NAME", "PID", "MODE", "SUBS", "SIZE", "FORMAT", "FPS", "POOL",
    ]
    .map(String::from)];
    for r in rows {
        cells.push(match r {
            (_, Ok(i)) => {
                let (size, fmt) = match i.frame {
                    Some((w, h, f)) => (format!("{w}x{h}"), f.name().to_string()),
                    None => ("-".into(), "-".into()),
                };
                [
                    i.name.clone(),
                    i.pid.to_string(),
                    mode(i.mode),
                    i.subscribers.to_string(),
                    size,
                    fmt,
                    format!("{:.1}", i.fps),
                    crate::human_bytes(i.pool_bytes),
                ]
            }
            (name, Err(e)) => {
                let mut row: [String; 8] = Default::default();
                row[0] = name.clone();
                row[2] = format!("? ({e})");
                row
            }
        });
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| cells.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    if rows.is_empty() {
        return "no live channels\n".into();
    }
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (s, w))| {
                // Numbers right-aligned, text left-aligned.
                if matches!(c, 1 | 3 | 6 | 7) {
                    format!("{s:>w$}")
                } else {
                    format!("{s:<w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The rows as a JSON array.
fn json(rows: &[Row]) -> String {
    use crate::{json_num, json_str};
    let items: Vec<String> = rows
        .iter()
        .map(|r| match r {
            (_, Ok(i)) => {
                let (depth, m) = match i.mode {
                    Mode::Latest => (0, "latest"),
                    Mode::Lossless { depth } => (depth, "lossless"),
                };
                let (w, h, f) = match i.frame {
                    Some((w, h, f)) => (w.to_string(), h.to_string(), json_str(f.name())),
                    None => ("null".into(), "null".into(), "null".into()),
                };
                let since = i
                    .since_last_send
                    .map_or("null".into(), |d| json_num(d.as_secs_f64()));
                format!(
                    "{{\"name\": {}, \"pid\": {}, \"mode\": {}, \"depth\": {depth}, \
                     \"subscribers\": {}, \"width\": {w}, \"height\": {h}, \"format\": {f}, \
                     \"fps\": {}, \"sent\": {}, \"replaced\": {}, \"pins\": {}, \
                     \"pool_bytes\": {}, \"since_last_send_s\": {since}}}",
                    json_str(&i.name),
                    i.pid,
                    json_str(m),
                    i.subscribers,
                    json_num(i.fps),
                    i.sent,
                    i.replaced,
                    i.pins,
                    i.pool_bytes
                )
            }
            (name, Err(e)) => format!(
                "{{\"name\": {}, \"error\": {}}}",
                json_str(name),
                json_str(&e.to_string())
            ),
        })
        .collect();
    format!("[{}]", items.join(", "))
}
