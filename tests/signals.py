"""Signal helpers shared by the tests: a SIGALRM-driven callback (`alarm`) and
an upper bound on how long a call may run (`time_limit`)."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def alarm(handler, after):
    """Run `handler` from SIGALRM `after` seconds from now (in the main thread, at
    the next signal check); the old handler is back afterwards."""
    old = signal.signal(signal.SIGALRM, lambda *_: handler())
    signal.setitimer(signal.ITIMER_REAL, after)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Hang(Exception):
    """A call ran past its `time_limit`."""


def time_limit(seconds):
    """Raise `Hang` in the main thread if the block is still running after
    `seconds` (a hang becomes a test failure instead of a stuck run)."""

    def hang():
        raise Hang(f"call did not return within {seconds} s")

    return alarm(hang, seconds)
