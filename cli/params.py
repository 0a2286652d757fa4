"""Typed click parameters: each value is parsed once, with a one-line error."""
from __future__ import annotations

import math
from typing import Callable

import click

from annsnn.errors import UsageError
from annsnn.modes import ScaleMode, parse_mode, parse_time_steps

__all__ = ["TIME_STEPS", "MODE", "FLOAT_LIST", "SHAPE", "READOUT_DELAY", "NonEmptyPath", "FiniteFloat"]


class _Parsed(click.ParamType):
    """A value parsed once by an annsnn parser; its UsageError becomes click's one-line error."""

    def __init__(self, name: str, parser: Callable[[str], object], result_type: type) -> None:
        self.name = name
        self.parser = parser
        self.result_type = result_type

    def convert(self, value, param, ctx):
        if isinstance(value, self.result_type):
            return value
        try:
            return self.parser(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class _FloatList(click.ParamType):
    name = "X[,X...]"

    def convert(self, value, param, ctx) -> list[float]:
        if isinstance(value, list):
            return value
        try:
            values = [float(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        if not all(math.isfinite(v) for v in values):  # nan / inf: refused here, not blamed on the model later
            self.fail(f"{value!r} is not a comma-separated list of finite numbers", param, ctx)
        return values


class _Shape(click.ParamType):
    name = "C,H,W"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            shape = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a shape such as 3,32,32", param, ctx)
        if not shape or any(v < 1 for v in shape):
            self.fail(f"{value!r} is not a shape of positive sizes", param, ctx)
        return shape


class _ReadoutDelay(click.ParamType):
    """'auto' or a number of steps >= 0."""

    name = "auto|K"

    def convert(self, value, param, ctx):
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r} is not 'auto' or a number of steps >= 0", param, ctx)


TIME_STEPS = _Parsed("T[,T...]", parse_time_steps, tuple)
MODE = _Parsed("MODE", parse_mode, ScaleMode)
FLOAT_LIST = _FloatList()
SHAPE = _Shape()
READOUT_DELAY = _ReadoutDelay()


class NonEmptyPath(click.Path):
    """A path option: ``--out ''`` is refused (it was read as no option, or as the folder '.')."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path: give a file or folder name", param, ctx)
        return super().convert(value, param, ctx)


class FiniteFloat(click.ParamType):
    """A float that is a number (nan and inf are refused), at least ``low`` when given
    (``open_low``: strictly above it)."""

    name = "float"

    def __init__(self, low: float | None = None, open_low: bool = False) -> None:
        self.low, self.open_low = low, open_low

    def convert(self, value, param, ctx) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.low is not None and (number <= self.low if self.open_low else number < self.low):
            self.fail(f"{value!r} must be {'above' if self.open_low else 'at least'} {self.low:g}", param, ctx)
        return number

