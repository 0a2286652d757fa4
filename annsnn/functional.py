"""Pure functions behind the spiking modules (state in, state out).

Mirrors norse's ``functional``/``module`` split: the modules in
:mod:`annsnn.layers` own the state and call these.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from spikingjelly.activation_based.functional import if_multi_step

__all__ = ["if_soft_reset", "if_soft_reset_reference", "count_max_pool2d", "bernoulli_encode"]


def if_soft_reset(x_seq: Tensor, v: Tensor, max_spikes: int = 1, *, overwrite: bool = False) -> tuple[Tensor, Tensor]:
    """Integrate-and-fire with threshold 1 and reset by subtraction over ``x_seq[T, ...]``.

    ``v[t] = v[t-1] + x[t]``; ``s[t] = 1[v[t] >= 1]``; ``v[t] = v[t] - s[t]``.
    The same arithmetic as spikingjelly 2.0's ``if_multi_step(x, v, 1.0, None)``
    (tests check bit-equality), done in place: on CPU it costs half as much, which
    is most of the SNN's overhead over T dense ANN passes. ``v`` is updated in place
    and returned. Returns (spikes, v).

    ``max_spikes = K > 1`` is the multi-threshold (burst) neuron: thresholds at 1, 2, .., K,
    each one crossed emits a spike and subtracts 1, so ``s[t] = clip(floor(v[t]), 0, K)``
    (an integer in 0..K) and ``v[t] = v[t] - s[t]``. K = 1 is the binary neuron above, bit
    for bit (its own code path).

    ``overwrite=True`` writes the spikes over ``x_seq`` (a temporary the caller owns, e.g.
    ``x + bias``): no second buffer is allocated, and no value changes.
    """
    spikes = x_seq if overwrite else torch.empty_like(x_seq)  # step t's input is read before its spikes are written
    if max_spikes != 1:
        for t in range(x_seq.shape[0]):
            v.add_(x_seq[t])
            torch.floor(v, out=spikes[t]).clamp_(0.0, float(max_spikes))
            v.sub_(spikes[t])
        return spikes, v
    for t in range(x_seq.shape[0]):
        v.add_(x_seq[t])
        torch.ge(v, 1.0, out=spikes[t])  # 0/1 written as floats directly: a bool mask copied over costs 4x as much on CPU
        v.sub_(spikes[t])
    return spikes, v


def if_soft_reset_reference(x_seq: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The same neuron through spikingjelly 2.0's ``if_multi_step`` (reference)."""
    spikes, v_out, _ = if_multi_step(x_seq, v, 1.0, None)
    return spikes, v_out


def count_max_pool2d(
    spike_seq: Tensor,
    counts: Tensor,
    pooled: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Spiking max-pool over ``spike_seq[T, B, C, H, W]`` that tracks the max spike count.

    ``counts`` holds each input's spikes so far; ``pooled = maxpool(counts)``. A window
    emits a spike whenever its largest count grows. Counts grow by at most one per
    step, so the output is 0/1, and after every step the output count *equals*
    the max of the input counts: the output rate is the max input rate, exactly.
    Returns (output spikes, counts, pooled).
    """
    outputs = []
    for t in range(spike_seq.shape[0]):
        counts = counts + spike_seq[t]
        current = F.max_pool2d(counts, kernel_size, stride, padding, dilation, ceil_mode)
        outputs.append(current - pooled)
        pooled = current
    return torch.stack(outputs), counts, pooled


def bernoulli_encode(x: Tensor, steps: int, generator: torch.Generator | None) -> Tensor:
    """Rate coding: ``s[t] ~ Bernoulli(x)`` independently per step; x must lie in [0, 1]."""
    noise = torch.rand((steps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (noise < x.unsqueeze(0)).to(x.dtype)
