"""Atomic output: write to a temporary file in the target folder, then rename.

A run killed mid-write leaves the previous file intact; no half-written file
appears under the final name.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import UsageError
from .outputs import probe_writable

__all__ = ["atomic_path", "write_json", "write_text", "json_dumps", "check_output_path", "load_weights_only", "check_zip_integrity"]


def check_output_path(path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse, before any work, an output that cannot be written or would overwrite an input."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {str(out)!r}: folder {str(parent)!r} does not exist")
    for source in inputs:
        if source and out.resolve() == Path(source).resolve():
            raise UsageError(f"refusing to overwrite the input file {str(source)!r}; choose another output path")
    probe_writable(parent, out)  # read-only, permission, quota: refused now, by name and reason
    return out


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_dumps(data: Any) -> str:
    """The JSON text :func:`write_json` writes (strict: NaN and infinities are refused)."""
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False, default=_default) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json_dumps(data))


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def load_weights_only(source: Any, **kwargs: Any) -> Any:
    """``torch.load(source, weights_only=True, **kwargs)``: restricted unpickling, which never
    runs code from the file. torch warns (two lines on stderr) when the file was pickled with
    another protocol than its own default; the load itself succeeds or fails alike, and a
    command's one-line message says what went wrong, so that warning is not shown."""
    import warnings

    import torch

    if isinstance(source, (str, os.PathLike)):
        check_zip_integrity(source)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
        return torch.load(source, weights_only=True, **kwargs)


def check_zip_integrity(path: str | os.PathLike) -> None:
    """Raise ``zipfile.BadZipFile`` when ``path`` is a zip archive (``torch.save``'s format,
    TorchScript, ``.pt2``) with an entry whose bytes no longer match their CRC-32: torch's
    loaders do not check it, so flipped bytes inside a weight would load as other numbers.
    A file that is not a zip archive is left to its loader."""
    import zipfile
    import zlib

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, zlib.error) as exc:  # ValueError: undecodable names
        raise zipfile.BadZipFile(f"{type(exc).__name__}: {exc}") from None
    if damaged is not None:
        raise zipfile.BadZipFile(f"{damaged} does not match its CRC-32")
