"""Errors that the CLI turns into one line and an exit code.

``UsageError`` (exit 2) means the user asked for something that cannot work
(bad flag, bad file, unsupported layer). ``OutputError`` (exit 2) is an output that
cannot be written: a missing, read-only or unwritable folder, a full disk or quota.
``RunFailure`` (exit 1) means a valid request failed while running.
"""
from __future__ import annotations

__all__ = ["AnnsnnError", "UsageError", "OutputError", "RunFailure"]


class AnnsnnError(Exception):
    """Base class: ``str(err)`` is a complete one-line message."""

    exit_code: int = 1


class UsageError(AnnsnnError, ValueError):
    """Bad input: a file, flag, model or dataset that cannot be used (exit 2)."""

    exit_code = 2


class OutputError(UsageError):
    """An output path that cannot be written (read-only, permission, disk full, quota):
    a condition of the user's machine, named with its path and reason (exit 2)."""

    exit_code = 2


class RunFailure(AnnsnnError, RuntimeError):
    """A valid request that failed while running (exit 1)."""

    exit_code = 1
