"""Which code a generated figure comes from.

Every report in ``reports/`` and every results file in ``benchmarks/results/`` names the
*code commit*: the last commit that changed code that can change a figure (the library,
the CLI, the zoo, the packaging, and the benchmark and report scripts), with ``+dirty``
when any of those has uncommitted changes. Commits that only regenerate reports or edit
prose do not move it, so reports generated across such commits still name one commit.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["CODE_PATHS", "code_commit"]

ROOT = Path(__file__).resolve().parents[1]
CODE_PATHS = ("annsnn", "cli", "model_zoo", "pyproject.toml", "benchmarks/*.py", "reports/*.py")


def code_commit(root: Path = ROOT) -> str:
    """Short hash of the last commit touching :data:`CODE_PATHS` (``+dirty`` if they have
    uncommitted changes to tracked files); ``unknown`` outside a git checkout."""
    try:
        commit = subprocess.run(["git", "log", "-1", "--format=%h", "--", *CODE_PATHS], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")
