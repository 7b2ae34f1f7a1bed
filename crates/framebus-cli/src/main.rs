//! The `framebus` command line: thin clap front-end over the feature crates.
use clap::{Parser, Subcommand};

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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("page size: {} bytes", framebus_core::page_size());
        }
    }
}
