"""Scale-selection modes and time-step lists, parsed once and validated.

A mode string is one of

* ``max`` -- the exact maximum activation;
* a percentile ``p`` with ``1 < p <= 100`` (``99.99`` or ``99.99%``; a ``%`` suffix
  also admits ``0 < p <= 1``);
* a fraction of the max ``f`` with ``0 < f <= 1`` (``0.5`` or ``1/3``).

A bare number in (0, 1] is a fraction; a bare number in (1, 100] is a percentile.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Sequence

from .errors import UsageError

__all__ = ["ScaleMode", "parse_mode", "parse_time_steps", "MAX_TIME_STEPS"]

MAX_TIME_STEPS = 100_000

ModeKind = Literal["max", "percentile", "fraction"]


@dataclass(frozen=True)
class ScaleMode:
    """How a layer's scale is read from its calibration statistics."""

    kind: ModeKind
    value: float = 1.0

    def __str__(self) -> str:
        if self.kind == "max":
            return "max"
        if self.kind == "percentile":
            return f"{self.value:g}%"
        return f"{self.value:g}*max"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "value": self.value, "text": str(self)}


_MODE_HELP = "use 'max', a percentile in (1, 100] such as 99.99 or 99.99%, or a fraction of the max in (0, 1] such as 0.5 or 1/3"


def parse_mode(text: str) -> ScaleMode:
    """Parse a mode string; raise ``UsageError`` with a one-line reason."""
    raw = str(text).strip()
    low = raw.lower()
    if low == "max":
        return ScaleMode("max")
    bad = UsageError(f"invalid mode {raw!r}: {_MODE_HELP}")
    if low.endswith("%"):
        number = _finite_float(low[:-1], bad)
        if not 0 < number <= 100:
            raise UsageError(f"invalid mode {raw!r}: a percentile must lie in (0, 100]")
        return ScaleMode("max") if number == 100 else ScaleMode("percentile", number)
    if "/" in low:
        num, _, den = low.partition("/")
        try:
            frac = Fraction(int(num.strip()), int(den.strip()))
        except (ValueError, ZeroDivisionError):
            raise bad from None
        value = float(frac)
        if not 0 < value <= 1:
            raise UsageError(f"invalid mode {raw!r}: a fraction of the max must lie in (0, 1]")
        return ScaleMode("max") if value == 1 else ScaleMode("fraction", value)
    number = _finite_float(low, bad)
    if number <= 0 or number > 100:
        raise UsageError(f"invalid mode {raw!r}: {_MODE_HELP}")
    if number == 1 or number == 100:
        return ScaleMode("max")
    if number < 1:
        return ScaleMode("fraction", number)
    return ScaleMode("percentile", number)


def _finite_float(text: str, error: UsageError) -> float:
    if not re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*", text):
        raise error
    value = float(text)
    if not math.isfinite(value):
        raise error
    return value


def parse_time_steps(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """Parse ``"5,20,50"`` (or ints) into a sorted, de-duplicated tuple of T >= 1."""
    if isinstance(spec, int):
        items: list[str] = [str(spec)]
    elif isinstance(spec, str):
        items = [part.strip() for part in spec.split(",")]
    else:
        items = [str(v) for v in spec]
    items = [i for i in items if i != ""]
    if not items:
        raise UsageError("invalid --T: give at least one time-step count, e.g. --T 5,20,50")
    values = []
    for item in items:
        if not re.fullmatch(r"[+-]?\d+", item):
            raise UsageError(f"invalid --T value {item!r}: time steps are whole numbers, e.g. --T 5,20,50")
        value = int(item)
        if value < 1:
            raise UsageError(f"invalid --T value {item!r}: T must be at least 1")
        if value > MAX_TIME_STEPS:
            raise UsageError(f"invalid --T value {item!r}: T is limited to {MAX_TIME_STEPS}")
        values.append(value)
    return tuple(sorted(set(values)))
