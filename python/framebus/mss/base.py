"""``framebus.mss.base``: ``MSS``, mss 11's screenshot class, on a framebus
``Grabber``.

Same constructor, properties, methods, caching and errors as mss 11 on
GNU/Linux (read from its source; mss 10.2 where the two agree), with framebus doing the work: each grab is
an MIT-SHM ``ShmGetImage`` straight into a pool slot (XGetImage fallback with
the reason in ``performance_status``), and ``ScreenShot`` reads that slot
without a copy. Every framebus error is re-raised as ``ScreenShotError``.
"""

from __future__ import annotations

import threading
import warnings
import zlib
from copy import copy
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._framebus import CaptureError, FramebusError, Grabber
from .exception import ScreenShotError
from .models import Monitor, Region
from .screenshot import ScreenShot

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Callable

    from .models import Monitors

# The backends mss 10.2 and 11 accept on GNU/Linux, and what framebus does for each.
_BACKENDS = {
    "default": "auto",
    "xshmgetimage": "auto",  # MIT-SHM with automatic XGetImage fallback, as mss
    "xgetimage": "xgetimage",
    "xlib": "auto",  # mss's legacy libX11 path; framebus never loads libX11
}

# What an X server answers for a GetImage outside the screen (mss reports it in
# ScreenShotError.details): BadMatch on request 73 (GetImage).
_BAD_MATCH_DETAILS = {"error_code": 8, "major_code": 73, "minor_code": 0}


def _fields(monitor: Monitor) -> dict[str, Any]:
    """Every template field of a monitor (mss 11: unknown metadata is None)."""
    return {k: monitor[k] for k in _TEMPLATE_FIELDS}


_TEMPLATE_FIELDS = ("left", "top", "width", "height", "is_primary", "name", "unique_id", "output")


