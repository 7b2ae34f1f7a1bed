//! The `framebus` command line as a library: one implementation behind both
//! the `framebus` binary (`src/main.rs`) and the Python package
//! (`framebus._framebus._cli_main`, used by `python -m framebus` and the
//! wheel's `framebus` script).
//!
//! [`run`] parses the arguments with clap and runs a subcommand. It never
//! installs signal handlers and never exits the process: Ctrl-C reaches it as
//! a [`Stop`] flag set by whoever hosts it (the binary's SIGINT handler, or
//! the Python binding, which sees `KeyboardInterrupt` between 100 ms slices),
//! and long-running subcommands (`record`, `view`, `ls --watch`) poll it at
//! least every 100 ms, then finish cleanly (files closed, summary printed).

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[cfg(feature = "zenoh")]
mod bridge;
mod grab;
mod ls;
mod record;
mod view;

/// Set when the user asked to stop (Ctrl-C): long-running subcommands finish
/// their work cleanly and return.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Ask the running subcommand to stop.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself (for a signal handler to set).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }

    /// Sleep up to `d`, waking early (within 20 ms) once stopped. Returns
    /// whether it was stopped.
    pub(crate) fn sleep(&self, d: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + d;
        loop {
            if self.is_set() {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= end {
                return false;
            }
            std::thread::sleep((end - now).min(std::time::Duration::from_millis(20)));
        }
    }
}

#[derive(Parser)]
#[command(
    name = "framebus",
    version,
    about = "Move big frames without copying them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the pool's behaviour on this machine (page size, huge pages).
    Info,
    /// Screenshot monitors or a region to PNG files (options like `python -m mss`).
    Grab(grab::GrabArgs),
    /// Record the screen (monitor or region) to a video file through FFmpeg.
    Record(record::RecordArgs),
    /// List the live channels of this user: publisher pid, mode, subscribers,
    /// frame size and format, frames/s, pool bytes.
    Ls(ls::LsArgs),
    /// Show a source live in a web browser (a local page with fps, age, size
    /// and drops): `channel:NAME` or `screen:MONITOR`.
    View(view::ViewArgs),
    /// Carry frames between a local channel or the screen and a Zenoh key
    /// (other machines): --from channel:NAME|zenoh:KEY|screen:MONITOR
    /// --to zenoh:KEY|channel:NAME.
    #[cfg(feature = "zenoh")]
    Bridge(bridge::BridgeArgs),
}

/// Run the command line `args` (the first item is the program name, as in
/// `std::env::args_os()`) and return the process exit status: 0 on success,
/// 1 when the command failed (the reason is printed on stderr), 2 for bad
/// arguments (clap's usage message). `--help` and `--version` print and
/// return 0. Never panics on bad input and never exits the process.
pub fn run<I, T>(args: I, stop: &Stop) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let (name, result) = match cli.command {
        Command::Info => {
            println!("page size: {} bytes", framebus_core::page_size());
            ("info", Ok(()))
        }
        Command::Grab(args) => ("grab", grab::run(args)),
        Command::Record(args) => ("record", record::run(args, stop)),
        Command::Ls(args) => ("ls", ls::run(args, stop)),
        Command::View(args) => ("view", view::run(args, stop)),
        #[cfg(feature = "zenoh")]
        Command::Bridge(args) => ("bridge", bridge::run(args, stop)),
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("framebus {name}: {e}");
            1
        }
    }
}

/// Bytes for people: `999 B`, `12.3 kB`, `4.5 MB`, `1.2 GB`.
pub(crate) fn human_bytes(n: u64) -> String {
    match n {
        0..=9_999 => format!("{n} B"),
        10_000..=9_999_999 => format!("{:.1} kB", n as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A finite JSON number (NaN and infinities become 0).
pub(crate) fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{}", (x * 1000.0).round() / 1000.0)
    } else {
        "0".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_return_2_and_help_returns_0() {
        let stop = Stop::new();
        assert_eq!(run(["framebus", "nope"], &stop), 2);
        assert_eq!(run(["framebus", "--version"], &stop), 0);
        assert_eq!(run(["framebus", "info"], &stop), 0);
        assert_eq!(run(["framebus", "view", "bogus:x"], &stop), 1);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
        assert_eq!(json_num(f64::NAN), "0");
        assert_eq!(json_num(29.99999), "30");
    }
}
