"""The console entry point (``annsnn``, ``python -m annsnn``).

Loading the command line loads torch, which takes seconds; a Ctrl-C in that time is
reported like one during a command (``interrupted``, exit 130), not as a traceback. This
module imports nothing heavy itself, and the ``annsnn`` package loads its modules on first
use, so the interrupt lands inside the ``try`` below."""
from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Load the command line, then run it on ``argv`` (default ``sys.argv[1:]``)."""
    try:
        from .main import main as run
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    run(argv)
