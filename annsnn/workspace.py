"""The last conversion of each working directory, and the identity of an SNN file.

``annsnn evaluate`` / ``annsnn energy`` with no path use the last SNN converted *from the
same working directory*: a conversion (or ``annsnn demo``) run from another directory, in
another shell, does not change it. The record is one small JSON file per directory in
``$ANNSNN_HOME`` (default ``$XDG_STATE_HOME/annsnn`` or ``~/.local/state/annsnn``):
``last/<sha256 of the directory>.json`` = ``{"directory": ..., "last_snn": ...}``.

Every result names the file it came from with :class:`SnnFile`: its path and the SHA-256
of its bytes, so two files of the same name are told apart.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .files import write_json

__all__ = ["state_dir", "remember_last_snn", "last_snn", "SnnFile", "snn_file", "check_state_dir"]


def state_dir() -> Path:
    env = os.environ.get("ANNSNN_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "annsnn"


def _record(directory: str | os.PathLike | None) -> tuple[Path, Path]:
    where = Path(directory if directory is not None else os.getcwd()).resolve()
    key = hashlib.sha256(str(where).encode()).hexdigest()[:24]
    return where, state_dir() / "last" / f"{key}.json"


def check_state_dir() -> Path:
    """Refuse, before any work, a state folder (``$ANNSNN_HOME``) that cannot be one: a file
    stands at it or above it, or it cannot be created or written (a read-only home, a
    system folder). It is created here if missing: the run will write its record there."""
    folder = state_dir()
    for place in (folder, *folder.parents):
        if place.exists():
            if not place.is_dir():
                raise UsageError(f"ANNSNN_HOME: {str(place)!r} is a file, not a folder; annsnn keeps each folder's last conversion under {str(folder)!r}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".annsnn-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"ANNSNN_HOME: cannot write {str(folder)!r}, where annsnn keeps each folder's last conversion ({exc.strerror or type(exc).__name__}); "
                         "set ANNSNN_HOME to a writable folder") from None
    return folder


def remember_last_snn(path: str | os.PathLike, directory: str | os.PathLike | None = None) -> None:
    """Record ``path`` as the last conversion of ``directory`` (default: the working one)."""
    where, record = _record(directory)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"directory": str(where), "last_snn": str(Path(path).resolve())})


def last_snn(directory: str | os.PathLike | None = None) -> Path:
    """The last SNN converted from ``directory`` (default: the working one)."""
    where, record = _record(directory)
    if not record.exists():
        raise UsageError(f"no SNN given and none converted from this directory ({where}) yet; run 'annsnn convert MODEL' (or 'annsnn demo') here first, or pass the .snn.pt path")
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        path = Path(data["last_snn"]) if isinstance(data, dict) and isinstance(data.get("last_snn"), str) and data["last_snn"] else None
    except (OSError, ValueError) as exc:
        raise UsageError(f"the record of this directory's last conversion, {str(record)!r}, is damaged: it cannot be read ({type(exc).__name__}); pass an SNN path, or convert again (it is rewritten)") from None
    if path is None:
        raise UsageError(f"the record of this directory's last conversion, {str(record)!r}, is damaged (no SNN path in it); pass an SNN path, or convert again (it is rewritten)")
    if not path.exists():
        raise UsageError(f"the last conversion {str(path)!r} no longer exists; pass an SNN path or convert again")
    if not path.is_file():
        raise UsageError(f"the last conversion {str(path)!r} is not a file (the record {str(record)!r} is damaged); pass an SNN path or convert again")
    return path


@dataclass(frozen=True)
class SnnFile:
    """An SNN file as a result names it: the path and the SHA-256 of its bytes."""

    path: str
    sha256: str

    @property
    def short(self) -> str:
        """The first 12 hex digits of the SHA-256, as every output prints them."""
        return self.sha256[:12]

    def __str__(self) -> str:
        return f"{self.path} (sha256 {self.short})"

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256}


def snn_file(path: str | os.PathLike) -> SnnFile:
    """The identity of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UsageError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return SnnFile(str(path), digest.hexdigest())
