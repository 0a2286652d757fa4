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
  included, as SpikingJelly defines it on the ReLU output. It is read at rank ``q N / 100``
  of the N values (linear within a bin), where ``numpy.percentile`` and ``torch.quantile``
  interpolate at rank ``q (N - 1) / 100``: the two agree to a bin when N is large, and with
  few values per channel they can differ by up to the gap between neighbouring values.
  With a zero share z it is the positive percentile at rank ``(q/100 - z) / (1 - z)``;
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
_CHUNK = 1 << 18  # elements binned at a time, bounds the temporaries (about 3 x 8 bytes each: 6 MiB)
_INT32_MAX = 2**31 - 1  # per-channel counts are int32 (half of float64's memory) while no bin can reach this


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
        grouped = values.reshape(values.shape[0], channels, -1) if values.dim() >= 2 else values.reshape(1, 1, -1)  # [B, C, M]
        cmax = grouped.amax(dim=(0, 2)).to(torch.float64).clamp_min(0)
        if self.channel_max.numel() == 0:
            self.channel_max = torch.zeros(channels, dtype=torch.float64, device=cmax.device)
            if self.channel_wise:
                self.channel_histogram = torch.zeros(channels, self.bins, dtype=torch.int32, device=cmax.device)
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
        if not self.channel_wise:
            self.histogram += _bin_counts(grouped.reshape(grouped.shape[0], 1, -1), self.range.view(1), self.bins)[0].to(torch.float64)
            return x
        self.channel_histogram, self.channel_range = _grow(self.channel_histogram, self.channel_range, cmax)
        if self.channel_histogram.dtype == torch.int32 and float(self.total) / channels > _INT32_MAX:
            self.channel_histogram = self.channel_histogram.to(torch.int64)  # a bin could overflow int32 from here on
        counts = _bin_counts(grouped, self.channel_range, self.bins)
        self.channel_histogram += counts.to(self.channel_histogram.dtype)
        self.histogram += _coarsen(counts, self.channel_range, self.range).to(torch.float64)
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
        return self.channel_histogram[channel].to(torch.float64)

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

    def channel_fractions_above(self, thresholds: Tensor) -> Tensor:
        """:meth:`fraction_above` for every channel at once (``thresholds``: one per channel),
        float64: the same arithmetic on the same values, so each entry equals the scalar
        call's exactly (a test checks), without a Python loop over the channels."""
        channels = self.channel_max.numel()
        total = float(self.total) / max(1, channels)
        hist = self.channel_histogram
        if channels == 0 or total == 0 or hist.numel() == 0:
            return torch.zeros(channels, dtype=torch.float64)
        threshold = thresholds.to(device=hist.device, dtype=torch.float64).reshape(channels)
        width = self.channel_range / self.bins
        position = (threshold.clamp_min(0.0) / width).nan_to_num(0.0, 0.0, 0.0)  # width 0 (a channel that never fired): position 0, as the scalar call
        index = position.floor().to(torch.int64).clamp_(0, self.bins)  # position < bins below the channel max
        exact = hist.to(torch.int64)
        after = torch.cat([exact.flip(1).cumsum(1).flip(1), torch.zeros(channels, 1, dtype=torch.int64, device=hist.device)], 1)  # after[c, i] = sum_{j >= i}
        above = after.gather(1, (index + 1).clamp(max=self.bins).view(-1, 1)).view(-1).to(torch.float64)
        inside = exact.gather(1, index.clamp(max=self.bins - 1).view(-1, 1)).view(-1).to(torch.float64)
        above = torch.where(index < self.bins, above + inside * (1.0 - (position - index.to(torch.float64))), above)
        fractions = above / total
        return torch.where(threshold >= self.channel_max, torch.zeros_like(fractions), fractions).cpu()

    def extra_repr(self) -> str:
        return f"bins={self.bins}, channel_wise={self.channel_wise}, max={float(self.max_val):.4g}"


