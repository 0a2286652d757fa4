"""Remembers the last conversion so ``annsnn evaluate`` / ``annsnn energy`` need no path.

The record is a small JSON file in ``$ANNSNN_HOME`` (default
``~/.local/state/annsnn``): ``{"last_snn": "/abs/path/model.snn.pt"}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UsageError
from .files import write_json

__all__ = ["state_dir", "remember_last_snn", "last_snn"]


def state_dir() -> Path:
    env = os.environ.get("ANNSNN_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "annsnn"


def remember_last_snn(path: str | os.PathLike) -> None:
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "last.json", {"last_snn": str(Path(path).resolve())})


def last_snn() -> Path:
    record = state_dir() / "last.json"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        path = Path(data["last_snn"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError("no SNN given and no conversion recorded yet; run 'annsnn convert MODEL' (or 'annsnn demo') first, or pass the .snn.pt path") from None
    if not path.is_file():
        raise UsageError(f"the last conversion {str(path)!r} no longer exists; pass an SNN path or convert again")
    return path
