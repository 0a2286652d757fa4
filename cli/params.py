"""Typed click parameters: each value is parsed once, with a one-line error."""
from __future__ import annotations

import click

from annsnn.errors import UsageError
from annsnn.modes import ScaleMode, parse_mode, parse_time_steps

__all__ = ["TIME_STEPS", "MODE", "FLOAT_LIST", "SHAPE"]


class _TimeSteps(click.ParamType):
    name = "T[,T...]"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_time_steps(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class _Mode(click.ParamType):
    name = "MODE"

    def convert(self, value, param, ctx) -> ScaleMode:
        if isinstance(value, ScaleMode):
            return value
        try:
            return parse_mode(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


class _FloatList(click.ParamType):
    name = "X[,X...]"

    def convert(self, value, param, ctx) -> list[float]:
        if isinstance(value, list):
            return value
        try:
            return [float(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)


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


TIME_STEPS = _TimeSteps()
MODE = _Mode()
FLOAT_LIST = _FloatList()
SHAPE = _Shape()
