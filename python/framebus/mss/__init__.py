"""``framebus.mss``: the mss 10.x API on framebus (``from framebus import mss``).

Existing mss scripts run unchanged::

    from framebus import mss

    with mss.MSS() as sct:
        shot = sct.grab(sct.monitors[1])
        arr = np.asarray(shot)       # zero-copy view of the pool slot
        mss.tools.to_png(shot.rgb, shot.size, output="screen.png")

Captures are MIT-SHM grabs straight into framebus pool slots (on every
supported Python), read without a copy. See docs/capture.md for the few
deliberate differences (``raw`` is a read-only view, NumPy views are read-only).
"""

from __future__ import annotations

import warnings
from typing import Any

from . import exception, models, screenshot, tools
from .base import MSS
from .exception import ScreenShotError
from .screenshot import ScreenShot

#: The mss API version this package follows.
__version__ = "10.2.0"


def mss(**kwargs: Any) -> MSS:
    """Create an :class:`MSS` (deprecated in mss 10.2: use ``MSS`` directly)."""
    warnings.warn(
        "mss.mss is deprecated and will be removed in a future release; use mss.MSS instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return MSS(**kwargs)


__all__ = (
    "MSS",
    "ScreenShot",
    "ScreenShotError",
    "exception",
    "models",
    "mss",
    "screenshot",
    "tools",
)
