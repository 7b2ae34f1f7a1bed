"""Import shim: ``import mss`` is ``framebus.mss`` (for running mss 10.2's own tests).

Only tests/test_mss10_suite.py puts this folder on ``PYTHONPATH``.
"""

import sys

import framebus.mss as _fbmss
from framebus.mss import *  # noqa: F403
from framebus.mss import __version__, base, exception, models, screenshot, tools  # noqa: F401

for _name in ("base", "exception", "models", "screenshot", "tools"):
    sys.modules[f"{__name__}.{_name}"] = getattr(_fbmss, _name)
