"""``framebus.mss.exception``: the error mss raises (same class shape as mss 10.2)."""

from __future__ import annotations

from typing import Any


class ScreenShotError(Exception):
    """Error handling class (as ``mss.exception.ScreenShotError``).

    ``details`` holds X error details when the error stands for one the X
    server would report (``error_code``, ``major_code``, ``minor_code``), else
    an empty dict.
    """

    def __init__(self, message: str, /, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}
