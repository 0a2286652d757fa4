"""T-aware thresholds: the IF neuron's quantisation error, read from a calibration histogram.

Over T steps with constant input x >= 0, threshold theta and initial potential theta/2,
an IF neuron (reset by subtraction) emits ``k = clip(floor(x T / theta + 1/2), 0, T)``
spikes, so its rate times theta is the quantiser

    Q_T(x; theta) = clip(floor(x T / theta + 1/2), 0, T) * theta / T,

T + 1 levels on [0, theta] that clip above theta. The threshold of a layer (or channel)
minimises the expected error against the ANN's ReLU output,

    E(theta) = sum_b h_b (c_b - Q_T(c_b; theta))^2,

over the histogram ``h`` of :class:`~annsnn.observer.ActivationObserver` (bin centres
``c_b``; zeros quantise to 0 exactly and add nothing). Every histogram edge
``theta_j = (j + 1) w`` is a candidate and the *global* argmin is taken. For a
candidate, the bins of level k form one contiguous range, so E(theta_j) is
``sum_k S2 - 2 q_k S1 + q_k^2 S0`` over cumulative sums of the counts, first and second
moments: O(bins * T) per histogram, no extra pass over the data.

This is the error search of torch.ao's ``HistogramObserver`` (``_compute_quantization_error``)
with the IF quantiser in place of the integer one, and a global argmin in place of its
greedy stop. Li, Deng, Dong, Gu (ICML 2021, "A Free Lunch From ANN: Towards Efficient,
Accurate Spiking Neural Networks Calibration", arXiv:2106.06984) choose the threshold by
the same criterion with a grid search over percentiles.

Scale. ``ConversionOptions.threshold_scale`` (``--threshold-scale``) multiplies every
searched threshold: ``theta = s * argmin E``. The search assumes a constant input over the
N steps; inside a network a layer's input is itself a spike train that arrives unevenly, and
the per-step bias (:mod:`annsnn.calibration`) corrects each channel's mean afterwards, so the
finer levels of a slightly lower threshold pay more than the extra clipping costs. The
low-latency pipeline's ``s = 0.9`` was chosen on held-out *training* images (outside the
calibration set) of the shared CIFAR-10 ResNets (a sweep over 0.8..1.2 on 2,048 of them
during development); the benchmark's 1,024 held-out images confirm it. Top-1 on those, s = 1.0 -> 0.9: ResNet-20 70.2 -> 72.4 % at T = 8, 80.6 -> 82.9 % at T = 16,
85.2 -> 85.2 % at T = 32, 86.1 -> 85.4 % at T = 64; ResNet-32 65.5 -> 66.6 % at T = 8,
78.1 -> 80.7 % at T = 16 (``python benchmarks/low_latency.py --heldout 1024``, rows
``threshold+step-bias:scale=1.0``; README "Low-latency calibration").

Those figures predate the readout delay. Re-measured with the full pipeline (readout delay
"auto") on the same 1,024 held-out images, the two scales are within sampling noise of each
other: correct images, ResNet-20 / ResNet-32, s = 0.9 vs 1.0: N = 8: 786 / 780 vs 789 / 772;
N = 16: 850 / 887 vs 864 / 878; N = 32: 878 / 900 vs 882 / 905; N = 64: 877 / 900 vs
885 / 899. Summed over both nets the margins are 5, 5, 9 and 7 images of 2,048, not all
the same way, and each net moves by up to 14 images of 1,024 in either direction. No scale
is measurably better, so the default stays at 0.9 (rows ``threshold+step-bias:scale=1.0``
without ``:delay=0`` in benchmarks/results/low_latency.json; no setting was changed on them).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["if_quantize", "if_quantization_errors", "search_if_threshold", "if_thresholds"]

_GATHER_ELEMENTS = 1 << 19  # float64 values per gathered block (4 MiB; a few such temporaries are live)


def if_quantize(x: Tensor, theta: float | Tensor, T: int) -> Tensor:
    """``Q_T(x; theta) = clip(floor(x T / theta + 1/2), 0, T) * theta / T`` (the IF neuron's
    rate times theta over T steps with initial potential theta/2)."""
    return torch.clamp(torch.floor(x * T / theta + 0.5), 0, T) * theta / T


def _level_starts(bins: int, T: int, device: torch.device | str = "cpu") -> Tensor:
    """``start[j, k]``: the first bin whose centre the quantiser with threshold ``(j+1) w``
    maps to level >= k (k = 0..T+1), in exact integer arithmetic.

    Bin b (centre ``(b + 1/2) w``) lies at level >= k when
    ``(2b + 1) T + (j + 1) >= 2 k (j + 1)``, i.e. ``b >= ((2k - 1)(j + 1) - T) / (2T)``.
    """
    j1 = torch.arange(1, bins + 1, dtype=torch.int64, device=device).view(-1, 1)
    k = torch.arange(0, T + 2, dtype=torch.int64, device=device).view(1, -1)
    numerator = (2 * k - 1) * j1 - T
    start = -((-numerator) // (2 * T))  # ceil division
    start = start.clamp(0, bins)
    start[:, 0] = 0
    start[:, T + 1] = bins  # level T takes everything above (clipping)
    return start


def if_quantization_errors(histogram: Tensor, bin_width: float, T: int) -> Tensor:
    """``E(theta_j)`` for every candidate ``theta_j = (j + 1) * bin_width``.

    ``histogram``: ``[bins]`` or ``[channels, bins]`` counts of positive values;
    returns float64 errors of the same leading shape with ``bins`` candidates.
    """
    if T < 1:
        raise ValueError("T must be at least 1")
    hist = histogram.to(torch.float64)
    squeeze = hist.dim() == 1
    hist = hist.view(-1, hist.shape[-1])
    bins = hist.shape[-1]
    device = hist.device  # the search runs where the histograms are (annsnn convert --device)
    centres = (torch.arange(bins, dtype=torch.float64, device=device) + 0.5) * bin_width
    zero = torch.zeros(hist.shape[0], 1, dtype=torch.float64, device=device)
    s0 = torch.cat([zero, hist.cumsum(1)], 1)
    s1 = torch.cat([zero, (hist * centres).cumsum(1)], 1)
    s2 = torch.cat([zero, (hist * centres * centres).cumsum(1)], 1)
    # level k covers bins [start[k], start[k+1]); summing k * (moment over level k) over
    # k telescopes into T * total - sum_{k<T} cumsum[start[k+1]], so one gather per moment:
    # E = S2 - 2 (theta/T) (T S1 - sum_k s1[b_k]) + (theta/T)^2 (T^2 S0 - sum_k (2k+1) s0[b_k])
    bounds = _level_starts(bins, T, device)[:, 1 : T + 1].reshape(-1)  # [candidates * T]
    odd = (2 * torch.arange(T, dtype=torch.float64, device=device) + 1).view(1, 1, T)
    step = torch.arange(1, bins + 1, dtype=torch.float64, device=device).view(1, -1) * bin_width / T  # theta / T
    errors = torch.empty(hist.shape[0], bins, dtype=torch.float64, device=device)
    block = max(1, _GATHER_ELEMENTS // (bins * T))  # channels at a time: bounded memory (each row's sums do not depend on the block)
    for c in range(0, hist.shape[0], block):
        rows = slice(c, c + block)
        n = s0[rows].shape[0]
        index = bounds.expand(n, -1)  # gather: the same values as index_select along dim 1, 3x faster on CPU
        g1 = torch.gather(s1[rows], 1, index).view(n, bins, T).sum(-1)
        g0 = (torch.gather(s0[rows], 1, index).view(n, bins, T) * odd).sum(-1)
        total0, total1, total2 = s0[rows, -1:], s1[rows, -1:], s2[rows, -1:]
        errors[rows] = total2 - 2 * step * (T * total1 - g1) + step * step * (T * T * total0 - g0)
    errors.clamp_(min=0.0)  # round-off of the cumulative sums
    return errors[0] if squeeze else errors


def search_if_threshold(histogram: Tensor, bin_width: float | Tensor, T: int, ceiling: float | None = None) -> tuple[Tensor, Tensor]:
    """The threshold minimising :func:`if_quantization_errors` (global argmin, the smallest
    theta on ties), per row of ``histogram``; returns (thresholds, errors), float64.

    ``bin_width`` is one number, or one per row (per-channel histograms have their own
    range). Scaling a histogram's width by w scales every candidate by w and every error
    by w^2, so the errors are computed once at width 1 and rescaled per row.
    ``ceiling`` (e.g. 6 for ReLU6) bounds the candidates. An all-zero histogram (a
    channel that never fired) has error 0 everywhere; its threshold is NaN-free: the
    largest candidate, and the caller decides what to do with a silent channel.
    """
    hist = histogram.to(torch.float64)
    bins = hist.shape[-1]
    rows_hist = hist.view(-1, bins)
    widths = torch.as_tensor(bin_width, dtype=torch.float64, device=hist.device).reshape(-1)
    widths = widths.expand(rows_hist.shape[0]) if widths.numel() == 1 else widths
    if widths.numel() != rows_hist.shape[0]:
        raise ValueError("one bin width, or one per histogram row")
    rows = if_quantization_errors(rows_hist, 1.0, T) * widths.view(-1, 1) ** 2
    candidates = torch.arange(1, bins + 1, dtype=torch.float64, device=hist.device).view(1, -1) * widths.view(-1, 1)
    if ceiling is not None:
        allowed = candidates <= ceiling * (1 + 1e-12)
        allowed[:, 0] |= ~allowed.any(1)
        rows = torch.where(allowed, rows, torch.full_like(rows, float("inf")))
    silent = rows_hist.sum(1) == 0
    best = rows.argmin(1)
    best = torch.where(silent, torch.full_like(best, bins - 1), best)
    theta = candidates.gather(1, best.view(-1, 1)).view(-1)
    err = rows.gather(1, best.view(-1, 1)).view(-1)
    if histogram.dim() == 1:
        return theta[0], err[0]
    return theta, err


def if_thresholds(observer, T: int, channel_wise: bool, ceiling: float | None = None) -> Tensor:
    """Thresholds of one observed activation for T steps: a 0-d tensor, or one per channel
    (each channel's histogram at its own resolution ``channel_range / bins``); 0 marks a
    layer or channel that never fired."""
    if channel_wise:
        widths = observer.channel_range.to(torch.float64) / observer.bins
        theta, _ = search_if_threshold(observer.channel_histogram, widths, T, ceiling)
        return theta * (observer.channel_max > 0).to(torch.float64)
    width = observer.bin_width
    if width <= 0:
        return torch.tensor(0.0, dtype=torch.float64, device=observer.histogram.device)
    theta, _ = search_if_threshold(observer.histogram, width, T, ceiling)
    return theta
