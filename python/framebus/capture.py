"""Screen capture on X11 straight into pool slots (see docs/capture.md).

``grab()`` grabs once with a shared connection (kept for the process;
``close_shared_grab()`` closes it); ``Grabber`` is a reusable
connection (``.grab``, ``.monitors``, ``.backend``, ``.backend_reason``);
``Capture`` runs a Rust capture thread (``.latest()``, ``.frames()``,
``.stop()``). ``region=`` accepts None (whole screen), a monitor index
(0 = all monitors), a ``Region``, an mss-style dict
(left/top/width/height) or a ``(left, top, right, bottom)`` tuple.
"""

from ._framebus import Capture, Grabber, Region, close_shared_grab, grab

__all__ = ["Capture", "Grabber", "Region", "close_shared_grab", "grab"]
