//! `framebus._framebus._cli_main(argv)`: the `framebus` command line (the
//! `framebus-cli` crate, the same code as the `framebus` binary) run from
//! Python, for `python -m framebus` and the wheel's `framebus` script.
//!
//! The command runs on its own thread while the calling thread waits in
//! [`crate::wait::SLICE`] slices with the GIL released and runs Python's
//! signal handlers between them: the first Ctrl-C (`KeyboardInterrupt`) sets
//! the command's stop flag, so `record` closes its file and `view` or
//! `ls --watch` return as they do in the binary; a second Ctrl-C raises
//! `KeyboardInterrupt` without waiting. A panic in the command is caught on
//! its thread (exit status 101) and never crosses into Python.

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use std::sync::mpsc;

/// Run the command line `argv` (`argv[0]` is the program name) and return
/// its exit status.
#[pyfunction]
fn _cli_main(py: Python<'_>, argv: Vec<String>) -> PyResult<i32> {
    let stop = framebus_cli::Stop::new();
    let (tx, rx) = mpsc::channel();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("framebus-cli".into())
        .spawn(move || {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                framebus_cli::run(argv, &flag)
            }))
            .unwrap_or(101);
            let _ = tx.send(code);
        })
        .map_err(|e| {
            crate::errors::os_error(
                e.raw_os_error(),
                format!("starting the command's thread: {e}"),
            )
        })?;
    // The first Ctrl-C asks the command to stop and keeps waiting for it; a
    // second one (or any other exception from a handler) is raised at once.
    let code = crate::wait::join_watched(py, rx, |e| {
        let first_interrupt = e.is_instance_of::<PyKeyboardInterrupt>(py) && !stop.is_set();
        stop.set();
        if first_interrupt {
            crate::wait::OnSignal::KeepWaiting
        } else {
            crate::wait::OnSignal::Raise
        }
    })?;
    match code {
        Some(code) => {
            let _ = thread.join();
            Ok(code)
        }
        None => Ok(101), // the command's thread ended without an answer
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_cli_main, m)?)
}
