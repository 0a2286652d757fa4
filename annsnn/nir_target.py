"""``annsnn convert --target nir``: the best calibration NIR can express.

NIR's IF node (``nir.IF``: ``v[t] = v[t-1] + I[t]``, threshold, reset) has no time-varying
bias, and NIR's output sums every step, so the default pipeline's per-step bias and its
readout delay have no NIR form (:mod:`annsnn.nir_io` refuses them). What remains
expressible:

* the T-aware per-channel thresholds (:mod:`annsnn.thresholds`): they are folded into the
  synapses' weights at conversion, as every threshold is;
* a *constant* per-channel bias: ``v += W s + b_syn + b_c`` is ``v += W s + (b_syn + b_c)``,
  so the bias of Li et al. 2021's light calibration (:func:`annsnn.calibration.fit_layer_bias`)
  folds into the bias of the synapse that feeds the neurons (through a residual add, into
  the branch's synapse: the add is linear);
* v_init 1/2 (node metadata), and no readout delay;
* the classifier refitted to the ANN's logits on the calibration images
  (:mod:`annsnn.classifier_refit`): plain weights, fitted to the readout NIR has (every step
  summed), so it learns the first steps' transient that a readout delay would leave out.

:func:`nir_options` gives those options; :func:`fold_constant_bias` moves each neuron
layer's one-step bias into its synapse (the fitted network's values are unchanged up to
float rounding: ``(W s + b_syn) + b_c`` against ``W s + (b_syn + b_c)``); the CLI then checks
the result with the exporter's own rules (:func:`annsnn.nir_io.to_nir`) before it writes
anything, so whatever ``--target nir`` writes exports.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from .conversion_options import ConversionOptions
from .errors import UsageError
from .graph import CanonicalGraph
from .layers import IFNeurons
from .snn import SpikingNetwork

__all__ = ["NIR_CALIBRATION", "nir_options", "check_graph_expressible", "fold_constant_bias", "BiasFold"]

NIR_CALIBRATION = "threshold+bias"  # the --calibration whose result NIR can take once its bias is folded
_ADDS = (operator.add, torch.add)


def nir_options(T: int, calibration: str = NIR_CALIBRATION, **overrides) -> ConversionOptions:
    """The options of ``annsnn convert --target nir --T N``: per-channel IF-search thresholds
    (the pipeline's threshold scale), a constant per-channel bias (``threshold+bias``),
    v_init 1/2, no readout delay, binary spikes (``calibration`` may name another
    expressible one: ``threshold``, ``bias`` or ``none``), the classifier refitted
    (``refit_classifier``, except with ``none``). ``overrides`` (None = the default) win,
    but a per-step bias, a readout delay or bursts are refused: NIR cannot express them."""
    given = {key: value for key, value in overrides.items() if value is not None}
    refit = {"refit_classifier": calibration != "none"}  # on wherever there is a latency to fit for (annsnn.classifier_refit)
    options = ConversionOptions.calibrated(calibration, T, **{"readout_delay": 0, **refit, **given})
    if options.bias == "step":
        raise UsageError("--target nir: NIR's IF has no per-step bias; use --calibration threshold+bias or threshold (searched thresholds), or bias or none (with --mode), or leave --calibration out")
    if options.readout_delay != 0:
        raise UsageError("--target nir: NIR's output sums every step; a readout delay has no NIR form (leave --readout-delay out)")
    if options.max_spikes != 1:
        raise UsageError("--target nir: NIR's IF emits one spike per step; leave --max-spikes out")
    return options


def check_graph_expressible(canonical: CanonicalGraph, options: ConversionOptions) -> None:
    """Refuse, in one line and before any calibration, what a model's canonical graph
    (:func:`annsnn.graph.canonicalize`) already shows NIR cannot take: a max-pool that
    becomes a spiking max-pool (``options.maxpool == "spiking"``) and a layer that
    ``--hybrid`` keeps analog (an op whose registry entry is analog whatever its inputs). The
    exporter's own rules (:func:`annsnn.nir_io.to_nir`) still check the converted SNN; this
    only moves the refusals the graph decides ahead of the calibration pass."""
    from .analog import is_analog
    from .graph import max_pools

    pools = max_pools(canonical) if options.maxpool == "spiking" else []
    if pools:
        raise UsageError(f"--target nir: NIR has no max-pool node (max-pool {', '.join(pools)}); "
                         "convert with --maxpool avg to make max-pools average pools, which NIR expresses")
    modules = dict(canonical.module.named_modules())
    analog = []
    for node in canonical.module.graph.nodes:
        # --hybrid's own rule, with no operand known to vary or to be stored: what stays analog whatever its inputs
        if is_analog(node, modules, set(), set(), canonical.registry):
            spec = canonical.registry.lookup(node, modules)
            analog.append(f"{node.target if node.op == 'call_module' else node.name} ({spec.name})")
    if analog:
        kept = "which --hybrid keeps analog" if options.hybrid else "which has no spiking form (without --target nir the conversion refuses it too)"
        raise UsageError(f"--target nir: NIR cannot express {', '.join(analog)}, {kept}: NIR has no node for it")


@dataclass(frozen=True)
class BiasFold:
    """Which synapse took each neuron layer's constant bias."""

    folded: dict[str, str]  # neuron layer -> synapse module name


def _synapse_of(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The weight node whose output reaches ``node`` (a neuron layer) through nothing but one
    add, and is read by nothing else: adding to its bias adds to the neurons' input."""
    modules = dict(gm.named_modules())
    src = node.args[0]
    if not isinstance(src, fx.Node):
        return None
    candidates = [src]
    if src.op == "call_function" and src.target in _ADDS and len(src.users) == 1 and not src.kwargs:
        candidates = [a for a in src.args if isinstance(a, fx.Node)]
    for candidate in candidates:
        module = modules.get(str(candidate.target)) if candidate.op == "call_module" else None
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and len(candidate.users) == 1:
            return candidate
    return None


@torch.no_grad()
def fold_constant_bias(snn: SpikingNetwork) -> BiasFold:
    """Move every neuron layer's one-step bias (``step_bias`` of shape ``[1, C, 1, ...]``) into
    the bias of the synapse that feeds it, and remove it from the neurons. Raises
    :class:`UsageError` naming the layer if a bias has no synapse to fold into (its input is
    not a convolution or linear layer, alone or through one add)."""
    gm = snn.graph
    modules = dict(gm.named_modules())
    folded: dict[str, str] = {}
    for node in gm.graph.nodes:
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(module, IFNeurons) or module.step_bias is None:
            continue
        if module.bias_steps != 1:
            raise UsageError(f"--target nir: {node.target} has a bias for each of {module.bias_steps} steps; NIR takes a constant one")
        synapse = _synapse_of(gm, node)
        if synapse is None:
            raise UsageError(f"--target nir: the bias of {node.target} has no synapse to fold into (its input is not a convolution or linear layer)")
        layer = modules[str(synapse.target)]
        bias = module.step_bias[0].reshape(-1)
        channels = layer.out_channels if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else layer.out_features
        if bias.numel() == 1:
            bias = bias.expand(channels)
        if bias.numel() != channels:
            raise UsageError(f"--target nir: the bias of {node.target} is not one value per channel of {synapse.target}")
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(channels, dtype=layer.weight.dtype), requires_grad=False)
        layer.bias.add_(bias.to(layer.bias.dtype))
        module.set_step_bias(None)
        folded[str(node.target)] = str(synapse.target)
    return BiasFold(folded)
