"""Stand-in for mss's private Xlib binding: mss 10.2's conftest asserts ``_ERROR`` is empty."""

_ERROR: dict = {}
