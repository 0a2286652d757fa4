"""Multi-step simulation: one run of max(T) steps gives the output at every requested T.

Time is processed in chunks of K steps that run as one merged ``[K*B, ...]``
batch through every stateless layer; neurons carry their membrane state from
chunk to chunk, so memory depends on K, not on T. The output is accumulated
step by step in a fixed order, so the sum at step k is bit-identical whatever
the chunking and whatever max(T).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from .errors import UsageError
from .free_heap import heap_reuse
from .snn import Encoding, SpikingNetwork

__all__ = ["SimulationResult", "simulate", "auto_chunk", "StepHook", "readout_delay_of", "readout_start"]

# Called once per chunk with (first_step, steps_in_chunk).
StepHook = Callable[[int, int], None]

_DEFAULT_BUDGET = 8 * 1024 * 1024  # bytes per activation tensor on a CPU; larger ones are slower there (mmap)
_GPU_SHARE = 16  # on a GPU: one activation tensor may take 1/16 of the free memory (a layer holds a few at once)


@dataclass
class SimulationResult:
    """Accumulated SNN output at each requested T, shape [B, classes]: the readout
    ``outputs[T] = sum_{t = d(T)+1}^{T} o_t`` over the output currents ``o_t``, with the
    readout delay ``d(T)`` of :func:`readout_start` (``k = readout_delay``; 0: every step
    counts). Every step is simulated and counted whatever k; the delay only drops the first
    outputs. An SNN converted with ``--readout weighted`` is read at its calibrated T = N
    as ``outputs[N] = sum_{t=1}^{N} w_t o_t`` (``readout_weights``; other T as above)."""

    time_steps: tuple[int, ...]
    outputs: dict[int, Tensor]
    spike_counts: dict[str, Tensor] = field(default_factory=dict)  # layer -> [max T] spikes per step (batch total)
    readout_delay: int = 0
    neurons: dict[str, int] = field(default_factory=dict)  # layer -> neurons per sample (with record_spikes)
    readout_weights: tuple[float, ...] = ()  # w_1..w_N where outputs[N] is weighted (empty: none)

    def predictions(self, T: int) -> Tensor:
        return self.outputs[T].argmax(dim=1)


def auto_chunk(snn: SpikingNetwork, batch_size: int, max_steps: int, budget_bytes: int | None = None, *, device: torch.device | str = "cpu") -> int:
    """Steps per chunk so that the largest activation ``[K*B, ...]`` takes about
    ``budget_bytes``: 8 MiB on a CPU (larger tensors are slower there), 1/16 of the free
    memory on a GPU, where merging every step into one batch (K = T) is fastest."""
    if budget_bytes is None:
        device = torch.device(device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = int(free) // _GPU_SHARE
        else:
            budget_bytes = _DEFAULT_BUDGET
    per_sample = snn.record.max_activation_numel * 4
    steps = budget_bytes // max(1, per_sample * batch_size)
    return int(max(1, min(max_steps, steps)))


@heap_reuse()
@torch.no_grad()
def simulate(
    snn: SpikingNetwork,
    inputs: Tensor,
    T: Sequence[int] | int,
    *,
    encoding: Encoding = "direct",
    generator: torch.Generator | None = None,
    chunk: int | None = None,
    record_spikes: bool = False,
    on_chunk: StepHook | None = None,
    readout_delay: int | None = None,
) -> SimulationResult:
    """Run ``snn`` on ``inputs`` ([B, ...], values as the ANN takes them) for max(T) steps.

    ``readout_delay`` (default: the SNN's own, ``snn.record.calibration.readout_delay``):
    the first k output steps are left out of the readout (:class:`SimulationResult`). With
    the SNN's own readout, one converted with ``--readout weighted`` is read at T = N with
    its per-step weights; a ``readout_delay`` given here reads every T after that delay."""
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    if not (whole(T) or (isinstance(T, Sequence) and not isinstance(T, str) and all(whole(v) for v in T))):
        raise UsageError(f"T is a whole number of time steps or a sequence of them, not {T!r}")
    steps = tuple(sorted(set([T] if isinstance(T, int) else T)))
    if not steps or steps[0] < 1:
        raise UsageError("time steps must be positive")
    max_t = steps[-1]
    delay = readout_delay_of(snn) if readout_delay is None else int(readout_delay)
    if delay < 0:
        raise UsageError(f"invalid readout delay {delay}: use 0 or more steps")
    calibrated = snn.record.calibration.T
    # the SNN's own readout (no delay given) at its calibrated T: weighted, when it has weights
    weights = snn.record.calibration.readout_weights if readout_delay is None and calibrated in steps else ()
    skip = {T: readout_start(delay, T, calibrated) for T in steps}
    starts = sorted(set(skip.values()))
    batch = int(inputs.shape[0])
    chunk = auto_chunk(snn, batch, max_t, device=inputs.device) if chunk is None else int(chunk)
    if chunk < 1:
        raise UsageError("chunk must be at least 1")
    split = snn.split_runner(encoding)
    temporal = snn.temporal_modules(encoding)
    for module in temporal:
        module.reset_state()
    snn.encoder.encoding = encoding
    snn.encoder.generator = generator
    handles = []
    counts: dict[str, list[Tensor]] = {}
    neurons: dict[str, int] = {}
    if record_spikes:
        for name, module in snn.neuron_layers().items():
            counts[name] = []

            def hook(mod, args, out, _name=name):
                per_step = out.reshape(mod.steps, -1)
                neurons[_name] = int(per_step.shape[1]) // batch  # noqa: B023
                counts[_name].append(per_step.sum(1, dtype=torch.float64).cpu())  # noqa: B023

            handles.append(module.register_forward_hook(hook))
    wanted = set(steps)
    outputs: dict[int, Tensor] = {}
    acc: dict[int, Tensor] = {}  # one sum per distinct start d: the steps after d, in a fixed order
    try:
        static = split.static(inputs)  # what is the same at every step: once for the whole run, not once per chunk
        start = 0
        while start < max_t:
            k = min(chunk, max_t - start)
            for module in temporal:
                module.steps = k
            if on_chunk is not None:
                on_chunk(start, k)
            out = split.temporal(*static)
            out = out.reshape(k, batch, *out.shape[1:])
            for i in range(k):
                step = start + i + 1
                for d in starts:
                    if step > d:  # in place: the same sums in the same order, without a new tensor per step
                        if d in acc:
                            acc[d].add_(out[i])
                        else:
                            acc[d] = out[i].clone()
                if weights and step <= len(weights):  # sum_t w_t o_t, in step order
                    if step == 1:
                        weighted = out[i] * weights[0]
                    else:
                        weighted.add_(out[i], alpha=weights[step - 1])
                if step in wanted:
                    outputs[step] = weighted.clone() if weights and step == len(weights) else acc[skip[step]].clone()
            start += k
    finally:
        for handle in handles:
            handle.remove()
        for module in temporal:
            module.reset_state()
    spike_counts = {name: torch.cat(parts) for name, parts in counts.items()}
    return SimulationResult(time_steps=steps, outputs=outputs, spike_counts=spike_counts, readout_delay=delay, neurons=neurons, readout_weights=weights)


def readout_start(k: int, T: int, calibrated_T: int | None) -> int:
    """Steps left out of the readout at T: ``d(T) = min(k, floor(k T / N), T - 1)`` for an SNN
    calibrated for N (k at T >= N, the same share of the steps below N, so a short run is not
    read from its last step alone), ``min(k, T - 1)`` without N."""
    if calibrated_T:
        return min(k, (k * T) // int(calibrated_T), T - 1)
    return min(k, T - 1)


def readout_delay_of(snn: SpikingNetwork) -> int:
    """The readout delay k recorded at conversion (``snn.record.calibration``), 0 if none."""
    return snn.record.calibration.readout_delay
