"""Calibration observers: record activation statistics, return the input unchanged.

An :class:`ActivationObserver` keeps, over the whole calibration set and in
bounded memory,

* the exact maximum, per layer and per channel (channel = dim 1);
* the number of zeros and the number of positive values;
* a histogram of the positive values with ``bins`` equal bins over ``[0, range)``;
  with ``channel_wise=True``, one more histogram per channel over the channel's OWN
  range, so a channel 1000x smaller than its layer keeps the full resolution.

Every range is a power of two: the smallest ``2**k`` strictly above the max seen so
far (``max < range <= 2 * max``), and it doubles when a larger value arrives, which
merges neighbouring bins exactly (no count is ever re-interpolated). Bin ``j`` at
range ``R`` holds ``[j R / bins, (j + 1) R / bins)``, and dividing by a power of two
is exact in floating point, so merging two bins gives exactly the bin that the value
would have gone to at the larger range. The histograms therefore depend only on the
set of values, not on how they were split into batches or in what order (a test
checks buffer equality). One bin is at most ``2 * max / bins`` wide: that is the
resolution of every percentile, per channel for per-channel percentiles.

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
_CHUNK = 1 << 17  # elements binned at a time, bounds the temporaries (about 5 x 8 bytes each: 5 MiB)


class ActivationObserver(nn.Module):
    """Record max and a histogram of positive values; ``forward`` is the identity.

    With ``channel_wise=True`` one histogram per channel is kept as well, each over
    its own power-of-two range (``channel_range``), so per-channel percentiles have
    the channel's resolution ``channel_range[c] / bins``, not the layer's.
    """

    def __init__(self, bins: int = DEFAULT_BINS, channel_wise: bool = False, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if bins < 2 or bins % 2:
            raise ValueError("bins must be an even number >= 2")
        self.bins = bins
        self.channel_wise = channel_wise
        self.register_buffer("max_val", torch.tensor(0.0, dtype=torch.float64, device=device))
        self.register_buffer("channel_max", torch.zeros(0, dtype=torch.float64, device=device))
        self.register_buffer("range", torch.tensor(0.0, dtype=torch.float64, device=device))
        self.register_buffer("histogram", torch.zeros(bins, dtype=torch.float64, device=device))
        self.register_buffer("channel_histogram", torch.zeros(0, bins, dtype=torch.float64, device=device))
        self.register_buffer("channel_range", torch.zeros(0, dtype=torch.float64, device=device))
        self.register_buffer("zeros", torch.tensor(0.0, dtype=torch.float64, device=device))
        self.register_buffer("total", torch.tensor(0.0, dtype=torch.float64, device=device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        for name in ("channel_max", "channel_histogram", "channel_range"):
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
                self.channel_range = torch.zeros(channels, dtype=torch.float64, device=cmax.device)
        self.channel_max = torch.maximum(self.channel_max, cmax)
        batch_max = float(cmax.max())
        self.max_val.fill_(max(float(self.max_val), batch_max))
        self.total += values.numel()
        self.zeros += float((values == 0).sum())
        if batch_max <= 0:
            return x
        layer_hist, layer_range = _grow(self.histogram.unsqueeze(0), self.range.view(1), cmax.max().view(1))
        self.histogram = layer_hist.squeeze(0)
        self.range.fill_(float(layer_range[0]))
        if self.channel_wise:
            self.channel_histogram, self.channel_range = _grow(self.channel_histogram, self.channel_range, cmax)
        width = float(self.range) / self.bins
        step = max(1, _CHUNK // channels)
        for start in range(0, per_channel.shape[1], step):
            block = per_channel[:, start : start + step].to(torch.float64)
            positive = block > 0
            idx = (block / width).floor_().clamp_(0, self.bins - 1).to(torch.int64)
            self.histogram += torch.bincount(idx[positive], minlength=self.bins).to(torch.float64)
            if self.channel_wise:
                widths = (self.channel_range / self.bins).clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)
                cidx = (block / widths).floor_().clamp_(0, self.bins - 1).to(torch.int64)
                offsets = torch.arange(channels, device=cidx.device).unsqueeze(1) * self.bins
                counts = torch.bincount((cidx + offsets)[positive], minlength=channels * self.bins)
                self.channel_histogram += counts.view(channels, self.bins).to(torch.float64)
        return x

    # ----- reading statistics -------------------------------------------------
    @property
    def bin_width(self) -> float:
        """Resolution of layer percentiles: ``range / bins`` (at most ``2 * max / bins``)."""
        return float(self.range) / self.bins

    def channel_bin_width(self, channel: int) -> float:
        """Resolution of channel ``channel``'s percentiles (at most ``2 * channel max / bins``)."""
        self._channel_hist(channel)
        return float(self.channel_range[channel]) / self.bins

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
        width = self.bin_width if channel is None else self.channel_bin_width(channel)
        value = (index + min(max(frac, 0.0), 1.0)) * width
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

    def fraction_above(self, threshold: float, channel: int | None = None) -> float:
        """Fraction of all recorded values (zeros included) above ``threshold``; with
        ``channel``, of that channel's values (linear within a bin)."""
        total = float(self.total) if channel is None else float(self.total) / max(1, self.channel_max.numel())
        top = float(self.max_val if channel is None else self.channel_max[channel])
        if total == 0 or threshold >= top:
            return 0.0
        hist = self.histogram if channel is None else self._channel_hist(channel)
        width = self.bin_width if channel is None else self.channel_bin_width(channel)
        position = max(threshold, 0.0) / width if width > 0 else 0.0
        index = int(position)
        above = float(hist[index + 1 :].sum()) if index + 1 < self.bins else 0.0
        if index < self.bins:
            above += float(hist[index]) * (1.0 - (position - index))
        return above / total

    def extra_repr(self) -> str:
        return f"bins={self.bins}, channel_wise={self.channel_wise}, max={float(self.max_val):.4g}"


def _power_of_two_above(values: Tensor) -> Tensor:
    """The smallest ``2**k`` strictly above each positive value (0 stays 0)."""
    _, exponent = torch.frexp(values)  # values = m * 2**exponent with 0.5 <= m < 1
    return torch.where(values > 0, torch.ldexp(torch.ones_like(values), exponent), torch.zeros_like(values))


def _grow(histograms: Tensor, ranges: Tensor, maxima: Tensor) -> tuple[Tensor, Tensor]:
    """Raise each row's range to cover ``maxima`` strictly, merging bin pairs once per doubling.

    ``histograms`` is ``[rows, bins]``; ``ranges`` and ``maxima`` are ``[rows]``. An empty
    row (range 0) takes its range directly.
    """
    target = torch.maximum(ranges, _power_of_two_above(maxima))
    ranges = torch.where(ranges == 0, target, ranges)
    bins = histograms.shape[1]
    while True:
        grow = ranges < target
        if not bool(grow.any()):
            return histograms, ranges
        rows = histograms[grow]
        merged = rows.view(rows.shape[0], bins // 2, 2).sum(2)
        histograms = histograms.clone()
        histograms[grow] = torch.cat([merged, torch.zeros_like(merged)], dim=1)
        ranges = torch.where(grow, ranges * 2, ranges)
