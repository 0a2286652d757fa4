"""Post-training calibration passes for a latency of N steps (bias / potential correction).

After conversion (thresholds from :mod:`annsnn.thresholds` or a --mode), the SNN's mean
output per channel still drifts from the ANN's: the quantisation and clipping errors of
one layer shift the next layer's mean input, and the shifts add up with depth. These
passes simulate the SNN on calibration images (training split) and correct each neuron
layer's input current per channel, in topological order, so that its mean output
``rate * theta`` matches the ANN's mean activation. All sums are float64.

* ``layer`` (Li, Deng, Dong, Gu, ICML 2021, arXiv:2106.06984, "light calibration"; journal
  version Li et al. 2022, arXiv:2205.10121): one constant bias per channel,
  ``b_c += (mean_ann_c / theta_c - rate_c) / p_c``, where ``rate_c`` is the mean spike rate
  over N steps and ``p_c`` the share of the channel's ANN activations that are positive (a
  bias moves only neurons that integrate). Layer by layer from the input, each layer's rate
  measured with every upstream correction in place, in one layer-major run that computes
  each layer's inputs twice (the rate without the bias, then the layer with it).
* ``step`` (after FTBC, Wu, Chua, Zhang, Li, Tan, ECCV 2024, arXiv:2403.18388): a bias
  ``b[t]`` per layer, step and channel, fitted step by step in one simulation of N
  steps. At step t, when the layer is reached (its inputs at step t are final because
  upstream layers ran first), the bias is set so that its cumulative spike count meets
  the ANN's: ``b_c[t] = ((t+1) mean_ann_c / theta_c - count_c[t-1] - fired_c(b=0)) / p_c``,
  where ``fired_c(b=0)`` is the share of neurons that would fire at step t without the
  bias. The cumulative target makes the fit a feedback loop: a step's rounding error is
  corrected at the next step. b[t] depends only on steps <= t, so the SNN is valid for
  every T <= N (prefix-consistent); beyond N the last step's bias repeats
  (:class:`~annsnn.layers.IFNeurons`). The fit costs N network steps in total, not per
  layer: it runs layer-major (:mod:`annsnn.layerwise`), all N steps of one layer from the
  cached, bit-packed spike trains of the layers it reads, so one layer's potentials are
  live instead of every layer's (on the shared ResNet-20 at N=32, 256 images: 195 MB of
  potentials). The same dynamics as a step-major run: bit for bit on that ResNet-20, and
  in general up to how a convolution rounds for 64 images instead of 256. FTBC fits b[t] by gradient descent on the same cumulative error; the closed form
  here is annsnn's. ``solver="quantile"`` replaces the linearised step
  ``(want - fired) / p_c`` by the exact solution of ``share_c(v + x + b_c >= 1) = want_c``:
  with the channel's potentials ``v + x`` at step t sorted in descending order
  ``s_(1) >= s_(2) >= ...`` and ``k = round(want_c M)``, ``b_c = 1 - (s_(k) + s_(k+1)) / 2``
  (read from at most 65,536 evenly strided neurons per channel). Same objective, same
  prefix consistency; it costs one sort per layer and step.

Each bias add is one accumulate per neuron and step; the counters include it.

Readout delay (the issue's optional "delayed readout"; the same idea as the warm-up steps
Rueckauer et al. 2017 leave out of their accuracy curves): spikes need steps to reach the
output of a deep net, so the first output currents carry little but noise. The readout
``sum_{t > k} o_t`` leaves out the first k steps; every step is still simulated and counted.
:func:`choose_readout_delay` picks k at T = N, on calibration images the bias fit did not
use, from one simulation of N steps: by default the k in 0..N-1 whose mean readout
``(S_N - S_k) / (N - k)`` has the smallest squared error against the ANN's output (ties: the
smallest k). ``criterion="agreement"`` is the earlier rule: the k whose readout agrees most
often with the ANN's class (ties: the smallest squared error, then the smallest k). Agreement
moves in steps of one image and its maximum is often a single image above a near-flat
plateau; the squared error is continuous. On ResNet-20-JPEG it chose the delay with the best
held-out accuracy at T = 4 and 8 where agreement did not (docs/low-latency.md). Below N the
same share of steps is left out (:func:`annsnn.simulate.readout_start`).

Weighted readout (``--readout weighted``): the delay is a 0/1 weighting of the steps. From the
same simulation, :func:`fit_readout_weights` fits one weight per step,
``w = argmin_w sum_i ||sum_t w_t o_{t,i} - a_i||^2`` (N unknowns, solved in float64 by
``torch.linalg.lstsq``), and the readout at T = N becomes ``sum_t w_t o_t``. Early steps get small or
negative weights (they subtract the transient) instead of none. On held-out ResNet-20-JPEG
images it gained about 1 point at N = 8 and 0.7 at N = 4, and nothing at N = 16
(docs/low-latency.md). Other T keep the delay's readout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .errors import UsageError
from .functional import if_soft_reset
from .free_heap import release_free_heap
from .layerwise import BufferPool, run_layerwise
from .record import CALIBRATIONS, DELAY_CRITERIA, READOUTS, DelayCriterion, Readout  # --calibration NAME -> (threshold method, bias method); --delay-criterion and --readout names; re-exported
from .snn import SpikingNetwork

__all__ = ["CalibrationMethod", "CALIBRATIONS", "BiasFit", "ann_channel_targets", "fit_layer_bias", "fit_step_bias", "quantile_bias", "StepSolver", "calibration_options", "resolve_calibration", "DelayCriterion", "DELAY_CRITERIA", "DelayChoice", "choose_readout_delay", "fit_readout_weights", "Readout", "READOUTS"]

CalibrationMethod = Literal["none", "threshold", "bias", "step-bias", "threshold+bias", "threshold+step-bias"]

_MIN_ACTIVE = 0.05  # floor of p_c: a channel that is almost never positive gets a bounded step
_MAX_BIAS = 1.0  # |bias| per step, in thresholds
_ANN_BATCH = 64  # images per ANN pass when reading the channel targets
_FIT_BATCH = 64  # images per span of the stateless ops in the step-bias fit's layer-major run
_UPDATE_IMAGES = 16  # images per span of the fit's statistics and IF updates: elementwise and exact
# integer counts, so the span does not change a value; small spans keep the temporaries small
_TARGET_ELEMENTS = 1 << 18  # activations per channel block when reading the ANN targets (2 MiB as float64)
_CHOICE_BATCH = 64  # images per layer-major run when choosing the readout delay (bounded memory)


def resolve_calibration(calibration: str | None, *, mode_given: bool, percentile_of_given: bool = False) -> str:
    """The ``--calibration`` a command line means, so that every explicit flag changes the result.

    Without ``--calibration`` the default pipeline searches each threshold at T
    (``threshold+step-bias``); an explicit ``--mode`` then sets the thresholds instead, with
    the same per-step bias fitted on top (``step-bias``). With an explicit calibration that
    searches its thresholds, ``--mode`` / ``--percentile-of`` would be ignored, so they are
    refused with the reason."""
    default = next(iter(CALIBRATIONS))
    if calibration is None:
        return "step-bias" if mode_given or percentile_of_given else default
    threshold, _ = calibration_options(calibration)
    if threshold == "if-search" and (mode_given or percentile_of_given):
        flag = "--mode" if mode_given else "--percentile-of"
        bias = {"threshold+step-bias": "step-bias", "threshold+bias": "bias", "threshold": "none"}[calibration]
        instead = f"--calibration none (without --T: it fits no latency) for {flag}'s thresholds without a bias" if bias == "none" else f"--calibration {bias} to keep its bias with {flag}'s thresholds"
        raise UsageError(f"{flag} sets the thresholds, but --calibration {calibration} searches them at T: drop {flag}, or use {instead}")
    return calibration


def calibration_options(name: str) -> tuple[str, str]:
    """(threshold method, bias method) of a ``--calibration`` name."""
    if name not in CALIBRATIONS:
        raise UsageError(f"invalid --calibration {name!r}: use one of {', '.join(CALIBRATIONS)}")
    return CALIBRATIONS[name]


@dataclass
class BiasFit:
    """What a bias pass did: per layer, the mean |output error| per channel (spikes per
    step) before and after, on the calibration images."""

    method: str
    steps: int
    samples: int
    error_before: dict[str, float] = field(default_factory=dict)
    error_after: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "steps": self.steps, "samples": self.samples,
                "error_before": self.error_before, "error_after": self.error_after}


def _channel_view(x: Tensor) -> Tensor:
    """``[B, C, ...]`` -> ``[C, B * ...]``."""
    return x.transpose(0, 1).reshape(x.shape[1], -1)


_FLOAT32_WHOLE = 2.0**24  # every whole number up to this is a float32, so are the partial sums of a count below it


def _channel_count(x: Tensor, largest: float = 1.0) -> Tensor:
    """Per channel (dim 1 of ``[B, C, ...]``), the sum over every other dim, float64: exact
    for the whole numbers it counts (0/1 spikes and threshold crossings, burst counts
    0..``largest``), whatever the summation order. A contiguous sum per image and channel
    first, in float32 when no partial sum can pass 2**24 (int32 for flags), then over the
    images in float64: 3x faster on CPU than one float64 sum over the strided dims."""
    grouped = x.reshape(x.shape[0], x.shape[1], -1)
    if x.dtype == torch.bool:
        return grouped.sum(2, dtype=torch.int32).sum(0, dtype=torch.float64)
    inner = torch.float32 if x.dtype == torch.float32 and largest * grouped.shape[2] <= _FLOAT32_WHOLE else torch.float64
    return grouped.sum(2, dtype=inner).sum(0, dtype=torch.float64)


def _crossings(potential: Tensor) -> Tensor:
    """Per channel, how many entries of ``potential`` (a fresh float32 ``v + x``) reach the
    threshold 1, float64; ``potential`` is overwritten with the 0/1 flags (as floats:
    a bool mask costs 3x as much on CPU)."""
    return _channel_count(potential.ge_(1.0))


def _channel_shape(sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    return (sample_shape[0],) + (1,) * (len(sample_shape) - 1)


@torch.no_grad()
def ann_channel_targets(snn: SpikingNetwork, images: Tensor) -> dict[str, tuple[Tensor, Tensor, tuple[int, ...]]]:
    """Per neuron layer: (mean ANN activation / theta per channel, share of positive
    activations per channel, sample shape), float64, from one ANN pass over ``images``."""
    thresholds: dict[str, Tensor] = snn.graph.meta.get("annsnn_thresholds", {})
    neurons = snn.neuron_layers()
    if set(neurons) - set(thresholds):
        raise UsageError("the SNN has no recorded thresholds; bias calibration runs right after convert")
    modules = dict(snn.ann.named_modules())
    release_free_heap()  # the calibration pass's garbage (annsnn.free_heap)
    sums: dict[str, list] = {}
    handles = []
    for name in neurons:
        theta = thresholds[name].to(torch.float64)

        def hook(mod, args, out, _name=name, _theta=theta):
            channels = int(out.shape[1])
            part = sums.setdefault(_name, [torch.zeros(channels, dtype=torch.float64, device=out.device), torch.zeros(channels, dtype=torch.float64, device=out.device), 0, tuple(out.shape[1:])])
            step = max(1, _TARGET_ELEMENTS // max(1, out[:, :1].numel()))
            for lo in range(0, channels, step):  # a few channels at a time: each row's sum does not depend on the others
                hi = min(lo + step, channels)
                theta_part = _theta[lo:hi].unsqueeze(0) if _theta.dim() else _theta
                view = _channel_view(out[:, lo:hi].to(torch.float64) / theta_part)
                part[0][lo:hi] += view.sum(1)
                part[1][lo:hi] += _channel_count(out[:, lo:hi] > 0)
            part[2] += out[:, :1].numel()

        handles.append(modules[name].register_forward_hook(hook))
    try:
        for start in range(0, int(images.shape[0]), _ANN_BATCH):  # bounded memory; float64 sums
            snn.ann(images[start : start + _ANN_BATCH])
    finally:
        for h in handles:
            h.remove()
    return {name: (s / n, active / n, shape) for name, (s, active, n, shape) in sums.items()}


@torch.no_grad()
def fit_layer_bias(snn: SpikingNetwork, images: Tensor, steps: int, *, batch: int = _FIT_BATCH) -> BiasFit:
    """Constant per-channel bias (Li et al. 2021, light calibration), layer by layer from the
    input: with every upstream layer's bias in place, the layer's mean spike count per step
    over ``steps`` steps WITHOUT its own bias, ``rate_c``, gives
    ``b_c = clip((mean_ann_c / theta_c - rate_c) / max(p_c, 0.05), -1, 1)``
    (``mean_ann_c / theta_c`` clipped at K spikes). Correcting all layers at once instead
    (each for upstream biases that are changing in the same pass) overshoots on deep nets:
    15 % top-1 on the shared ResNet-20 at T=8.

    One layer-major run (:func:`annsnn.layerwise.run_layerwise`): each layer's inputs are
    computed twice: the layer itself runs once without its bias to measure ``rate_c``
    (``layer_prepass``), then again from ``v_init`` with it, and later layers read the
    second run's spikes. Before, each layer took a simulation of the whole network
    (``layers + 1`` in all)."""
    targets = ann_channel_targets(snn, images)
    neurons = snn.neuron_layers()
    fit = BiasFit("layer", steps, int(images.shape[0]))
    crossings: dict[str, Tensor] = {}  # per channel: spikes of the bias-free run, all steps
    emitted: dict[str, Tensor] = {}  # per channel: spikes with the bias, all steps
    for module in neurons.values():
        module.set_step_bias(None)

    def per_step(name: str, counts: Tensor) -> Tensor:
        return counts / (steps * math.prod(targets[name][2][1:]) * images.shape[0])

    def measure(name: str, module, x: Tensor, t: int) -> None:
        if name not in neurons:
            return
        crossings[name] = crossings.get(name, 0.0) + _channel_count(module(x), float(module.max_spikes))  # type: ignore[operator]  # no bias yet
        if t == steps - 1:
            module.reset_state()  # the run with the bias starts from v_init again

    def run(name: str, module, x: Tensor, t: int) -> Tensor:
        if name not in neurons:
            return module(x)
        if t == 0:
            target, active, shape = targets[name]
            error = target.clamp(max=float(module.max_spikes)) - per_step(name, crossings.pop(name))  # a neuron emits at most K spikes per step
            fit.error_before[name] = float(error.abs().mean())  # upstream already corrected
            bias = (error / active.clamp(min=_MIN_ACTIVE)).clamp(-_MAX_BIAS, _MAX_BIAS).view(_channel_shape(shape))
            module.set_step_bias(bias.unsqueeze(0))
        out = module(x)
        emitted[name] = emitted.get(name, 0.0) + _channel_count(out, float(module.max_spikes))  # type: ignore[operator]
        return out

    run_layerwise(snn, images, steps, batch=batch, layer_step=run, layer_prepass=measure)
    for name, module in neurons.items():
        fit.error_after[name] = float((targets[name][0].clamp(max=float(module.max_spikes)) - per_step(name, emitted[name])).abs().mean())
    return fit


StepSolver = Literal["linear", "quantile"]
_QUANTILE_SAMPLES = 1 << 16  # neurons per channel the quantile solve reads (evenly strided)


def quantile_bias(potential: Tensor, want: Tensor) -> Tensor:
    """Per channel (rows of ``potential``, ``[C, M]`` values of ``v + x``), the bias b_c with
    ``mean_m [potential_cm + b_c >= 1] = k_c / M``, ``k_c = round(want_c M)``: b_c lies
    midway between ``1 - s_(k)`` and ``1 - s_(k+1)`` (s sorted descending), so exactly the
    k largest cross the threshold. float64."""
    rows, m = potential.shape
    if m > _QUANTILE_SAMPLES:
        potential = potential[:, :: -(-m // _QUANTILE_SAMPLES)]
        m = potential.shape[1]
    s = potential.to(torch.float64).sort(1, descending=True).values
    padded = torch.cat([s[:, :1] + 1.0, s, s[:, -1:] - 1.0], 1)  # padded[k] = s_(k), k = 1..M
    k = (want.to(torch.float64) * m).round().long().clamp(0, m).view(-1, 1)
    upper = padded.gather(1, k)  # the k-th largest (or above all for k = 0)
    lower = padded.gather(1, k + 1)  # the (k+1)-th largest (or below all for k = M)
    return (1.0 - (upper + lower) / 2).view(-1)


@torch.no_grad()
def fit_step_bias(snn: SpikingNetwork, images: Tensor, steps: int, solver: StepSolver = "linear", *, batch: int = _FIT_BATCH) -> BiasFit:
    """Per-step, per-channel bias (after FTBC, Wu et al. 2024), fitted in one run of N steps.

    ``solver`` picks how b_c[t] meets the step's firing target ``want_c``: ``linear``
    divides the shortfall by the channel's active share (the module docstring);
    ``quantile`` solves ``mean_n [v_n + x_n + b_c >= 1] = want_c`` exactly on the
    calibration images (:func:`quantile_bias`), so no active-share estimate enters.

    The run is layer-major (:func:`annsnn.layerwise.run_layerwise`): all N steps of a
    layer, from its inputs' cached spike trains, before the next layer, so only one
    layer's potentials are live; its stateless ops go ``batch`` images at a time, each
    step's statistics and update 16 (exact counts and elementwise updates: the span
    changes no value). Potentials, trains and buffers come from one
    :class:`~annsnn.layerwise.BufferPool`. Each update is :func:`~annsnn.functional.if_soft_reset` on ``x + b[t]``, as
    in :class:`~annsnn.layers.IFNeurons` (``v += x + b[t]``, ``s = [v >= 1]``, ``v -= s``),
    so the fitted network runs as fitted (tests check it bit for bit against a step-major run of the modules)."""
    targets = ann_channel_targets(snn, images)
    neurons = snn.neuron_layers()
    fit = BiasFit("step", steps, int(images.shape[0]))
    counts: dict[str, Tensor] = {}
    plain: dict[str, Tensor] = {}
    potentials: dict[str, Tensor] = {}
    spike_buffers: list[Tensor] = []  # the current layer's step output, reused at every step
    pool = BufferPool()  # the run's trains and buffers, and the potentials: allocated once, reused layer after layer
    for name, module in neurons.items():
        module.set_step_bias(torch.zeros((steps,) + _channel_shape(targets[name][2]), dtype=torch.float32, device=images.device))

    def step(name: str, module, x: Tensor, t: int) -> Tensor:
        if name not in neurons:
            return module(x)
        x = x if x.dtype == torch.float32 else x.float()
        if t == 0:
            potentials[name] = pool.take(tuple(x.shape), torch.float32, x.device).fill_(module.v_init)
            while spike_buffers:  # the previous layer's: its last step is stored by now
                pool.give(spike_buffers.pop())
            spike_buffers.append(pool.take(tuple(x.shape), torch.bool if module.max_spikes == 1 else torch.float32, x.device))
        v = potentials[name]
        spans = [(lo, min(lo + _UPDATE_IMAGES, int(x.shape[0]))) for lo in range(0, int(x.shape[0]), _UPDATE_IMAGES)]
        per_sample = x.numel() / x.shape[1]
        target, active, _ = targets[name]
        K = module.max_spikes
        if K == 1:
            fired = sum(_crossings(v[lo:hi] + x[lo:hi]) for lo, hi in spans) / per_sample
        else:  # a burst neuron fires clip(floor(v + x), 0, K) spikes (mean per neuron)
            fired = sum(_channel_count(torch.floor(v[lo:hi] + x[lo:hi]).clamp_(0.0, float(K)), float(K)) for lo, hi in spans) / per_sample
        before = counts.get(name, torch.zeros_like(target))
        plain[name] = plain.get(name, torch.zeros_like(target)) + fired
        want = (target * (t + 1) - before).clamp(0.0, float(K))
        if solver == "quantile":
            b = quantile_bias(_channel_view(v + x), want).clamp(-_MAX_BIAS, _MAX_BIAS)
        else:
            b = ((want - fired) / active.clamp(min=_MIN_ACTIVE)).clamp(-_MAX_BIAS, _MAX_BIAS)
        module.step_bias[t] = b.to(torch.float32).view(module.step_bias.shape[1:])
        bias = module.step_bias[t]
        spikes = spike_buffers[0]
        emitted = torch.zeros_like(target)
        for lo, hi in spans:  # IFNeurons.forward, one step: the same neuron function on the same values
            fired_now, _ = if_soft_reset((x[lo:hi] + bias).unsqueeze(0), v[lo:hi], module.max_spikes, overwrite=True)  # updates v in place
            emitted += _channel_count(fired_now[0], float(K))
            spikes[lo:hi].copy_(fired_now[0])
        counts[name] = before + emitted / per_sample
        if t == steps - 1:
            pool.give(potentials.pop(name))
        return spikes if module.max_spikes == 1 else spikes.clone()  # a burst train is cached as it is (not packed): one tensor per step

    run_layerwise(snn, images, steps, batch=batch, layer_step=step, pool=pool)
    for name, module in neurons.items():
        target = targets[name][0].clamp(max=float(module.max_spikes))
        fit.error_before[name] = float((target - plain[name] / steps).abs().mean())  # without this layer's bias
        fit.error_after[name] = float((target - counts[name] / steps).abs().mean())
    return fit


@dataclass
class DelayChoice:
    """What :func:`choose_readout_delay` measured, per candidate delay k: the share of the
    choice images whose SNN class at T = ``steps`` equals the ANN's, and the mean squared
    error of the mean readout against the ANN's output; ``criterion`` chose ``delay``."""

    delay: int
    steps: int
    samples: int
    agreement: list[float]  # index k
    output_mse: list[float]  # index k: mean (readout / (N - k) - ANN output)^2
    criterion: DelayCriterion = "output-mse"
    weights: tuple[float, ...] = ()  # fit_weights=True: fit_readout_weights on the same outputs
    weighted_mse: float = math.nan  # their mean squared error, comparable to output_mse

    def to_dict(self) -> dict:
        fitted = {"weights": list(self.weights), "weighted_mse": self.weighted_mse} if self.weights else {}  # only when fitted: files stay as before
        return {"delay": self.delay, "steps": self.steps, "samples": self.samples, "criterion": self.criterion,
                "agreement": self.agreement, "output_mse": self.output_mse, **fitted}


