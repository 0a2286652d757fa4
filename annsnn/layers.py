"""Modules of converted networks.

The SNN graph runs on *merged* time-batch tensors ``[K*B, ...]`` (K = steps in
the current chunk): every stateless layer (conv, pooling, flatten, ...) runs once
over all K steps, and only the temporal modules here reshape to ``[K, B, ...]``.
A temporal module has ``steps`` (set per chunk) and ``reset_state()``.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .errors import UsageError
from .functional import bernoulli_encode, count_max_pool2d, if_soft_reset

__all__ = [
    "ReLUClip",
    "IFNeurons",
    "SpikingMaxPool2d",
    "Rescale",
    "Normalize",
    "InputEncoder",
    "TimeExpand",
    "TemporalModule",
]


class ReLUClip(nn.Module):
    """ANN activation in canonical form: ``clamp(x, 0, ceiling)`` (ceiling None = ReLU)."""

    def __init__(self, ceiling: float | None = None) -> None:
        super().__init__()
        self.ceiling = ceiling

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(0, self.ceiling) if self.ceiling is not None else torch.relu(x)

    def config(self) -> dict:
        return {"ceiling": self.ceiling}

    def extra_repr(self) -> str:
        return "ReLU" if self.ceiling is None else f"clip(0, {self.ceiling:g})"


class TemporalModule(nn.Module):
    """Base of modules that keep state across time steps."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = 1

    def reset_state(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class IFNeurons(TemporalModule):
    """Integrate-and-fire neurons, threshold 1, reset by subtraction; emit exactly 0/1.

    ``v_init`` is the initial membrane potential as a fraction of the threshold.
    Input: currents ``[K*B, ...]``; output: spikes of the same shape.

    ``step_bias`` (optional, shape ``[S, *channel_shape]``, from post-training
    calibration, see :mod:`annsnn.calibration`) adds a current at every step:
    step ``t`` (0-based, counted from :meth:`reset_state`) integrates
    ``x[t] + step_bias[min(t, S - 1)]``. The bias at step t never depends on later
    steps, so a network calibrated for S steps is *prefix-consistent*: its readout
    at any k <= S equals a k-step run. Beyond S the last step's bias repeats
    (S = 1 is a constant bias). Each add is one accumulate (AC) per neuron and step.

    ``max_spikes`` K (``--max-spikes``): a multi-threshold (burst) neuron that emits up to K
    spikes per step, ``s = clip(floor(v), 0, K)``, ``v -= s`` (thresholds 1..K with
    subtraction, :func:`~annsnn.functional.if_soft_reset`). Its output is the spike count,
    an integer in 0..K; each spike is one synaptic event downstream. K = 1 (the default)
    is the binary neuron.
    """

    def __init__(self, v_init: float = 0.0, step_bias: Tensor | None = None, max_spikes: int = 1) -> None:
        super().__init__()
        if isinstance(max_spikes, bool) or not isinstance(max_spikes, int) or max_spikes < 1:
            raise UsageError(f"invalid --max-spikes {max_spikes!r}: use a whole number of spikes per step >= 1")
        self.max_spikes = max_spikes
        self.v_init = float(v_init)
        self.v: Tensor | None = None
        self.t = 0
        if step_bias is not None:
            if step_bias.dim() < 1 or step_bias.shape[0] < 1 or not bool(torch.isfinite(step_bias).all()):
                raise UsageError("IF step bias must be a finite tensor [steps, ...]")
            self.register_buffer("step_bias", step_bias.detach().to(torch.float32).clone())
        else:
            self.step_bias: Tensor | None = None

    def set_step_bias(self, step_bias: Tensor | None) -> None:
        """Install (or remove, with None) the per-step bias ``[S, *channel_shape]``."""
        self._buffers.pop("step_bias", None)
        self.__dict__.pop("step_bias", None)
        if step_bias is None:
            self.step_bias = None
        else:
            self.register_buffer("step_bias", step_bias.detach().to(torch.float32).clone())

    @property
    def bias_steps(self) -> int:
        """S, the steps the bias was calibrated for (0 = no bias)."""
        return 0 if self.step_bias is None else int(self.step_bias.shape[0])

    def reset_state(self) -> None:
        self.v = None
        self.t = 0

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(self.steps, -1, *x.shape[1:])
        if self.v is None:
            self.v = torch.full(seq.shape[1:], self.v_init, dtype=torch.float32, device=x.device)
        fresh = seq.dtype != torch.float32  # seq is a temporary of this call (not the caller's x): the spikes may overwrite it
        seq = seq if seq.dtype == torch.float32 else seq.float()
        if self.step_bias is not None:
            index = torch.arange(self.t, self.t + self.steps, device=x.device).clamp_(max=self.step_bias.shape[0] - 1)
            seq = seq + self.step_bias.to(seq.device)[index].unsqueeze(1)
            fresh = True
        self.t += self.steps
        spikes, self.v = if_soft_reset(seq, self.v, self.max_spikes, overwrite=fresh)
        return spikes.to(x.dtype).reshape(x.shape)

    def config(self) -> dict:
        config = {"v_init": self.v_init, "bias_steps": self.bias_steps}
        if self.max_spikes != 1:  # binary neurons save as before
            config["max_spikes"] = self.max_spikes
        return config

    def extra_repr(self) -> str:
        extra = f", step_bias={self.bias_steps} step(s)" if self.step_bias is not None else ""
        burst = f", max_spikes={self.max_spikes}" if self.max_spikes != 1 else ""
        return f"threshold=1, reset=subtract, v_init={self.v_init:g}{burst}{extra}"


class SpikingMaxPool2d(TemporalModule):
    """Spiking max-pool: a window spikes when the largest input spike count grows
    (see :func:`~annsnn.functional.count_max_pool2d`); output count = max input count."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.ceil_mode = bool(ceil_mode)
        self.counts: Tensor | None = None
        self.pooled: Tensor | None = None

    def reset_state(self) -> None:
        self.counts = None
        self.pooled = None

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(self.steps, -1, *x.shape[1:])
        if self.counts is None or self.pooled is None:
            self.counts = torch.zeros(seq.shape[1:], dtype=x.dtype, device=x.device)
            self.pooled = torch.nn.functional.max_pool2d(self.counts, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        out, self.counts, self.pooled = count_max_pool2d(
            seq, self.counts, self.pooled, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        return out.reshape(-1, *out.shape[2:])

    def config(self) -> dict:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "ceil_mode": self.ceil_mode,
        }


class Rescale(nn.Module):
    """Multiply by a fixed factor (broadcast over a sample): an identity synapse with weight."""

    def __init__(self, factor: Tensor) -> None:
        super().__init__()
        self.register_buffer("factor", factor.detach().to(torch.float32).clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def config(self) -> dict:
        return {"shape": list(self.factor.shape)}


class Normalize(nn.Module):
    """Input normalization ``(x - mean) / std`` per channel; part of the model."""

    def __init__(self, mean: Tensor | list[float], std: Tensor | list[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if (std_t <= 0).any():
            raise UsageError("normalization std must be positive")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def config(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


Encoding = Literal["direct", "poisson", "events"]


class InputEncoder(TemporalModule):
    """The SNN's input: ``direct`` passes the analog image (static, computed once);
    ``poisson`` emits Bernoulli spikes ``[K*B, ...]`` with rate = pixel value in [0, 1];
    ``events`` takes recorded frames ``[B, F, ...]`` (:mod:`annsnn.events`) and emits frame
    t at step t (event counts: every event is a spike)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoding: Encoding = "direct"
        self.generator: torch.Generator | None = None
        self.t = 0

    def reset_state(self) -> None:
        self.t = 0

    def forward(self, x: Tensor) -> Tensor:
        if self.encoding == "direct":
            return x
        if self.encoding == "events":
            if x.dim() < 3 or self.t + self.steps > x.shape[1]:
                raise UsageError(f"event input has {x.shape[1] if x.dim() >= 3 else 0} frames per sample; cannot simulate step {self.t + self.steps} (use --T at most the frame count, tonic:NAME:T)")
            frames = x[:, self.t : self.t + self.steps].transpose(0, 1)
            self.t += self.steps
            return frames.reshape(-1, *x.shape[2:])
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise UsageError("poisson encoding needs inputs in [0, 1]; normalization belongs inside the model")
        seq = bernoulli_encode(x, self.steps, self.generator)
        return seq.reshape(-1, *x.shape[1:])

    def config(self) -> dict:
        return {}


class TimeExpand(TemporalModule):
    """Repeat a static ``[B, ...]`` tensor over the chunk's K steps: ``[K*B, ...]``. The static
    value is computed once per run and read by every chunk, so the repeat is new memory (at
    K = 1 or at batch 1 it would otherwise be a view of the value) unless ``copy`` is False:
    the runner sets that only for an IF layer, which never writes into its input (forward
    hooks on IF layers must not write into it either)."""

    def __init__(self, copy: bool = True) -> None:
        super().__init__()
        self.copy = copy  # False only where the one reader never writes into its input (IF neurons)

    def reset_state(self) -> None:
        pass

    def forward(self, x: Tensor) -> Tensor:
        if self.copy:  # always new memory: at K = 1, or at batch 1, the repeat below is a view of x
            return x.repeat(self.steps, *([1] * (x.dim() - 1)))
        return x.unsqueeze(0).expand(self.steps, *x.shape).reshape(-1, *x.shape[1:])

    def config(self) -> dict:
        return {}
