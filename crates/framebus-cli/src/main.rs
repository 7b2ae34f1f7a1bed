//! The `framebus` binary: the [`framebus_cli`] library behind a SIGINT
//! handler. The first Ctrl-C asks the running subcommand to stop cleanly
//! (`record` closes its file, `view` and `ls --watch` return); a second one
//! ends the process at once.

fn main() {
    let stop = framebus_cli::Stop::new();
    // Registered in this order, the second Ctrl-C finds the flag set and exits.
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        stop.flag(),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, stop.flag());
    std::process::exit(framebus_cli::run(std::env::args_os(), &stop));
}
