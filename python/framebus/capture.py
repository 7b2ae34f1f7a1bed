"""Screen capture on X11 straight into pool slots (see docs/capture.md).

``grab()`` grabs once with a shared connection; ``Grabber`` is a reusable
connection (``.grab``, ``.monitors``, ``.backend``, ``.backend_reason``);
``Capture`` runs a Rust capture thread (``.latest()``, ``.frames()``,
``.stop()``). ``region=`` accepts None (whole screen), a monitor index
(0 = all monitors), a ``Region``, an mss-style dict
(left/top/width/height) or a ``(left, top, right, bottom)`` tuple.
"""

from ._framebus import Capture, Grabber, Region, grab

__all__ = ["Capture", "Grabber", "Region", "grab"]
