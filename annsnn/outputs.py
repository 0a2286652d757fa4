"""All the files one run writes, checked before the work and written together at the end.

A command that writes several outputs (an SNN and its JSON report; a JSON, a CSV and a
folder of plots) declares them first: :meth:`OutputSet.file` and :meth:`OutputSet.folder`
refuse, before anything expensive runs, a path whose folder is missing, read-only, not
writable or full (a probe file is created and removed), or that would overwrite an input.
The contents are staged as writers and :meth:`OutputSet.commit` writes them:

1. every output goes to a temporary next to its target (same filesystem);
2. only when all of them are complete are they renamed over their targets, while an
   exclusive lock (``flock``) is held on each target folder, so two runs writing the same
   pair cannot interleave: the pair on disk comes from one run;
3. if anything fails (disk full, quota, permission), every temporary is removed and every
   earlier file is left as it was; the failure is one :class:`~annsnn.errors.OutputError`
   naming the path and the reason.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import OutputError, UsageError

__all__ = ["OutputSet", "probe_writable", "output_error"]

FileWriter = Callable[[BinaryIO], None]
FolderWriter = Callable[[Path], object]  # writes files into the given (temporary) folder


def output_error(path: str | os.PathLike, exc: OSError, doing: str = "write") -> OutputError:
    """One line for an OS error on an output: the path and the reason (e.g. 'No space
    left on device', 'Read-only file system', 'Permission denied', 'Disk quota exceeded')."""
    reason = exc.strerror or os.strerror(exc.errno or errno.EIO) if exc.errno else (str(exc) or type(exc).__name__)
    return OutputError(f"cannot {doing} {str(path)!r}: {reason}")


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def probe_writable(folder: Path, target: Path) -> None:
    """Create and remove a hidden file in ``folder``: a read-only filesystem, a folder
    without write permission or a full quota is refused here, before any work."""
    try:
        fd, name = tempfile.mkstemp(prefix=".annsnn-probe-", dir=folder)
    except OSError as exc:
        raise output_error(target, exc) from None
    os.close(fd)
    os.unlink(name)


@dataclass
class _Staged:
    target: Path
    folder: bool
    writer: FileWriter | FolderWriter
    temp: Path | None = None
    written: list[Path] | None = None


class OutputSet:
    """The outputs of one run (see the module docstring). ``inputs`` are files the run
    reads: an output may not overwrite one of them."""

    def __init__(self, inputs: tuple[str | os.PathLike, ...] = ()) -> None:
        self._inputs = tuple(Path(p) for p in inputs if p)
        self._staged: list[_Staged] = []
        self._declared: dict[Path, bool] = {}

    # -- declaring (before the work) ---------------------------------------------------

    def file(self, path: str | os.PathLike) -> Path:
        """Declare an output file; refuse it now if it cannot be written."""
        target = Path(path)
        parent = target.parent if str(target.parent) else Path(".")
        if target.is_dir():
            raise UsageError(f"cannot write {str(target)!r}: it is a folder")
        if not parent.is_dir():
            raise UsageError(f"cannot write {str(target)!r}: folder {str(parent)!r} does not exist")
        for source in self._inputs:
            if target.resolve() == source.resolve():
                raise UsageError(f"refusing to overwrite the input file {str(source)!r}; choose another output path")
        if target.resolve() in {p.resolve() for p in self._declared}:
            raise UsageError(f"{str(target)!r} is named as two outputs of this run")
        probe_writable(parent, target)
        self._declared[target] = False
        return target

    def folder(self, path: str | os.PathLike) -> Path:
        """Declare an output folder (created at commit if missing); refuse it now if it
        cannot be created or written."""
        target = Path(path)
        if target.exists() and not target.is_dir():
            raise UsageError(f"cannot write into {str(target)!r}: it is a file, not a folder")
        probe_writable(_existing_ancestor(target), target)
        self._declared[target] = True
        return target

    # -- staging (after the work) ------------------------------------------------------

    def write(self, path: str | os.PathLike, writer: FileWriter) -> None:
        """Stage ``writer(handle)`` for the declared file ``path`` (binary handle)."""
        self._staged.append(_Staged(self._check_declared(path, False), False, writer))

    def text(self, path: str | os.PathLike, text: str | Callable[[], str]) -> None:
        """Stage a UTF-8 text (or a function giving it, called at commit, after the
        outputs staged before it are written to their temporaries)."""
        def writer(handle: BinaryIO) -> None:
            handle.write((text() if callable(text) else text).encode("utf-8"))

        self.write(path, writer)

    def files_in(self, path: str | os.PathLike, writer: FolderWriter) -> None:
        """Stage ``writer(folder)``, which writes files into a temporary folder; at commit
        they move into the declared folder ``path``."""
        self._staged.append(_Staged(self._check_declared(path, True), True, writer))

    def staged_sha256(self, path: str | os.PathLike) -> str:
        """SHA-256 of a file already written to its temporary during :meth:`commit`
        (for a report that records the file it describes)."""
        for item in self._staged:
            if item.target == Path(path) and item.temp is not None and not item.folder:
                digest = hashlib.sha256()
                with open(item.temp, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                return digest.hexdigest()
        raise ValueError(f"{path} is not written yet")

    def _check_declared(self, path: str | os.PathLike, folder: bool) -> Path:
        target = Path(path)
        if self._declared.get(target) is not folder:
            raise ValueError(f"{target} was not declared as an output {'folder' if folder else 'file'}")
        return target

    # -- writing -----------------------------------------------------------------------

    def commit(self) -> list[Path]:
        """Write every staged output (temporaries, then renames under the folder locks);
        return the paths written. On any failure nothing is replaced: every destination is
        checked before the first rename (a folder where a file goes, a file where a folder
        goes), and a rename that still fails puts back what the earlier ones replaced."""
        written: list[Path] = []
        try:
            for item in self._staged:
                self._write_temporary(item)
            with ExitStack() as locks:
                for folder in sorted({self._folder_of(item) for item in self._staged}):
                    locks.enter_context(_FolderLock(folder))
                moves = [move for item in self._staged for move in self._moves(item)]
                for source, destination, target in moves:
                    _check_destination(destination, target)
                done: list[tuple[Path, Path | None]] = []  # (destination, the earlier file kept aside, or None)
                try:
                    for source, destination, target in moves:
                        done.append((destination, _set_aside(destination, target)))
                        try:
                            destination.parent.mkdir(parents=True, exist_ok=True)
                            os.replace(source, destination)
                        except OSError as exc:
                            raise output_error(target, exc) from None
                except BaseException:
                    for destination, kept in reversed(done):  # undo: the earlier files go back
                        try:
                            if kept is not None:
                                os.replace(kept, destination)
                            else:
                                destination.unlink(missing_ok=True)
                        except OSError:
                            pass
                    raise
                for _, kept in done:
                    if kept is not None:
                        kept.unlink(missing_ok=True)
                written = [destination for destination, _ in done]
                for item in self._staged:
                    if not item.folder:
                        item.temp = None  # renamed: nothing to discard
        finally:
            for item in self._staged:
                self._discard(item)
        return written

    @staticmethod
    def _moves(item: _Staged) -> list[tuple[Path, Path, Path]]:
        """(temporary, destination, declared target) of each file the item writes."""
        assert item.temp is not None
        if not item.folder:
            umask = os.umask(0)
            os.umask(umask)
            try:
                os.chmod(item.temp, 0o666 & ~umask)
            except OSError as exc:
                raise output_error(item.target, exc) from None
            return [(item.temp, item.target, item.target)]
        return [(source, item.target / source.relative_to(item.temp), item.target) for source in sorted(p for p in item.temp.rglob("*") if p.is_file())]

    @staticmethod
    def _folder_of(item: _Staged) -> Path:
        if item.folder:
            return _existing_ancestor(item.target).resolve()
        return (item.target.parent if str(item.target.parent) else Path(".")).resolve()

    def _write_temporary(self, item: _Staged) -> None:
        try:
            if item.folder:
                anchor = _existing_ancestor(item.target)
                item.temp = Path(tempfile.mkdtemp(prefix=f".{item.target.resolve().name or 'annsnn'}.", suffix=".tmp", dir=anchor))
                item.writer(item.temp)  # type: ignore[arg-type]
            else:
                parent = item.target.parent if str(item.target.parent) else Path(".")
                fd, name = tempfile.mkstemp(prefix=f".{item.target.name}.", suffix=".tmp", dir=parent)
                os.close(fd)
                item.temp = Path(name)
                with open(item.temp, "wb") as handle:
                    item.writer(handle)  # type: ignore[arg-type]
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            raise output_error(item.target, exc) from None

    @staticmethod
    def _discard(item: _Staged) -> None:
        if item.temp is None:
            return
        try:
            if item.temp.is_dir():
                shutil.rmtree(item.temp, ignore_errors=True)
            else:
                item.temp.unlink(missing_ok=True)
        except OSError:
            pass
        item.temp = None


def _check_destination(destination: Path, target: Path) -> None:
    """A file can go to ``destination``: it is not a folder, and no file sits where one of
    its folders would be."""
    if destination.is_dir():
        raise OutputError(f"cannot write {str(destination)!r}: it is a folder")
    for parent in destination.parents:
        if parent == target.parent or parent.is_dir():
            break
        if parent.exists():
            raise OutputError(f"cannot write {str(destination)!r}: {str(parent)!r} is a file, not a folder")


def _set_aside(destination: Path, target: Path) -> Path | None:
    """Move an existing ``destination`` to a hidden name beside it (put back if a later
    rename fails); None if there is none."""
    if not destination.exists():
        return None
    fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent)
    os.close(fd)
    try:
        os.replace(destination, name)
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise output_error(target, exc) from None
    return Path(name)


class _FolderLock:
    """An exclusive ``flock`` on a folder, held while a run renames its outputs into it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> "_FolderLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: renames stay atomic one by one
            return self
        self.fd = os.open(self.folder, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
