"""`python -m framebus` and the wheel's `framebus` script.

Both run the command line compiled into the extension (the `framebus-cli`
crate, the same code as the `framebus` binary): `framebus --help`.
"""

from __future__ import annotations

import sys

from framebus._framebus import _cli_main


def main() -> int:
    """Run ``framebus`` with this process's arguments; return its exit status."""
    try:
        return _cli_main(["framebus", *sys.argv[1:]])
    except KeyboardInterrupt:  # a second Ctrl-C: stop without waiting
        return 130


if __name__ == "__main__":
    sys.exit(main())
