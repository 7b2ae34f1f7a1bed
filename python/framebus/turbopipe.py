"""TurboPipe-compatible API on framebus's safe background pipe writer.

Switch by changing one import::

    import framebus.turbopipe as turbopipe   # was: import turbopipe

    turbopipe.pipe(buffer, ffmpeg.stdin.fileno())
    turbopipe.sync(buffer)

The calls match turbopipe 2.x (``pipe``, ``sync``, ``done``, ``close(file)``)
and 1.x (``pipe(buffer, fileno)``, ``sync(buffer=None)``, ``close()``; a
``moderngl.Buffer`` is accepted as is), with these differences, all in the safe
direction:

* The buffer export is held until its bytes are written, so deleting, resizing
  or unmapping the object after ``pipe`` cannot make the writer read freed
  memory (turbopipe 2.1 releases the export before its thread writes).
* A write error (FFmpeg died: ``BrokenPipeError``; ``EBADF``; a full disk) is
  raised on the next ``pipe``/``sync`` for that fd, and nothing more is
  written to it; turbopipe's thread panics instead.
* ``sync()`` with no argument waits for everything; ``close(fd)`` flushes one fd
  and stops its thread (turbopipe 2.x's threads never stop); ``close()`` does so
  for every fd piped to through this module (turbopipe 1.x: "syncs and deletes").
* ``pipe(memoryview(buffer.mglo), fd)`` (TurboPipe's ``examples/ffmpeg.py``) returns
  once the view's bytes are written (by the fd's thread, zero-copy): moderngl maps a
  buffer only once, so holding that view until later would make the caller's next
  ``memoryview(buffer.mglo)`` fail ("Cannot map buffer"), and turbopipe's way —
  releasing it and reading the unmapped memory later — is the use-after-free above.
  With NBUFFER=1 that example syncs before every pipe anyway; pass ``buffer`` or
  ``buffer.mglo`` itself to overlap writes with the caller.
* Each fd's queue is bounded (backpressure), and pipes are enlarged with
  ``F_SETPIPE_SZ``. Writes are 8 KiB chunks as in turbopipe (measured in
  docs/benchmarks.md); ``TURBOPIPE_CHUNK_SIZE`` is not read, set
  ``FRAMEBUS_PIPE_CHUNK`` instead (0 = one call per frame).
"""

from __future__ import annotations

import threading
from typing import Any

from ._framebus import __version__
from ._framebus import close as _close
from ._framebus import pipe as _pipe
from ._framebus import sync as _sync

__about__ = "framebus implementation of TurboPipe's API: fast, safe data piping"
__turbopipe_api__ = "2.1"

__all__ = ["__version__", "close", "done", "pipe", "sync"]


# fds piped to through this module, for ``close()`` with no fd (turbopipe 1.x).
_fds: set[int] = set()
_fds_lock = threading.Lock()


def _exporter(data: Any) -> Any:
    """A moderngl.Buffer exports its memory through ``.mglo`` (turbopipe 1.x took
    the Buffer itself); everything else is piped as it is."""
    mglo = getattr(data, "mglo", None)
    if mglo is not None and type(data).__module__.startswith("moderngl"):
        return mglo
    return data


def _maps_once(data: Any) -> bool:
    """A memoryview over a moderngl object (``memoryview(buffer.mglo)``): moderngl maps
    a buffer once, so such a view must be let go before the caller makes the next."""
    return isinstance(data, memoryview) and type(data.obj).__module__ in ("mgl", "moderngl.mgl")


def pipe(data: Any, file: int) -> None:
    """Queue ``data`` (any buffer exporter, framebus.Frame or moderngl.Buffer) to be
    written to fd ``file``. ``pipe(buffer, fileno)`` of turbopipe 1.x is the same call."""
    data = _exporter(data)
    _pipe(data, file)
    if _maps_once(data):
        _sync(data)  # written before returning, so the caller's view can go
    with _fds_lock:
        _fds.add(file)


def sync(data: Any | None = None) -> None:
    """Wait for the queued pipes of ``data`` (or of everything when None) to finish."""
    _sync(None if data is None else _exporter(data))


def done(data: Any) -> None:
    """Signal ``data`` won't be used again. A no-op kept for compatibility: framebus
    forgets an object as soon as its last queued write is finished."""
    del data


def close(file: int | None = None) -> None:
    """Flush the queue of fd ``file`` and stop its writer thread (the fd stays open).

    With no fd (turbopipe 1.x), do so for every fd piped to through this module;
    every fd is closed even if one raises its write error, which is raised after."""
    if file is not None:
        with _fds_lock:
            _fds.discard(file)
        _close(file)
        return
    with _fds_lock:
        fds = sorted(_fds)
        _fds.clear()
    error: BaseException | None = None
    for fd in fds:
        try:
            _close(fd)
        except Exception as e:  # noqa: BLE001 - close them all, then raise the first
            error = error or e
    if error is not None:
        raise error