def _bin_counts(grouped: Tensor, ranges: Tensor, bins: int) -> Tensor:
    """Counts ``[C, bins]`` of the positive values of ``grouped`` (``[B, C, M]``): a value x of
    channel c goes to bin ``floor(x * bins / ranges[c])`` (clamped to ``bins - 1``), int64.

    Every range is a power of two, so ``bins / range`` is one too and the product is exact
    in float32 as in float64 (a scaling by ``2**k``, at worst rounding a value below 1
    bin to a subnormal or 0, which floors to 0 either way): the float32 bin of a value
    equals its exact bin. A range whose ``bins / range`` float32 cannot hold exactly (a
    channel below ``2**-100``, say) is binned in float64. Zeros, negatives and NaN are not
    counted. ``_CHUNK`` values at a time: bounded temporaries.
    """
    images, channels, per_image = grouped.shape
    factor = torch.where(ranges > 0, bins / ranges, torch.zeros_like(ranges))  # 0 for a channel with no positive value
    compute = torch.float64 if grouped.dtype == torch.float64 else torch.float32
    if compute == torch.float32 and not bool((factor.to(torch.float32).to(torch.float64) == factor).all()):
        compute = torch.float64
    factor = factor.to(compute).view(1, channels, 1)
    offsets = (torch.arange(channels, device=grouped.device) * bins).view(1, channels, 1)
    outside = channels * bins  # the bin of every value not counted, dropped below
    counts = torch.zeros(outside + 1, dtype=torch.int64, device=grouped.device)
    span = max(1, _CHUNK // max(1, channels * per_image))  # images per block
    width = per_image if span > 1 else max(1, _CHUNK // channels)  # values per channel per block
    for lo in range(0, images, span):
        for start in range(0, per_image, width):
            block = grouped[lo : lo + span, :, start : start + width]
            block = block if block.dtype == compute else block.to(compute)
            index = torch.mul(block, factor).floor_().clamp_(0, bins - 1).to(torch.int64).add_(offsets)
            index.masked_fill_(~(block > 0), outside)
            counts += torch.bincount(index.view(-1), minlength=outside + 1)
    return counts[:outside].view(channels, bins)


def _coarsen(counts: Tensor, ranges: Tensor, layer_range: Tensor) -> Tensor:
    """The layer histogram (``bins`` over ``[0, layer_range)``) of the values whose channel
    counts are ``counts`` (``[C, bins]``, channel c over ``[0, ranges[c])``), int64.

    A layer's range is a power of two at least its channels' (both are the smallest power
    of two above a running max), so channel c's bin j lies in the layer's bin
    ``floor(j / 2**m_c)``, ``2**m_c = layer_range / ranges[c]``: exactly the bin its values
    would take, since ``floor(floor(y) / n) = floor(y / n)`` for an integer n.
    """
    channels, bins = counts.shape
    layer = torch.zeros(bins, dtype=torch.int64, device=counts.device)
    used = ranges > 0
    if not bool(used.any()):
        return layer
    ratio = layer_range.to(torch.float64) / ranges[used]
    _, exponent = torch.frexp(ratio)  # ratio = 2**m: mantissa 0.5, exponent m + 1
    shifts = exponent - 1
    if bool((ratio < 1).any()) or not bool((torch.ldexp(torch.ones_like(ratio), shifts) == ratio).all()):
        raise ValueError("channel ranges must be powers of two no larger than the layer's")
    rows = counts[used]
    for shift in sorted(set(shifts.tolist())):
        merged = rows[shifts == shift].sum(0)
        if (1 << shift) >= bins:
            layer[0] += merged.sum()
        else:
            layer[: bins >> shift] += merged.view(bins >> shift, 1 << shift).sum(1)
    return layer


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
        merged = rows.view(rows.shape[0], bins // 2, 2).sum(2, dtype=histograms.dtype)
        histograms = histograms.clone()
        histograms[grow] = torch.cat([merged, torch.zeros_like(merged)], dim=1)
        ranges = torch.where(grow, ranges * 2, ranges)
