"""The scale of a value in the SNN graph, as an explicit type.

Every tensor in the converted graph carries a scale ``s``: in the rate limit the ANN
value is ``s * (SNN value)``. A :class:`Scale` says

* ``value``: the scale, finite and > 0 everywhere (checked when built);
* ``granularity``: ``"tensor"`` (one number, ``value`` is 0-d), ``"channel"`` (``value`` is
  ``[C]`` along ``axis`` of the batched tensor), or ``"element"`` (``value`` has the node's
  full shape with batch 1). It is a field, never guessed from ``value.dim()``;
* ``free``: ``None``, or a bool tensor of ``value``'s shape, True where the value is
  identically zero whatever the input (zero padding, e.g. ``F.pad`` of an option-A
  shortcut). A free position puts no constraint on the scale: comparisons skip it,
  and a rescale factor there is irrelevant. Its ``value`` is a placeholder (1).

This replaces a NaN-means-padding convention, where any NaN a bug produced would have
passed silently as padding (see the style guide's "explicit scale type"). Compare
``torch.ao.quantization``'s per-tensor / per-axis granularity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Scale", "Granularity", "ScaleError", "RTOL"]

Granularity = Literal["tensor", "channel", "element"]
RTOL = 1e-5  # relative tolerance under which two scales are equal


class ScaleError(ValueError):
    """A scale is not what an op needs (e.g. it varies inside a channel)."""


@dataclass(frozen=True, eq=False)
class Scale:
    value: Tensor
    granularity: Granularity = "tensor"
    axis: int | None = None  # channel axis of the batched tensor (1, or -1 for Linear features)
    free: Tensor | None = None

    def __post_init__(self) -> None:
        v = self.value
        if not isinstance(v, Tensor) or not v.is_floating_point():
            raise ScaleError("a scale is a floating-point tensor")
        if not bool(torch.isfinite(v).all()) or not bool((v > 0).all()):
            raise ScaleError(f"a scale must be finite and > 0 (got min {float(v.min()) if v.numel() else 'empty'})")
        if self.granularity == "tensor":
            if v.dim() != 0 or self.axis is not None or self.free is not None:
                raise ScaleError("a per-tensor scale is 0-d, with no axis and no free positions")
        elif self.granularity == "channel":
            if v.dim() != 1 or self.axis is None:
                raise ScaleError("a per-channel scale is 1-d along an axis")
        elif self.granularity == "element":
            if self.axis is not None:
                raise ScaleError("an element-wise scale has no axis")
        else:
            raise ScaleError(f"unknown granularity {self.granularity!r}")
        if self.free is not None and (self.free.dtype != torch.bool or self.free.shape != v.shape):
            raise ScaleError("free must be a bool tensor of the value's shape")

    # ----- construction -----------------------------------------------------------
    @staticmethod
    def one() -> "Scale":
        """ANN units."""
        return Scale(torch.ones(()))

    @staticmethod
    def tensor(value: float | Tensor) -> "Scale":
        return Scale(torch.as_tensor(value, dtype=torch.float32).reshape(()))

    @staticmethod
    def channel(value: Tensor, axis: int, free: Tensor | None = None) -> "Scale":
        return Scale(value.float().reshape(-1), "channel", axis, _none_if_all_false(free))

    @staticmethod
    def element(value: Tensor, free: Tensor | None = None) -> "Scale":
        value = value.float()
        free = _none_if_all_false(free)
        if free is not None:
            value = torch.where(free, torch.ones_like(value), value)  # placeholder, never read
        return Scale(value, "element", None, free)

    # ----- views --------------------------------------------------------------------
    def full(self, shape: tuple[int, ...]) -> Tensor:
        """The value broadcast to ``shape`` (a node's shape with batch 1)."""
        if self.granularity == "tensor":
            return self.value.expand(shape)
        if self.granularity == "channel":
            return self.value.view(_channel_view(shape, self.axis)).expand(shape)  # type: ignore[arg-type]
        if tuple(self.value.shape) != tuple(shape):
            raise ScaleError(f"element-wise scale of shape {tuple(self.value.shape)} on a value of shape {tuple(shape)}")
        return self.value

    def free_full(self, shape: tuple[int, ...]) -> Tensor:
        """True where the value is always zero, broadcast to ``shape``."""
        if self.free is None:
            return torch.zeros(shape, dtype=torch.bool)
        if self.granularity == "channel":
            return self.free.view(_channel_view(shape, self.axis)).expand(shape)  # type: ignore[arg-type]
        return self.free.expand(shape)

    def is_scalar(self, shape: tuple[int, ...]) -> bool:
        """One value on every constrained position."""
        if self.granularity == "tensor":
            return True
        bound = self.full(shape)[~self.free_full(shape)]
        return bound.numel() == 0 or bool(torch.allclose(bound, bound.flatten()[0].expand_as(bound), rtol=RTOL, atol=0.0))

    def scalar(self, shape: tuple[int, ...]) -> float:
        """The one value of an :meth:`is_scalar` scale (1 if every position is free)."""
        if not self.is_scalar(shape):
            raise ScaleError("the scale is not one number")
        bound = self.full(shape)[~self.free_full(shape)]
        return float(bound.flatten()[0]) if bound.numel() else 1.0

    def per_channel(self, shape: tuple[int, ...], axis: int = 1) -> "Scale":
        """The same scale as one value per channel along ``axis``; :class:`ScaleError` if it
        varies inside a channel (free positions ignored; an all-free channel stays free)."""
        if self.granularity == "tensor":
            return Scale.channel(self.value.expand(shape[axis]).clone(), axis)
        full = self.full(shape).movedim(axis, 0).reshape(shape[axis], -1)
        free = self.free_full(shape).movedim(axis, 0).reshape(shape[axis], -1)
        hi = torch.where(free, torch.full_like(full, -float("inf")), full).amax(1)
        lo = torch.where(free, torch.full_like(full, float("inf")), full).amin(1)
        empty = free.all(1)
        hi = torch.where(empty, torch.ones_like(hi), hi)
        lo = torch.where(empty, torch.ones_like(lo), lo)
        if not bool(torch.allclose(lo, hi, rtol=RTOL, atol=0.0)):
            raise ScaleError("the scale varies within a channel")
        return Scale.channel(hi, axis, empty)

    def channel_values(self, shape: tuple[int, ...], axis: int = 1) -> Tensor:
        """``per_channel(...).value``: one number per channel (1 on all-free channels)."""
        return self.per_channel(shape, axis).value

    # ----- arithmetic ------------------------------------------------------------------
    def equal(self, other: "Scale", shape: tuple[int, ...]) -> bool:
        """Equal (within :data:`RTOL`) on every position constrained in both."""
        a, b = self.full(shape), other.full(shape)
        bound = ~(self.free_full(shape) | other.free_full(shape))
        return not bool(bound.any()) or bool(torch.allclose(a[bound], b[bound], rtol=RTOL, atol=0.0))

    def ratio(self, target: "Scale", shape: tuple[int, ...]) -> "Scale":
        """The factor ``f = self / target`` that turns a value at scale ``self`` into one at
        ``target`` (``x * f``); where ``self`` is free the factor is irrelevant and free.
        ``target`` must constrain every position that ``self`` does."""
        src_free = self.free_full(shape)
        if bool((target.free_full(shape) & ~src_free).any()):
            raise ScaleError("the target scale leaves a constrained position free")
        return Scale.element(self.full(shape) / target.full(shape), src_free).simplest(shape)

    def merge(self, other: "Scale", shape: tuple[int, ...]) -> "Scale":
        """``self`` where it is constrained, else ``other``: the scale a sum of a value at
        ``self`` and one at ``other`` takes without rescaling ``self``'s operand."""
        mine = self.free_full(shape)
        value = torch.where(mine, other.full(shape), self.full(shape))
        return Scale.element(value, mine & other.free_full(shape)).simplest(shape)

    def with_free(self, free: Tensor, shape: tuple[int, ...]) -> "Scale":
        """This scale, with ``free`` (broadcast to ``shape``) marking always-zero positions."""
        return Scale.element(self.full(shape).clone(), free.expand(shape).clone()).simplest(shape)

    def simplest(self, shape: tuple[int, ...]) -> "Scale":
        """The coarsest granularity that holds the same information."""
        if self.granularity == "tensor":
            return self
        if self.free is None and self.is_scalar(shape):
            return Scale.tensor(self.scalar(shape))
        if len(shape) >= 2:
            try:
                channel = self.per_channel(shape, 1)
            except ScaleError:
                return self
            if bool(torch.equal(channel.free_full(shape), self.free_full(shape))):
                return channel
        return self

    def to_factor(self, shape: tuple[int, ...]) -> Tensor:
        """A multiplicative factor tensor broadcastable over a sample of ``shape``: 0-d when
        the scale is one number on its constrained positions, else per element (batch dim dropped)."""
        if self.is_scalar(shape):
            return torch.tensor(self.scalar(shape))
        full = self.full(shape).clone()
        return full.squeeze(0) if full.dim() > 1 and full.shape[0] == 1 else full

    def describe(self) -> str:
        free = "" if self.free is None else f", {int(self.free.sum())} free"
        return f"Scale({self.granularity}, {tuple(self.value.shape)}{free})"

    __repr__ = describe


def _channel_view(shape: tuple[int, ...], axis: int) -> list[int]:
    view = [1] * len(shape)
    view[axis] = -1
    return view


def _none_if_all_false(free: Tensor | None) -> Tensor | None:
    if free is None:
        return None
    free = free.to(torch.bool)
    return free if bool(free.any()) else None