def fit_readout_weights(step_outputs: Tensor, ann: Tensor) -> tuple[float, ...]:
    """Per-step readout weights by least squares: with ``o`` = ``step_outputs`` ``[N, B, C]``
    (each step's output current) and ``a`` = ``ann`` ``[B, C]``,

    ``w = argmin_w sum_{b,c} (sum_t w_t o_{t,b,c} - a_{b,c})^2``: the solution of the normal
    equations ``G w = r``, ``G_ts = sum_{b,c} o_t o_s``, ``r_t = sum_{b,c} o_t a``, computed
    in float64 by ``torch.linalg.lstsq`` (``gelsd``, an SVD) on the ``[B*C, N]`` design
    matrix; where G is singular (e.g. a step whose outputs are all zero) it gives the
    minimum-norm solution."""
    o = step_outputs.to(torch.float64).reshape(step_outputs.shape[0], -1)  # [N, B*C]
    a = ann.to(torch.float64).reshape(-1)
    if o.shape[1] != a.shape[0]:
        raise UsageError(f"readout weights: {o.shape[1]} output values per step against {a.shape[0]} of the ANN")
    solution = torch.linalg.lstsq(o.T.cpu(), a.cpu().unsqueeze(1), driver="gelsd").solution[:, 0]
    return tuple(float(w) for w in solution)


