"""One calibration pass over the canonical ANN, and the neurons' scales read from it.

:class:`Calibrator` puts an :class:`~annsnn.observer.ActivationObserver` after every
activation of a :class:`~annsnn.graph.CanonicalGraph`; :func:`neuron_scale` reads a layer's
scale (its neurons' threshold in ANN units) from its observer under the
:class:`~annsnn.conversion_options.ConversionOptions`: a ``--mode`` (max, percentile,
fraction of the max) or the T-aware IF error search (:mod:`annsnn.thresholds`).
The passes that run on the converted SNN (bias correction, readout delay) are
:mod:`annsnn.calibration`.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, fx

from .conversion_options import ConversionOptions
from .graph import CanonicalGraph
from .observer import DEFAULT_BINS, ActivationObserver
from .thresholds import if_thresholds

__all__ = ["Calibrator", "neuron_scale", "clipped_fraction"]


class Calibrator:
    """The canonical ANN with an :class:`ActivationObserver` after every activation.

    Run batches through :meth:`observe` once; then :func:`convert` may read any mode.
    """

    def __init__(self, canonical: CanonicalGraph, *, channel_wise: bool = False, bins: int = DEFAULT_BINS, device: torch.device | str = "cpu") -> None:
        self.canonical = canonical
        # a new graph over the same layers (fx builds fresh parent containers for the observers):
        # observing needs no copy of the weights
        self.module = fx.GraphModule(canonical.module, copy.deepcopy(canonical.module.graph)).eval()
        self.observers: dict[str, ActivationObserver] = {}
        self.samples = 0
        graph = self.module.graph
        for node in list(graph.nodes):
            if node.op == "call_module" and str(node.target) in canonical.activations:
                obs_name = f"{node.target}__observer"
                observer = ActivationObserver(bins=bins, channel_wise=channel_wise, device=device)
                self.module.add_submodule(obs_name, observer)
                self.observers[str(node.target)] = observer
                with graph.inserting_after(node):
                    new = graph.call_module(obs_name, (node,))
                node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
        self.module.recompile()

    @torch.no_grad()
    def observe(self, batch: Tensor) -> Tensor:
        """Run one calibration batch; returns the ANN output."""
        self.samples += int(batch.shape[0])
        return self.module(batch)


def neuron_scale(observer: ActivationObserver, options: ConversionOptions, ceiling: float | None, shape: tuple[int, ...]) -> tuple[Tensor, list[str]]:
    """The neurons' scale (0-d, or one per channel shaped to broadcast over a sample) and notes.

    Fallbacks, each reported in the notes (and the layer's ``scale_rule``):

    * a layer that never fired in calibration gets scale 1;
    * a percentile of all values that comes out 0 (more than q% of the values are zero,
      e.g. a low percentile of a sparse layer) is replaced by the q-th percentile of the
      POSITIVE values (the snntoolbox definition, Rueckauer et al. 2017). It keeps the
      clipping the user asked for among the active neurons, and it is always in (0, max].
      The layer max, the earlier fallback, would silently undo that request;
    * channel-wise, a channel whose percentile of all values is 0 gets its own positive
      percentile, likewise; a channel that never fired gets the layer-wise scale of the
      same mode (its calibration says nothing about it).
    """
    notes: list[str] = []
    channel_wise = options.channel_wise
    mode = options.mode
    zero_share = float(observer.zeros) / float(observer.total) if float(observer.total) > 0 else 1.0

    def layer_value() -> tuple[float, str | None]:
        if float(observer.max_val) <= 0:
            return 1.0, "layer never fired in calibration; scale set to 1"
        value = float(observer.scale(mode, False, options.percentile_of))
        if value > 0:
            return value, None
        positive = observer.percentile(mode.value, None, "positive")
        if positive > 0:
            return positive, (f"the {mode} percentile of all values is 0 ({zero_share:.1%} of the values are zero); "
                              f"the scale is the {mode} percentile of the positive values instead")
        return float(observer.max_val), "no positive percentile; the scale is the layer max"

    if options.threshold == "if-search":
        # T-aware threshold (annsnn.thresholds): a silent layer gets 1, a silent channel the
        # layer's own T-aware threshold (its calibration says nothing about it)
        assert options.T is not None
        # K spikes per step over T steps quantise as one spike over K T steps (the same
        # levels ceiling / (K T), the same clip): search the ceiling at K T, divide by K below
        levels = options.T * options.max_spikes
        value = if_thresholds(observer, levels, channel_wise, ceiling) * options.threshold_scale
        layer_theta = float(if_thresholds(observer, levels, False, ceiling)) * options.threshold_scale if float(observer.max_val) > 0 else 1.0
        if channel_wise:
            dead = value <= 0
            if bool(dead.any()):
                notes.append(f"{int(dead.sum())} channel(s) never fired in calibration; their threshold is the layer's {layer_theta:.4g}")
                value = torch.where(dead, torch.full_like(value, layer_theta), value)
        elif float(value) <= 0:
            notes.append("layer never fired in calibration; scale set to 1")
            value = torch.tensor(1.0, dtype=torch.float64, device=value.device)
    elif channel_wise:
        value = observer.scale(mode, True, options.percentile_of)
        dead = observer.channel_max <= 0
        rare = (value <= 0) & ~dead  # fired, but more than q% of its values are zero
        if bool(dead.any()):
            fallback, _ = layer_value()
            notes.append(f"{int(dead.sum())} channel(s) never fired in calibration; their scale is the layer-wise scale {fallback:.4g}")
            value = torch.where(dead, torch.full_like(value, fallback), value)
        if bool(rare.any()):
            positive = torch.tensor([observer.percentile(mode.value, c, "positive") if bool(rare[c]) else 0.0 for c in range(value.numel())], dtype=value.dtype, device=value.device)
            notes.append(f"{int(rare.sum())} channel(s) have a {mode} percentile of 0 over all values; their scale is the {mode} percentile of their positive values")
            value = torch.where(rare, positive, value)
            value = torch.where(value > 0, value, observer.channel_max.to(value))
    else:
        number, note = layer_value()
        if note is not None:
            notes.append(note)
        value = torch.tensor(number, dtype=torch.float64, device="cpu")
    if ceiling is not None:
        value = value.clamp(max=ceiling)
    if options.max_spikes > 1:  # the scale is the ceiling K spikes reach; one spike is worth 1/K of it
        value = value / options.max_spikes
    if channel_wise:
        view = [1] * (len(shape) - 1)
        view[0] = -1
        value = value.view(view)
    return value.float().cpu(), notes


def clipped_fraction(observer: ActivationObserver, scales: Tensor) -> float:
    """Share of all calibration values above their channel's scale (channels hold equal counts)."""
    if float(observer.total) == 0 or observer.channel_histogram.numel() == 0:
        return 0.0
    fractions = observer.channel_fractions_above(scales.reshape(-1)).tolist()
    return sum(fractions) / len(fractions)
