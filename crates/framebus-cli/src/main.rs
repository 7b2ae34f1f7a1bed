//! The `framebus` command line: thin clap front-end over the feature crates.
use clap::{Parser, Subcommand};

mod grab;
mod record;

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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("page size: {} bytes", framebus_core::page_size());
        }
        Command::Record(args) => {
            if let Err(e) = record::run(args) {
                eprintln!("framebus record: {e}");
                std::process::exit(1);
            }
        }
        Command::Grab(args) => {
            if let Err(e) = grab::run(args) {
                eprintln!("framebus grab: {e}");
                std::process::exit(1);
            }
        }
    }
}
