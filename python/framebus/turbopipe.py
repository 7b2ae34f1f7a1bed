"""TurboPipe-compatible API on framebus's safe background pipe writer.

Switch by changing one import::

    import framebus.turbopipe as turbopipe   # was: import turbopipe

    turbopipe.pipe(buffer, ffmpeg.stdin.fileno())
    turbopipe.sync(buffer)

The calls match turbopipe 2.x (``pipe``, ``sync``, ``done``), with these
differences, all in the safe direction:

* The buffer export is held until its bytes are written, so deleting, resizing
  or unmapping the object after ``pipe`` cannot make the writer read freed
  memory (turbopipe 2.1 releases the export before its thread writes).
* A write error (FFmpeg died: ``BrokenPipeError``; ``EBADF``; a full disk) is
  raised on the next ``pipe``/``sync`` for that fd, and nothing more is
  written to it; turbopipe's thread panics instead.
* ``sync()`` with no argument waits for everything; ``close(fd)`` flushes one fd
  and stops its thread (turbopipe's threads never stop).
* Each fd's queue is bounded (backpressure), and pipes are enlarged with
  ``F_SETPIPE_SZ``. ``TURBOPIPE_CHUNK_SIZE`` is not read: framebus writes each
  frame in one call (see docs/pipe.md for the measurements); set
  ``FRAMEBUS_PIPE_CHUNK`` to force a chunk size.
"""

from __future__ import annotations

from typing import Any

from ._framebus import __version__
from ._framebus import close as _close
from ._framebus import pipe as _pipe
from ._framebus import sync as _sync

__about__ = "framebus implementation of TurboPipe's API: fast, safe data piping"
__turbopipe_api__ = "2.1"

__all__ = ["__version__", "close", "done", "pipe", "sync"]


def pipe(data: Any, file: int) -> None:
    """Queue ``data`` (any buffer exporter or framebus.Frame) to be written to fd ``file``."""
    _pipe(data, file)


def sync(data: Any | None = None) -> None:
    """Wait for the queued pipes of ``data`` (or of everything when None) to finish."""
    _sync(data)


def done(data: Any) -> None:
    """Signal ``data`` won't be used again. A no-op kept for compatibility: framebus
    forgets an object as soon as its last queued write is finished."""
    del data


def close(file: int) -> None:
    """Flush the queue of fd ``file`` and stop its writer thread (the fd stays open)."""
    _close(file)
