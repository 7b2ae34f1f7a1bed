"""``framebus.mss``: the mss 11 API on framebus (``from framebus import mss``),
keeping mss 10.2's behaviour where the two agree.

Existing mss scripts run unchanged::

    from framebus import mss

    with mss.MSS() as sct:
        shot = sct.grab(sct.primary_monitor)
        arr = np.asarray(shot)                 # zero-copy view of the pool slot (BGRA)
        rgb = shot.to_numpy()                  # framebus.convert kernel, one pass
        x = shot.to_numpy(layout="CHW", dtype="float32")   # framebus.to_tensor kernel
        mss.tools.to_png(shot.rgb, shot.size, output="screen.png")

Captures are MIT-SHM grabs straight into framebus pool slots (on every
supported Python), read without a copy. See docs/capture.md for the few
deliberate differences (``bgra`` is a read-only view of the slot, NumPy views of
it are read-only).
"""

from __future__ import annotations

import warnings
from typing import Any

from . import exception, models, screenshot, tools
from .base import MSS
from .exception import ScreenShotError
from .models import Monitor, Region
from .screenshot import ScreenShot

#: The mss API version this package follows.
__version__ = "11.0.0"


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
    "Monitor",
    "Region",
    "ScreenShot",
    "ScreenShotError",
    "exception",
    "models",
    "mss",
    "screenshot",
    "tools",
)
