"""Typed click parameters: each value is parsed once, with a one-line error."""
from __future__ import annotations

import math
from typing import Callable

import click

from annsnn.errors import UsageError
from annsnn.modes import ScaleMode, parse_mode, parse_time_steps

__all__ = ["TIME_STEPS", "MODE", "FLOAT_LIST", "SHAPE", "READOUT_DELAY"]


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
