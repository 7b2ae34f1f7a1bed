//! The `framebus` command line: thin clap front-end over the feature crates.
use clap::{Parser, Subcommand};

mod grab;

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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("page size: {} bytes", framebus_core::page_size());
        }
        Command::Grab(args) => {
            if let Err(e) = grab::run(args) {
                eprintln!("framebus grab: {e}");
                std::process::exit(1);
            }
        }
    }
}