class MSS:
    """Multiple ScreenShots class (as ``mss.MSS`` 11 on GNU/Linux).

    :param backend: "default"/"xshmgetimage" (MIT-SHM, falling back to
        XGetImage), "xgetimage" or "xlib" (same as default here).
    :param compression_level: PNG compression level for ``save``/``shot``.
    :param with_cursor: include the mouse cursor (XFixes).
    :param display: X11 display name (default ``$DISPLAY``).
    :param max_displays: accepted and ignored (macOS only in mss).
    """

    def __init__(
        self,
        /,
        *,
        backend: str = "default",
        compression_level: int = 6,
        with_cursor: bool = False,
        display: bytes | str | None = None,
        max_displays: int | None = None,
    ) -> None:
        if max_displays is not None:
            warnings.warn(
                "max_displays is only available on Darwin. This will be an error in the future.",
                DeprecationWarning,
                stacklevel=2,
            )
        choice = _BACKENDS.get(backend.lower())
        if choice is None:
            msg = f"Backend {backend!r} not (yet?) implemented."
            raise ScreenShotError(msg)
        if isinstance(display, bytes):
            display = display.decode("utf-8")
        try:
            self._grabber: Grabber | None = Grabber(display or None, backend=choice)
        except (FramebusError, ValueError) as e:
            raise ScreenShotError(str(e)) from e
        self.cls_image: type[ScreenShot] = ScreenShot
        #: PNG compression level used when saving screenshots (0-9).
        self.compression_level = compression_level
        self._with_cursor = bool(with_cursor)
        self._lock = threading.Lock()
        self._monitors: Monitors | None = None
        self._closed = False

    def __enter__(self) -> MSS:  # noqa: PYI034 - no typing_extensions dependency
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the X connection. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            if self._grabber is not None:
                self._grabber.close()
            self._closed = True

    def _live(self, what: str) -> Grabber:
        if self._closed or self._grabber is None:
            msg = f"Cannot {what} while the connection is closed"
            raise ScreenShotError(msg)
        return self._grabber

    def grab(
        self, region: Monitor | Region | dict[str, Any] | tuple[int, int, int, int], /
    ) -> ScreenShot:
        """Retrieve screen pixels for a ``Monitor``, a ``Region``, a region dict or a
        ``(left, top, right, bottom)`` box.

        ``cls_image`` gets the region as given (a box becomes a dict, as in mss 10;
        mss 11 passes a ``Region`` copy).
        """
        if isinstance(region, tuple):
            region = {
                "left": region[0],
                "top": region[1],
                "width": region[2] - region[0],
                "height": region[3] - region[1],
            }
        elif isinstance(region, Region):
            region = copy(region)
        if isinstance(region, Region):
            box = {
                "left": region.left,
                "top": region.top,
                "width": region.width,
                "height": region.height,
            }
        else:
            box = {k: region[k] for k in ("left", "top", "width", "height")}
        if box["width"] <= 0 or box["height"] <= 0:
            msg = f"Region has zero or negative size: {region!r}"
            raise ScreenShotError(msg)
        with self._lock:
            grabber = self._live("take screenshot")
            try:
                frame = grabber.grab(box, cursor=self._with_cursor)
            except ValueError as e:
                raise ScreenShotError(str(e), details=dict(_BAD_MATCH_DETAILS)) from e
            except (FramebusError, CaptureError) as e:
                raise ScreenShotError(str(e)) from e
        return self.cls_image(frame, region)

    @property
    def monitors(self) -> Monitors:
        """Monitors (immutable ``Monitor`` objects), computed once: [0] = the whole
        screen, then each RandR monitor (``is_primary``, and ``output`` when the
        monitor has one)."""
        with self._lock:
            if self._monitors is None:
                grabber = self._live("identify monitors")
                try:
                    found = grabber.monitors
                except (FramebusError, CaptureError) as e:
                    raise ScreenShotError(str(e)) from e
                keys = ("left", "top", "width", "height")
                # [0] has geometry only, as mss; RandR monitors say whether they are
                # primary and name their output (mss's ``name``/``unique_id`` come from
                # EDID, which framebus does not read: None).
                monitors = [Monitor(*(found[0][k] for k in keys))]
                monitors += [
                    Monitor(*(m[k] for k in keys), is_primary=m["is_primary"], output=m["output"])
                    for m in found[1:]
                ]
                self._monitors = monitors
            return self._monitors

    @property
    def primary_monitor(self) -> Monitor:
        """The monitor flagged primary, else monitor 1."""
        monitors = self.monitors
        if len(monitors) <= 1:
            msg = "No monitor found."
            raise ScreenShotError(msg)
        return next((m for m in monitors[1:] if m.is_primary), monitors[1])

    def save(
        self,
        /,
        *,
        mon: int = 0,
        output: str = "monitor-{mon}.png",
        callback: Callable[[str], None] | None = None,
    ) -> Iterator[str]:
        """Grab and save to PNG files; yields the file names.

        ``mon``: -1 = all monitors together, 0 = one file per monitor, N = monitor N.
        ``output`` keywords: ``{mon}``, ``{top}``, ``{left}``, ``{width}``,
        ``{height}``, ``{is_primary}``, ``{name}``, ``{unique_id}``, ``{output}``
        (None when unknown, as mss 11), ``{date}``.
        """
        monitors = self.monitors
        if not monitors:
            msg = "No monitor found."
            raise ScreenShotError(msg)

        def now() -> datetime | None:
            return datetime.now(timezone.utc) if "{date" in output else None

        if mon == 0:
            for idx, monitor in enumerate(monitors[1:], 1):
                fname = output.format(mon=idx, date=now(), **_fields(monitor))
                if callable(callback):
                    callback(fname)
                self._write(self.grab(monitor), fname)
                yield fname
        else:
            mon = 0 if mon == -1 else mon
            try:
                monitor = monitors[mon]
            except IndexError as exc:
                msg = f"Monitor {mon!r} does not exist."
                raise ScreenShotError(msg) from exc
            fname = output.format(mon=mon, date=now(), **_fields(monitor))
            if callable(callback):
                callback(fname)
            self._write(self.grab(monitor), fname)
            yield fname

    def _write(self, shot: ScreenShot, fname: str) -> None:
        # mss compresses with zlib: a level it refuses fails with zlib's own error.
        zlib.compress(b"", self.compression_level)
        # Rust PNG encoder straight from the slot (no RGB copy); pixels equal mss's output.
        if shot.frame is not None:
            level = 6 if self.compression_level == -1 else self.compression_level  # zlib's -1
            shot.frame.save_png(fname, level=level)
        else:
            from .tools import to_png

            to_png(shot.rgb, shot.size, level=self.compression_level, output=fname)

    def shot(self, /, **kwargs: Any) -> str:
        """Save the first monitor (by default); same arguments as ``save``."""
        kwargs["mon"] = kwargs.get("mon", 1)
        return next(self.save(**kwargs))

    @property
    def performance_status(self) -> list[str]:
        """Notes on the capture path (why MIT-SHM is not used, if it is not)."""
        grabber = self._grabber
        if grabber is None or grabber.closed:
            return []
        reason = grabber.backend_reason
        if reason is None:
            return ["MIT-SHM is working correctly."]
        return [f"MIT-SHM is not used: {reason}"]

    @property
    def with_cursor(self) -> bool:
        """Include the mouse cursor in screenshots."""
        return self._with_cursor


# mss keeps this alias for the 10.x transition.
MSSBase = MSS