@torch.no_grad()
def choose_readout_delay(snn: SpikingNetwork, images: Tensor, steps: int, criterion: DelayCriterion = "output-mse", *, fit_weights: bool = False) -> DelayChoice:
    """The readout delay k in ``0 .. steps-1`` for ``images`` at T = ``steps``, with ``S_t``
    the output summed over the first t steps (one simulation) and ``a`` the ANN's output:

    * ``"output-mse"`` (default): ``argmin_k mean_i ||(S_T - S_k)_i / (T - k) - a_i||^2``
      (ties: the smallest k);
    * ``"agreement"``: ``argmax_k mean_i [argmax (S_T - S_k)_i == argmax a_i]``; ties (easy
      images agree at many k) go to the smallest squared error, then the smallest k.

    With ``fit_weights``, the same run also gives :func:`fit_readout_weights`'s per-step
    weights (``DelayChoice.weights``). ``images`` must not be ones the bias was fitted on."""
    if steps < 1:
        raise UsageError("the readout delay is chosen for a latency of at least 1 step")
    if criterion not in DELAY_CRITERIA:
        raise UsageError(f"invalid delay criterion {criterion!r}: use one of {', '.join(DELAY_CRITERIA)}")
    ann = torch.cat([snn.ann(images[i : i + _ANN_BATCH]) for i in range(0, int(images.shape[0]), _ANN_BATCH)]).to(torch.float64)
    reference = ann.argmax(1)
    every = list(range(1, steps + 1))
    pool = BufferPool()  # shared by the image chunks: their trains and buffers are allocated once
    parts: list[dict[int, Tensor]] = []
    steps_of_parts: list[list[Tensor]] = []  # fit_weights: per image chunk, o_1..o_N
    for i in range(0, int(images.shape[0]), _CHOICE_BATCH):  # per image: chunks do not interact
        part: dict[int, Tensor] = {}
        step_parts: list[Tensor] = []
        steps_of_parts.append(step_parts)

        def collect(t: int, out: Tensor, _part: dict[int, Tensor] = part, _steps: list[Tensor] = step_parts) -> None:  # S_{t+1}, summed in step order as simulate does
            _part[t + 1] = out.clone() if t == 0 else _part[t] + out
            if fit_weights:  # o_{t+1} itself, for the weights (not a difference of float32 sums)
                _steps.append(out.to(torch.float64))

        run_layerwise(snn, images[i : i + _CHOICE_BATCH], steps, batch=_CHOICE_BATCH, pool=pool, output_step=collect)
        parts.append(part)
    sums = {t: torch.cat([part[t] for part in parts]) for t in every}
    agreement, mse = [], []
    for k in range(steps):
        readout = (sums[steps] - sums[k] if k else sums[steps]).to(torch.float64)
        agreement.append(float((readout.argmax(1) == reference).double().mean()))
        mse.append(float(((readout / (steps - k) - ann) ** 2).mean()))
    if criterion == "output-mse":
        best = min(range(steps), key=lambda k: (mse[k], k))
    else:
        best = max(range(steps), key=lambda k: (agreement[k], -mse[k], -k))
    if not fit_weights:
        return DelayChoice(best, steps, int(images.shape[0]), agreement, mse, criterion)
    outputs = torch.stack([torch.cat([chunk[t] for chunk in steps_of_parts]) for t in range(steps)])  # o_t, [N, B, C], float64
    weights = fit_readout_weights(outputs, ann)
    readout = torch.einsum("t,tbc->bc", torch.tensor(weights, dtype=torch.float64, device=outputs.device), outputs)
    return DelayChoice(best, steps, int(images.shape[0]), agreement, mse, criterion, weights, float(((readout - ann) ** 2).mean()))
