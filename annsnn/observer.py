"""Calibration observers: record activation statistics, return the input unchanged.

An :class:`ActivationObserver` keeps, over the whole calibration set and in
bounded memory,

* the exact maximum, per layer and per channel (channel = dim 1);
* the number of zeros and the number of positive values;
* a histogram of the positive values with ``bins`` equal bins over ``[0, range)``.

The range starts at the first batch's maximum and doubles when a larger value
arrives; doubling merges neighbouring bins exactly, so no count is ever
re-interpolated. Hence ``max <= range < 2 * max`` and one bin is at most
``2 * max / bins`` wide: that is the resolution of every percentile.

Zeros (ReLU's inactive outputs) are counted apart from the histogram, so a
percentile can be read over either population without another pass:

* ``of="all"`` (default): the q-th percentile of every recorded value, zeros
  included: what ``numpy.percentile`` or ``torch.quantile`` of the ReLU output gives
  (SpikingJelly's definition too). With a zero share z it is the positive
  percentile at rank ``(q/100 - z) / (1 - z)``;
* ``of="positive"``: the q-th percentile of the positive values only (as in
  Rueckauer et al. (2017)'s snntoolbox). Never lower than ``of="all"``.

``fraction_above(s)`` counts over all values, zeros included.

Computing a scale is a separate call (:meth:`scale`), so one calibration pass
serves every mode.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .errors import UsageError
from .modes import ScaleMode

__all__ = ["ActivationObserver", "DEFAULT_BINS", "PercentileOf"]

PercentileOf = Literal["positive", "all"]

DEFAULT_BINS = 2048
_CHUNK = 1 << 22  # elements binned at a time, bounds the temporary index tensor


class ActivationObserver(nn.Module):
    """Record max and a histogram of positive values; ``forward`` is the identity.

    With ``channel_wise=True`` one histogram per channel is kept as well, so
    per-channel percentiles are available. Every channel shares the layer's
    range, so the resolution is the layer's.
    """

    def __init__(self, bins: int = DEFAULT_BINS, channel_wise: bool = False) -> None:
        super().__init__()
        if bins < 2 or bins % 2:
            raise ValueError("bins must be an even number >= 2")
        self.bins = bins
        self.channel_wise = channel_wise
        self.register_buffer("max_val", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("channel_max", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("range", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("histogram", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("channel_histogram", torch.zeros(0, bins, dtype=torch.float64))
        self.register_buffer("zeros", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("total", torch.tensor(0.0, dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("channel_max", "channel_histogram"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.numel() == 0:
            return x
        values = x.detach()
        channels = values.shape[1] if values.dim() >= 2 else 1
        per_channel = values.transpose(0, 1).reshape(channels, -1) if values.dim() >= 2 else values.reshape(1, -1)
        cmax = per_channel.amax(dim=1).to(torch.float64).clamp_min(0)
        if self.channel_max.numel() == 0:
            self.channel_max = torch.zeros(channels, dtype=torch.float64, device=cmax.device)
            if self.channel_wise:
                self.channel_histogram = torch.zeros(channels, self.bins, dtype=torch.float64, device=cmax.device)
        self.channel_max = torch.maximum(self.channel_max, cmax)
        batch_max = float(cmax.max())
        self.max_val.fill_(max(float(self.max_val), batch_max))
        self.total += values.numel()
        self.zeros += float((values == 0).sum())
        if batch_max <= 0:
            return x
        if float(self.range) == 0.0:
            self.range.fill_(batch_max)
        while batch_max > float(self.range):
            self._double_range()
        width = float(self.range) / self.bins
        flat = per_channel
        for start in range(0, flat.shape[1], max(1, _CHUNK // channels)):
            block = flat[:, start : start + max(1, _CHUNK // channels)]
            positive = block > 0
            idx = (block / width).floor().clamp_(0, self.bins - 1).to(torch.int64)
            if self.channel_wise:
                offsets = torch.arange(channels, device=idx.device).unsqueeze(1) * self.bins
                counts = torch.bincount((idx + offsets)[positive], minlength=channels * self.bins)
                counts = counts.view(channels, self.bins).to(torch.float64)
                self.channel_histogram += counts
                self.histogram += counts.sum(0)
            else:
                self.histogram += torch.bincount(idx[positive], minlength=self.bins).to(torch.float64)
        return x

    def _double_range(self) -> None:
        half = self.bins // 2
        merged = self.histogram.view(half, 2).sum(1)
        self.histogram = torch.cat([merged, torch.zeros_like(merged)])
        if self.channel_wise and self.channel_histogram.numel():
            cm = self.channel_histogram.view(-1, half, 2).sum(2)
            self.channel_histogram = torch.cat([cm, torch.zeros_like(cm)], dim=1)
        self.range *= 2

    # ----- reading statistics -------------------------------------------------
    @property
    def bin_width(self) -> float:
        """Resolution of percentiles: ``range / bins`` (at most ``2 * max / bins``)."""
        return float(self.range) / self.bins

    def percentile(self, q: float, channel: int | None = None, of: PercentileOf = "all") -> float:
        """The q-th percentile (0 < q <= 100) of all values, zeros included (``of="all"``), or
        of the positive values only (``of="positive"``); linear within a bin."""
        if of not in ("positive", "all"):
            raise ValueError(f"percentile of {of!r}: use 'positive' or 'all'")
        hist = self.histogram if channel is None else self._channel_hist(channel)
        top = float(self.max_val if channel is None else self.channel_max[channel])
        positives = float(hist.sum())
        if positives == 0:
            return 0.0
        target = q / 100.0 * positives
        if of == "all":
            total = float(self.total) if channel is None else float(self.total) / self.channel_max.numel()
            target = q / 100.0 * total - (total - positives)  # rank among the positives
            if target <= 0:
                return 0.0
        cumulative = torch.cumsum(hist, 0)
        index = int(torch.searchsorted(cumulative, torch.tensor(target, dtype=torch.float64)).clamp(max=self.bins - 1))
        before = float(cumulative[index - 1]) if index > 0 else 0.0
        inside = float(hist[index])
        frac = 0.0 if inside == 0 else (target - before) / inside
        value = (index + min(max(frac, 0.0), 1.0)) * self.bin_width
        return min(value, top)

    def _channel_hist(self, channel: int) -> Tensor:
        if not self.channel_wise:
            raise UsageError("per-channel percentiles need calibration with --channel-wise")
        return self.channel_histogram[channel]

    def scale(self, mode: ScaleMode, channel_wise: bool = False, percentile_of: PercentileOf = "all") -> Tensor:
        """The scale under ``mode``: a 0-d tensor, or one value per channel."""
        if not channel_wise:
            return torch.tensor(self._scale_one(mode, None, percentile_of), dtype=torch.float64)
        channels = self.channel_max.numel()
        return torch.tensor([self._scale_one(mode, c, percentile_of) for c in range(channels)], dtype=torch.float64)

    def _scale_one(self, mode: ScaleMode, channel: int | None, percentile_of: PercentileOf) -> float:
        top = float(self.max_val if channel is None else self.channel_max[channel])
        if mode.kind == "max":
            return top
        if mode.kind == "fraction":
            return top * mode.value
        return self.percentile(mode.value, channel, percentile_of)

    def fraction_above(self, threshold: float) -> float:
        """Fraction of all recorded values (zeros included) above ``threshold``."""
        total = float(self.total)
        if total == 0:
            return 0.0
        if threshold >= float(self.max_val):
            return 0.0
        position = threshold / self.bin_width if self.bin_width > 0 else 0.0
        index = int(position)
        above = float(self.histogram[index + 1 :].sum()) if index + 1 < self.bins else 0.0
        if index < self.bins:
            above += float(self.histogram[index]) * (1.0 - (position - index))
        return above / total

    def extra_repr(self) -> str:
        return f"bins={self.bins}, channel_wise={self.channel_wise}, max={float(self.max_val):.4g}"
