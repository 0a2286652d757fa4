"""Errors that the CLI turns into one line and an exit code.

``UsageError`` (exit 2) means the user asked for something that cannot work
(bad flag, bad file, unsupported layer). ``RunFailure`` (exit 1) means a valid
request failed while running.
"""
from __future__ import annotations

__all__ = ["AnnsnnError", "UsageError", "RunFailure"]


class AnnsnnError(Exception):
    """Base class: ``str(err)`` is a complete one-line message."""

    exit_code: int = 1


class UsageError(AnnsnnError, ValueError):
    """Bad input: a file, flag, model or dataset that cannot be used (exit 2)."""

    exit_code = 2


class RunFailure(AnnsnnError, RuntimeError):
    """A valid request that failed while running (exit 1)."""

    exit_code = 1
