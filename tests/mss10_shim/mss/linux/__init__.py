"""mss 10.2's tests/conftest.py reaches into ``mss.linux.xcb``/``xlib`` (private
backend modules) for housekeeping fixtures; framebus has no such modules, so
these stand-ins make that housekeeping a no-op."""
