"""Convert a canonical ANN into a true-spike IF SNN by data-based normalization.

Every value in the SNN graph carries a *scale* ``s`` (a tensor broadcast over one
sample): the ANN value is ``s * (SNN value)``, in the rate limit. A neuron with
calibrated scale ``lambda`` emits spikes ``{0, 1}`` whose rate times ``lambda``
approximates the ANN activation. Weight layers absorb scales (Rueckauer et al.
2017): ``W' = W * s_in / s_out`` and ``b' = b / s_out``, where ``s_out`` is the
scale that the consuming neuron demands, so thresholds stay 1. Where a scale
cannot be folded (a residual shortcut carrying another layer's spikes) a
:class:`~annsnn.layers.Rescale` synapse is inserted and reported.

Each op's conversion rule (its handler here) and how a demanded scale travels back through it
are fields of its entry in the op registry (:mod:`annsnn.ops`); :func:`default_handlers` is
that registry's key -> handler view.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .equivalence import Equivalence
from .analog import AnalogOp, analog_call, is_analog
from .errors import UsageError
from .graph import CanonicalGraph
from .layers import SpikingMaxPool2d, IFNeurons, InputEncoder, Rescale
from .modes import ScaleMode
from .observer import DEFAULT_BINS, ActivationObserver, PercentileOf
from .ops import Demand, OpRegistry, Role, default_registry
from .scale import Scale, ScaleError
from .thresholds import if_thresholds

__all__ = [
    "ConversionOptions",
    "LayerReport",
    "ConversionReport",
    "Calibrator",
    "convert",
    "default_handlers",
]

MaxPoolStrategy = Literal["spiking", "avg"]
# the low-latency pipeline's factor on the IF-search thresholds, chosen on held-out training
# images (annsnn.thresholds, "Scale")
PIPELINE_THRESHOLD_SCALE = 0.9
ThresholdMethod = Literal["mode", "if-search"]
BiasMethod = Literal["none", "layer", "step"]


@dataclass(frozen=True)
class ConversionOptions:
    """What ``annsnn convert`` was asked to do."""

    mode: ScaleMode = ScaleMode("percentile", 99.99)
    channel_wise: bool = False
    v_init: float = 0.0
    maxpool: MaxPoolStrategy = "spiking"
    hybrid: bool = False
    percentile_of: PercentileOf = "all"  # zeros count in percentiles (see observer)
    # post-training calibration for a latency T (annsnn.calibration); defaults = plain normalization
    T: int | None = None  # steps the SNN is calibrated for (needed by "if-search" and bias)
    threshold: ThresholdMethod = "mode"  # "mode": read --mode; "if-search": annsnn.thresholds
    bias: BiasMethod = "none"  # "layer": Li et al. 2021; "step": per-step (FTBC, Wu et al. 2024)
    bias_samples: int = 256  # calibration images the bias passes simulate
    step_solver: str = "linear"  # bias "step": "linear" (shortfall / active share) or "quantile" (exact per step)
    threshold_scale: float = 1.0  # "if-search": theta = threshold_scale * argmin_theta E(theta) (annsnn.thresholds)
    # readout delay k: the first k output steps are left out of the readout (annsnn.simulate);
    # "auto": chosen at T=N by agreement with the ANN on calibration images the bias fit
    # does not use (annsnn.calibration.choose_readout_delay)
    readout_delay: int | Literal["auto"] = 0
    delay_samples: int = 256  # "auto": calibration images (after the bias images) the choice reads

    def __post_init__(self) -> None:
        if self.threshold not in ("mode", "if-search"):
            raise UsageError(f"invalid threshold method {self.threshold!r}: use 'mode' or 'if-search'")
        if self.bias not in ("none", "layer", "step"):
            raise UsageError(f"invalid bias method {self.bias!r}: use 'none', 'layer' or 'step'")
        if (self.threshold != "mode" or self.bias != "none") and (self.T is None or self.T < 1):
            raise UsageError("calibration for a latency needs --T N with N >= 1")
        if self.step_solver not in ("linear", "quantile"):
            raise UsageError(f"invalid step solver {self.step_solver!r}: use 'linear' or 'quantile'")
        if not 0.0 < self.threshold_scale <= 4.0:
            raise UsageError(f"invalid --threshold-scale {self.threshold_scale}: use a factor in (0, 4]")
        if self.threshold_scale != 1.0 and self.threshold != "if-search":
            raise UsageError("--threshold-scale scales the IF-search thresholds; it needs --calibration threshold, threshold+bias or threshold+step-bias")
        if self.readout_delay == "auto":
            if self.T is None:
                raise UsageError("--readout-delay auto chooses the delay for the calibrated latency: it needs --T N")
        elif isinstance(self.readout_delay, bool) or not isinstance(self.readout_delay, int) or self.readout_delay < 0:
            raise UsageError(f"invalid --readout-delay {self.readout_delay!r}: use 'auto' or a number of steps >= 0")
        elif self.T is not None and self.readout_delay >= self.T:
            raise UsageError(f"invalid --readout-delay {self.readout_delay}: the readout needs at least one of the T={self.T} steps; use 0..{self.T - 1}")
        if self.delay_samples < 1:
            raise UsageError(f"invalid delay samples {self.delay_samples}: use at least 1")
        if self.bias_samples < 1:
            raise UsageError(f"invalid bias samples {self.bias_samples}: use at least 1")
        if not 0.0 <= self.v_init < 1.0:
            raise UsageError(f"invalid --v-init {self.v_init}: use a fraction of the threshold in [0, 1)")
        if self.maxpool not in ("spiking", "avg"):
            raise UsageError(f"invalid --maxpool {self.maxpool!r}: use 'spiking' or 'avg'")
        if self.percentile_of not in ("positive", "all"):
            raise UsageError(f"invalid --percentile-of {self.percentile_of!r}: use 'positive' or 'all'")

    @classmethod
    def low_latency(cls, T: int = 32, **overrides) -> "ConversionOptions":
        """The pipeline ``annsnn convert`` uses by default: per-channel T-aware thresholds
        (scaled by :data:`PIPELINE_THRESHOLD_SCALE`), a per-step per-channel bias fitted for
        ``T`` steps, initial potential theta/2, and a readout delay chosen at T on
        calibration images the bias fit does not use.

        ``ConversionOptions()`` itself is plain normalization (Rueckauer et al. 2017), so
        that code written against earlier versions keeps its meaning."""
        settings = dict(T=T, threshold="if-search", bias="step", channel_wise=True, v_init=0.5, threshold_scale=PIPELINE_THRESHOLD_SCALE, readout_delay="auto")
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def calibrated(cls, calibration: str, T: int | None, **overrides) -> "ConversionOptions":
        """The options of ``annsnn convert --calibration NAME --T N`` (see
        :data:`annsnn.calibration.CALIBRATIONS`): the named threshold and bias methods with
        the low-latency pipeline's settings where they apply (per-channel IF-search
        thresholds scaled by its ``threshold_scale``, its step solver, v_init 1/2, its
        readout delay).
        ``calibration="none"`` is plain ``--mode`` normalization, per layer. ``overrides``
        (any field; None leaves the default) win."""
        from .calibration import calibration_options

        threshold, bias = calibration_options(calibration)
        pipeline = cls.low_latency(1)
        settings: dict = dict(threshold=threshold, bias=bias, channel_wise=threshold == "if-search", v_init=pipeline.v_init,
                              T=T if calibration != "none" else None)
        if threshold == "if-search":
            settings["threshold_scale"] = pipeline.threshold_scale
        if bias == "step":
            settings["step_solver"] = pipeline.step_solver
        if calibration != "none":
            settings["readout_delay"] = pipeline.readout_delay
        given = {key: value for key, value in overrides.items() if value is not None}
        if "step_solver" in given and bias != "step":
            raise UsageError(f"--step-solver applies to the per-step bias; --calibration {calibration} has none")
        settings.update(given)
        return cls(**settings)

    @property
    def bias_images(self) -> int:
        """Calibration images the bias pass takes first (0 without a bias); an automatic
        readout delay is chosen on the ones after them, so a calibration set needs more."""
        return self.bias_samples if self.bias != "none" else 0

    def to_dict(self) -> dict:
        return {
            "mode": self.mode.to_dict(),
            "channel_wise": self.channel_wise,
            "v_init": self.v_init,
            "maxpool": self.maxpool,
            "hybrid": self.hybrid,
            "percentile_of": self.percentile_of,
            "T": self.T,
            "threshold": self.threshold,
            "bias": self.bias,
            "bias_samples": self.bias_samples,
            "step_solver": self.step_solver,
            "threshold_scale": self.threshold_scale,
            "readout_delay": self.readout_delay,
            "delay_samples": self.delay_samples,
        }


@dataclass
class LayerReport:
    """One converted activation."""

    name: str
    kind: str  # "IF", "IF clip 6", or "analog <op>"
    neurons: int
    max: float | None  # calibration max; None for an analog layer (not observed)
    scale: float  # the layer's scale (mean over channels when channel-wise)
    clipped_fraction: float  # share of calibration activations above the scale
    spiking: bool
    scales: list[float] = field(default_factory=list)  # one per channel when channel-wise, else [scale]
    scale_rule: str = ""  # how the scale was chosen, fallbacks included (see _layer_scale)


@dataclass
class ConversionReport:
    """Per-layer conversion summary (the table ``annsnn convert`` prints)."""

    options: dict
    layers: list[LayerReport] = field(default_factory=list)
    analog: list[str] = field(default_factory=list)
    folded_batchnorm: list[str] = field(default_factory=list)
    reordered_maxpool: list[str] = field(default_factory=list)
    rescale_synapses: list[str] = field(default_factory=list)
    calibration_samples: int = 0
    notes: list[str] = field(default_factory=list)
    # set by ann_to_snn: the canonical ANN (the SNN's reference, ``snn.ann``) was checked
    # equal to the user's model on the first calibration batch
    equivalence: Equivalence | None = None

    @property
    def neurons(self) -> int:
        return sum(layer.neurons for layer in self.layers if layer.spiking)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["neurons"] = self.neurons
        if self.equivalence is not None:
            data["equivalence"]["relative_deviation"] = self.equivalence.relative_deviation
        return data


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


# ---------------------------------------------------------------------------
# scale helpers


def _sample_shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise UsageError(f"unsupported op {node.name}: its output is not a single tensor")
    return tuple(meta.shape)


def _shape(node: fx.Node) -> tuple[int, ...]:
    return _sample_shape(node)


def _channel_vector(scale: Scale, node: fx.Node, dim: int = 1) -> Tensor:
    """One scale per channel along ``dim`` (dim -1 for Linear); error naming ``node`` if it
    varies inside a channel. An always-zero (free) channel gets 1."""
    try:
        return scale.channel_values(_shape(node), dim)
    except ScaleError:
        raise UsageError(f"cannot fold scales into {node.name}: its input scale varies within a channel") from None


def _same(scale: Scale, other: Scale, node: fx.Node) -> bool:
    return scale.equal(other, _shape(node))


# ---------------------------------------------------------------------------
# conversion context and handlers


@dataclass
class _Context:
    gm: fx.GraphModule
    modules: dict[str, nn.Module]
    options: ConversionOptions
    lam: dict[str, Scale]  # activation module name -> its neurons' scale
    demand: dict[fx.Node, Scale]
    scale: dict[fx.Node, Scale] = field(default_factory=dict)
    kind: dict[fx.Node, str] = field(default_factory=dict)  # analog | current | spike
    report: ConversionReport | None = None
    rescale_count: int = 0
    parts: dict[fx.Node, tuple[Scale, ...]] = field(default_factory=dict)  # scales of chunk/split outputs
    registry: OpRegistry = field(default_factory=default_registry)

    def insert_rescale(self, user: fx.Node, source: fx.Node, target: Scale, why: str) -> fx.Node:
        """Put a :class:`Rescale` between ``source`` and ``user`` that brings ``source``'s
        value to scale ``target``: factor ``f = s_source / s_target`` (0-d when it is one
        number on the positions that are not always zero)."""
        shape = _shape(source)
        current = self.scale[source]
        factor = current.ratio(target, shape).to_factor(shape)
        self.rescale_count += 1
        name = f"rescale_{self.rescale_count}"
        self.gm.add_submodule(name, Rescale(factor))
        with self.gm.graph.inserting_before(user):
            node = self.gm.graph.call_module(name, (source,))
        node.meta["tensor_meta"] = source.meta.get("tensor_meta")
        user.replace_input_with(source, node)
        self.kind[node] = self.kind[source]
        self.scale[node] = target.with_free(current.free_full(shape), shape) if current.free is not None else target
        assert self.report is not None
        self.report.rescale_synapses.append(f"{name}: {_label(source)} -> {_label(user)} ({why})")
        return node


Handler = Callable[[_Context, fx.Node], None]


def _input_nodes(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes]


def _h_weight(ctx: _Context, node: fx.Node) -> None:
    layer = ctx.modules[str(node.target)]
    src = node.args[0]
    assert isinstance(src, fx.Node)
    linear = isinstance(layer, nn.Linear)
    s_in = _channel_vector(ctx.scale[src], src, dim=-1 if linear else 1).double()
    out_ch = layer.out_features if linear else layer.out_channels
    demanded = ctx.demand.get(node)
    s_out = _channel_vector(demanded, node, dim=-1 if linear else 1).double() if demanded is not None else torch.ones(out_ch, dtype=torch.float64)
    with torch.no_grad():
        w = layer.weight.double()
        if linear:
            w = w * s_in.view(1, -1) / s_out.view(-1, 1)
        else:
            groups = layer.groups
            per_group_in = layer.in_channels // groups
            per_group_out = out_ch // groups
            group_of_out = torch.arange(out_ch) // per_group_out
            in_index = group_of_out.view(-1, 1) * per_group_in + torch.arange(per_group_in).view(1, -1)
            factor = s_in[in_index] / s_out.view(-1, 1)
            w = w * factor.view(out_ch, per_group_in, *([1] * (w.dim() - 2)))
        layer.weight.copy_(w.to(layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_((layer.bias.double() / s_out).to(layer.bias.dtype))
    ctx.scale[node] = Scale.channel(s_out, -1 if linear else 1).simplest(_shape(node))
    ctx.kind[node] = "current"


def _h_neuron(ctx: _Context, node: fx.Node) -> None:
    name = str(node.target)
    src = node.args[0]
    assert isinstance(src, fx.Node)
    lam = ctx.lam[name]
    if not _same(ctx.scale[src], lam, src):
        src = ctx.insert_rescale(node, src, lam, "scale of the neuron it feeds")
    ctx.gm.set_submodule(name, IFNeurons(ctx.options.v_init))
    ctx.scale[node] = lam
    ctx.kind[node] = "spike"


def _h_analog(ctx: _Context, node: fx.Node, constants: set[fx.Node]) -> None:
    """Keep ``node`` analog (hybrid): an :class:`~annsnn.analog.AnalogOp` on the running rates
    of its inputs; each time-varying input carries its scale into the op, whose output is in
    ANN units (scale 1). A tuple-valued op becomes one AnalogOp per element used."""
    call = analog_call(node, ctx.modules, constants, ctx.registry)
    streams = [a in ctx.scale for a in call.inputs]
    scales: list[Tensor | None] = []
    for a, is_stream in zip(call.inputs, streams):
        if not is_stream:
            scales.append(None)
            continue
        shape = _shape(a)
        scale = ctx.scale[a]  # free (always-zero) positions get factor 1: their value is 0 anyway
        scales.append(None if _same(scale, Scale.one(), a) else scale.to_factor(shape))
    consts = [_fetch_attr(ctx.gm, str(c.target)) for c in call.consts]
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, (tuple, list)) and not isinstance(meta, TensorMetadata):
        users = list(node.users)
        if not all(u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int) for u in users):
            raise UsageError(f"unsupported op {node.name}: a tuple-valued analog op whose result is used whole")
        targets = [(u, u.args[1]) for u in users]
    else:
        targets = [(node, None)]
    single_use = node.op == "call_module" and len(targets) == 1 and sum(
        1 for n in ctx.gm.graph.nodes if n.op == "call_module" and n.target == node.target
    ) == 1
    for target, select in targets:
        op = call.op
        if single_use:
            name = str(node.target)
        else:
            name = _unique_name(ctx.gm, f"analog_{target.name}")
            op = copy.deepcopy(op) if isinstance(op, nn.Module) else op
        module = AnalogOp(op, call.kind, call.template, streams, scales, consts, select, registry=ctx.registry)
        if single_use:
            ctx.gm.set_submodule(name, module)
        else:
            ctx.gm.add_submodule(name, module)
        with ctx.gm.graph.inserting_before(target):
            new = ctx.gm.graph.call_module(name, tuple(call.inputs))
        new.meta["tensor_meta"] = target.meta.get("tensor_meta")
        target.replace_all_uses_with(new)
        if target is not node:
            ctx.gm.graph.erase_node(target)
        ctx.scale[new] = Scale.one()
        ctx.kind[new] = "analog"
        assert ctx.report is not None
        ctx.report.analog.append(f"{name} ({module.target})")
    ctx.gm.graph.erase_node(node)


def _fetch_attr(gm: fx.GraphModule, target: str) -> Tensor:
    value: object = gm
    for part in target.split("."):
        value = getattr(value, part)
    if not isinstance(value, Tensor):
        raise UsageError(f"unsupported op: stored attribute {target} is not a tensor")
    return value.detach()


def _delete_attr(gm: fx.GraphModule, target: str) -> None:
    *path, last = target.split(".")
    owner: nn.Module = gm.get_submodule(".".join(path)) if path else gm
    if last in owner._parameters:
        del owner._parameters[last]
    elif last in owner._buffers:
        del owner._buffers[last]


def _unique_name(gm: fx.GraphModule, base: str) -> str:
    name, k = base.replace(".", "_"), 1
    candidate = name
    while hasattr(gm, candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def _h_normalize(ctx: _Context, node: fx.Node) -> None:
    src = node.args[0]
    if not isinstance(src, fx.Node) or ctx.kind.get(src) != "analog" or not _same(ctx.scale[src], Scale.one(), src):
        raise UsageError(f"unsupported op {node.name}: input normalization inside the network")
    ctx.scale[node] = Scale.one()
    ctx.kind[node] = "analog"


def _h_maxpool(ctx: _Context, node: fx.Node) -> None:
    pool = ctx.modules[str(node.target)]
    src = node.args[0]
    assert isinstance(src, fx.Node)
    _channel_vector(ctx.scale[src], src)  # a pool needs one scale per channel
    if ctx.kind[src] == "spike":
        if not _binary_spikes(ctx, src):
            raise UsageError(f"unsupported layer {node.target}: max-pool of non-binary spike input (a sum or rescaling of spike trains); try --maxpool avg")
        ctx.gm.set_submodule(str(node.target), SpikingMaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode))
    elif ctx.kind[src] == "current":
        raise UsageError(f"unsupported layer {node.target}: max-pool of membrane currents (not followed by a ReLU); try --maxpool avg")
    _h_commute(ctx, node)


def _binary_spikes(ctx: _Context, node: fx.Node) -> bool:
    """Whether ``node`` carries {0, 1} spikes: a neuron's output moved only by ops that
    copy values (reshape, pad, cat, flatten, spiking max-pool). A sum or a rescaling of
    spike trains is not binary, and a spiking max-pool on it would be counted wrongly."""
    if node.op == "call_module":
        module = ctx.gm.get_submodule(str(node.target))
        if isinstance(module, IFNeurons):
            return True
        spec = ctx.registry.for_module(module)
    else:
        spec = ctx.registry.lookup(node, {})
    if spec is None or not spec.copies_spikes:
        return False
    sources = [a for a in node.all_input_nodes if a in ctx.kind]
    return bool(sources) and all(_binary_spikes(ctx, a) for a in sources)


def _h_commute(ctx: _Context, node: fx.Node) -> None:
    """Ops that commute with a positive scale: evaluate the op on the scale tensor."""
    tensor_inputs = [a for a in _input_nodes(node) if a in ctx.scale]
    if node.op == "call_module" and (ctx.registry.has_role(ctx.modules[str(node.target)], Role.POOL) or isinstance(ctx.modules[str(node.target)], SpikingMaxPool2d)):
        # pool(s * x) = s * pool(x) for a per-channel s: the scale passes through
        src = tensor_inputs[0]
        _channel_vector(ctx.scale[src], src)  # error naming the node if not per channel
        ctx.scale[node] = ctx.scale[src].per_channel(_shape(src), 1).simplest(_shape(node))
    else:
        ctx.scale[node] = _evaluate_on_scales(ctx, node)
    kinds = {ctx.kind[a] for a in tensor_inputs}
    ctx.kind[node] = "current" if "current" in kinds else ("analog" if "analog" in kinds else "spike")


def _h_mean(ctx: _Context, node: fx.Node) -> None:
    """``mean(s * x) = s * mean(x)`` over dims where ``s`` is constant; across channels only
    for one scale. Always-zero positions count in the mean like any zero."""
    src = node.args[0]
    assert isinstance(src, fx.Node)
    shape = _shape(src)
    _channel_vector(ctx.scale[src], src)
    scale = ctx.scale[src].per_channel(shape, 1)
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = list(range(len(shape))) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    if 1 % len(shape) in [d % len(shape) for d in dims] and len(shape) > 1:
        if not scale.is_scalar(shape):
            raise UsageError(f"unsupported op {node.name}: mean across channels that carry different scales")
        ctx.scale[node] = Scale.tensor(scale.scalar(shape))
    else:
        ctx.scale[node] = _evaluate_on_scales(ctx, node, {src: scale})
    ctx.kind[node] = ctx.kind[src]


def _h_add(ctx: _Context, node: fx.Node) -> None:
    inputs = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    if len(inputs) != 2 or node.kwargs.get("alpha", 1) != 1:
        raise UsageError(f"unsupported op {node.name}: only the sum of two tensors is supported")
    shape = _shape(node)
    a, b = (ctx.scale[src] for src in inputs)
    if any(tuple(_shape(src)) != tuple(shape) for src in inputs):
        raise UsageError(f"unsupported op {node.name}: a sum that broadcasts its operands")
    # the demanded scale, else the first operand's where it is not always zero, else the second's:
    # never a scale taken from padding, whatever the order of the operands
    demanded = ctx.demand.get(node)
    target = demanded if demanded is not None else a.merge(b, shape)
    for src in inputs:
        if not _same(ctx.scale[src], target, node):
            ctx.insert_rescale(node, src, target, "residual branch rescaled to the add's scale")
    both_free = a.free_full(shape) & b.free_full(shape)
    ctx.scale[node] = target.with_free(both_free, shape) if bool(both_free.any()) else target
    kinds = {ctx.kind[a] for a in node.all_input_nodes}
    ctx.kind[node] = "current" if "current" in kinds else ("analog" if "analog" in kinds else "spike")


def _h_scalar_mul(ctx: _Context, node: fx.Node, divide: bool = False) -> None:
    """``c * x`` (or ``x / c``): the value scales, the scale does not, ``c * (s x) = s (c x)``."""
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    numbers = [a for a in node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(tensors) != 1 or len(numbers) != 1 or node.kwargs or (divide and node.args[0] is not tensors[0]):
        raise UsageError(f"unsupported op {node.name}: multiplication other than by a constant")
    ctx.scale[node] = ctx.scale[tensors[0]]
    ctx.kind[node] = ctx.kind[tensors[0]]


def _h_scalar_div(ctx: _Context, node: fx.Node) -> None:
    """``x / c``: as :func:`_h_scalar_mul`; a constant divided by a tensor is refused."""
    _h_scalar_mul(ctx, node, divide=True)


def _h_size(ctx: _Context, node: fx.Node) -> None:
    """``x.size(d)``, ``x.dim()``, ``x.shape``: no scale; the value (at batch 1) is kept for
    the ops that read it, computed on the input's scale tensor (same shape)."""
    src = node.args[0]
    assert isinstance(src, fx.Node)
    full = ctx.scale[src].full(_shape(src))
    if node.op == "call_method":
        node.meta["value_on_scale"] = getattr(full, str(node.target))(*node.args[1:])
    else:
        node.meta["value_on_scale"] = node.target(full, *node.args[1:])  # type: ignore[operator]


def _h_split(ctx: _Context, node: fx.Node) -> None:
    """``x.chunk(2, dim)`` and friends: a tuple of views, each with its part of the scale."""
    src = node.args[0]
    assert isinstance(src, fx.Node)
    shape = _shape(src)
    rest = fx.node.map_arg(node.args[1:], lambda a: a.meta.get("value_on_scale"))
    kwargs = fx.node.map_arg(node.kwargs, lambda a: a.meta.get("value_on_scale"))

    def split(full: Tensor) -> tuple[Tensor, ...]:
        with torch.no_grad():
            return tuple(getattr(full, str(node.target))(*rest, **kwargs) if node.op == "call_method" else node.target(full, *rest, **kwargs))  # type: ignore[operator]

    values = split(ctx.scale[src].full(shape).clone())
    frees = split(ctx.scale[src].free_full(shape).float())
    ctx.parts[node] = tuple(Scale.element(v, f > 0.5).simplest(tuple(v.shape)) for v, f in zip(values, frees))
    ctx.kind[node] = ctx.kind[src]


def _h_value(node: fx.Node) -> None:
    """A node computed from sizes only: its value (at batch 1) is kept for the ops that read it."""

    def value(a: fx.Node) -> object:
        return a.meta.get("value_on_scale")

    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    if node.op == "call_method":
        node.meta["value_on_scale"] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
    else:
        node.meta["value_on_scale"] = node.target(*args, **kwargs)  # type: ignore[operator]


def _evaluate_on_scales(ctx: _Context, node: fx.Node, override: dict[fx.Node, Scale] | None = None) -> Scale:
    """The scale of an op that moves, copies or zero-pads values: run the op once on the
    scale values and once on the always-zero (free) masks; zero padding adds free positions."""
    scales = dict(ctx.scale)
    scales.update(override or {})

    def run(part: str):
        def sub(a):
            if isinstance(a, fx.Node):
                if a in scales:
                    shape = _shape(a)
                    return scales[a].full(shape).clone() if part == "value" else scales[a].free_full(shape).float()
                return a.meta.get("value_on_scale")
            return a

        args = fx.node.map_aggregate(node.args, sub)
        kwargs = dict(fx.node.map_aggregate(node.kwargs, sub))
        if node.op == "call_function" and node.target is F.pad:
            mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
            if mode != "constant":
                raise UsageError(f"unsupported op {node.name}: pad mode {mode!r} (only zero padding)")
            value = kwargs.get("value", args[3] if len(args) > 3 else 0.0)
            if value not in (None, 0, 0.0):
                raise UsageError(f"unsupported op {node.name}: padding with {value} (only zero padding)")
            args = args[:2]
            kwargs = {"value": 1.0}  # a placeholder scale; and in the mask: free
        with torch.no_grad():
            if node.op == "call_module":
                out = ctx.modules[str(node.target)](*args, **kwargs)
            elif node.op == "call_method":
                out = getattr(args[0], str(node.target))(*args[1:], **kwargs)
            else:
                out = node.target(*args, **kwargs)  # type: ignore[operator]
        if not isinstance(out, Tensor):
            raise UsageError(f"unsupported op {node.name}: it does not return a tensor")
        return out

    value, free = run("value"), run("free")
    try:
        return Scale.element(value.float(), free > 0.5).simplest(tuple(value.shape))
    except ScaleError as exc:
        raise UsageError(f"unsupported op {node.name}: it does not only move values ({exc})") from None


def default_handlers(registry: OpRegistry | None = None) -> dict[object, Handler]:
    """Layer type (module class, function, or method name) -> conversion handler: a view of
    the ``convert`` rules of ``registry`` (default: :func:`annsnn.ops.default_registry`)."""
    registry = registry if registry is not None else default_registry()
    handlers: dict[object, Handler] = {}
    for spec in registry.specs():
        if spec.convert is None:
            continue
        for key in (*spec.modules, *(fn for _, fn in spec.functions), *spec.methods):
            handlers[key] = spec.convert
    return handlers


def _handler_key(node: fx.Node, modules: dict[str, nn.Module]) -> object:
    if node.op == "call_module":
        return type(modules[str(node.target)])
    return node.target


def _push_demand(ctx_demand: dict[fx.Node, Scale], conflicts: set[fx.Node], node: object, scale: Scale, modules: dict[str, nn.Module], registry: OpRegistry) -> None:
    """Let ``node`` (and, through sums, pools and reshapes, the ops before it) produce
    ``scale``, so a weight layer absorbs it; each op's :class:`~annsnn.ops.Demand` says how."""
    if not isinstance(node, fx.Node) or node in conflicts:
        return
    if node in ctx_demand:
        if not _same(ctx_demand[node], scale, node):
            del ctx_demand[node]
            conflicts.add(node)
        return
    if len(node.users) != 1:
        return
    spec = registry.lookup(node, modules)
    demand = spec.demand if spec is not None else Demand.STOP
    if demand is Demand.ABSORB:
        ctx_demand[node] = scale
    elif demand is Demand.OPERANDS:
        ctx_demand[node] = scale
        for a in node.args[:2]:
            _push_demand(ctx_demand, conflicts, a, scale, modules, registry)
    elif demand is Demand.CHANNEL or (demand is Demand.SCALAR and scale.granularity == "tensor"):
        _push_demand(ctx_demand, conflicts, node.args[0], scale, modules, registry)


def _layer_scale(observer: ActivationObserver, options: ConversionOptions, ceiling: float | None, shape: tuple[int, ...]) -> tuple[Tensor, list[str]]:
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
        value = if_thresholds(observer, options.T, channel_wise, ceiling) * options.threshold_scale
        layer_theta = float(if_thresholds(observer, options.T, False, ceiling)) * options.threshold_scale if float(observer.max_val) > 0 else 1.0
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
    if channel_wise:
        view = [1] * (len(shape) - 1)
        view[0] = -1
        value = value.view(view)
    return value.float().cpu(), notes


def convert(
    calibrator: Calibrator,
    options: ConversionOptions,
    input_shape: tuple[int, ...],
    handlers: dict[object, Handler] | None = None,
    *,
    registry: OpRegistry | None = None,
) -> tuple[fx.GraphModule, ConversionReport]:
    """Build the SNN graph (on merged ``[T*B, ...]`` tensors) and its report.

    Each op converts by the ``convert`` rule of its entry in ``registry`` (default: the one
    the model was canonicalized with); ``handlers`` (key -> handler) overrides entries.
    """
    canonical = calibrator.canonical
    registry = registry if registry is not None else canonical.registry
    gm = copy.deepcopy(canonical.module).to("cpu").eval()  # folding runs on the CPU; the observers stay where they ran
    ShapeProp(gm).propagate(torch.zeros(1, *input_shape, device="cpu"))
    modules = dict(gm.named_modules())
    report = ConversionReport(
        options=options.to_dict(),
        analog=[],
        folded_batchnorm=list(canonical.folded_bn),
        reordered_maxpool=list(canonical.reordered_pools),
        calibration_samples=calibrator.samples,
    )
    if calibrator.samples == 0:
        raise UsageError("no calibration data was observed; calibrate before converting")
    report.notes.extend(f"module called at several sites, one copy per site: {item}" for item in canonical.copied_modules)
    report.notes.extend(f"{item}: parametrized weight (e.g. weight_norm) made a plain weight" for item in canonical.materialized)
    lam: dict[str, Scale] = {}
    thresholds: dict[str, Tensor] = {}  # the same scales as plain tensors, for the calibration passes
    act_nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in canonical.activations}
    for name in canonical.activations:
        node = act_nodes[name]
        observer = calibrator.observers[name]
        clip = modules[name].ceiling  # type: ignore[union-attr]
        shape = _sample_shape(node)
        value, notes = _layer_scale(observer, options, clip, shape)
        lam[name] = Scale.channel(value.flatten(), 1) if options.channel_wise else Scale.tensor(value)
        thresholds[name] = value  # 0-d, or [C, 1, ...] broadcasting over a sample
        report.notes.extend(f"{name}: {n}" for n in notes)
        layer_scale = float(value.mean())
        clipped = observer.fraction_above(layer_scale) if not options.channel_wise else _channel_clipped(observer, value.flatten())
        population = "" if options.mode.kind != "percentile" else f" of {options.percentile_of} values"
        chosen = f"IF error search at T={options.T}" if options.threshold == "if-search" else f"{options.mode}{population}"
        rule = f"{chosen}{' per channel' if options.channel_wise else ''}"
        report.layers.append(
            LayerReport(
                name=name,
                kind="IF" if clip is None else f"IF clip {clip:g}",
                neurons=int(torch.tensor(shape[1:]).prod()),
                max=float(observer.max_val),
                scale=layer_scale,
                clipped_fraction=clipped,
                spiking=True,
                scales=[float(v) for v in value.flatten()],
                scale_rule="; ".join([rule] + notes),
            )
        )

    demand: dict[fx.Node, Scale] = {}
    conflicts: set[fx.Node] = set()
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if not isinstance(output.args[0], fx.Node):
        raise UsageError("unsupported model: it must return a single tensor")
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target) in lam:
            _push_demand(demand, conflicts, node.args[0], lam[str(node.target)], modules, registry)
        elif node.op == "call_module" and _is_analog_activation(registry, modules[str(node.target)]):
            _push_demand(demand, conflicts, node.args[0], Scale.one(), modules, registry)
    _push_demand(demand, conflicts, output.args[0], Scale.one(), modules, registry)
    # an add that feeds no neuron takes the scale of a spiking input, so the other
    # branch's weight layer can absorb the rescale instead of a per-step multiply
    for node in gm.graph.nodes:
        spec = registry.lookup(node, modules)
        if spec is not None and spec.role is Role.ADD and node not in demand and node not in conflicts:
            spiking = [a for a in node.args[:2] if isinstance(a, fx.Node) and a.op == "call_module" and str(a.target) in lam]
            if spiking:
                scale = lam[str(spiking[0].target)]
                demand[node] = scale
                for a in node.args[:2]:
                    if a is not spiking[0]:
                        _push_demand(demand, conflicts, a, scale, modules, registry)

    ctx = _Context(gm=gm, modules=modules, options=options, lam=lam, demand=demand, report=report, registry=registry)
    unsupported: list[str] = []
    constants: set[fx.Node] = set()  # stored tensors used in forward (hybrid: analog-op inputs)
    blocked: set[fx.Node] = set()  # an unsupported op and what depends on it: no scale to work with
    for node in list(gm.graph.nodes):
        if getattr(node, "_erased", False):
            continue  # replaced by an analog op
        if any(a in blocked for a in node.all_input_nodes):
            blocked.add(node)
            continue
        if node.op == "placeholder":
            ctx.scale[node] = Scale.one()
            ctx.kind[node] = "analog"
            continue
        if node.op == "output":
            src = node.args[0]
            if not _same(ctx.scale[src], Scale.one(), src):
                ctx.insert_rescale(node, src, Scale.one(), "output in ANN units")
            continue
        if node.op == "get_attr":
            if not options.hybrid:
                raise UsageError(f"unsupported op {node.name}: a stored tensor used inside forward ({node.target}); pass --hybrid to keep the ops that use it analog")
            constants.add(node)
            continue
        spec = registry.lookup(node, modules)
        if spec is not None and spec.role is Role.SIZE and isinstance(node.args[0], fx.Node) and node.args[0] in ctx.scale:
            spec.convert(ctx, node)  # type: ignore[misc]
            continue
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] in ctx.parts:
            src = node.args[0]
            ctx.scale[node] = ctx.parts[src][node.args[1]]  # type: ignore[index]
            ctx.kind[node] = ctx.kind[src]  # type: ignore[index]
            continue
        if spec is not None and spec.role is Role.SPLIT and isinstance(node.args[0], fx.Node) and node.args[0] in ctx.scale:
            spec.convert(ctx, node)  # type: ignore[misc]
            continue
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] not in ctx.scale and node.args[0] not in constants:
            node.meta["value_on_scale"] = node.args[0].meta.get("value_on_scale")[node.args[1]]  # type: ignore[union-attr,index]
            continue
        if options.hybrid and is_analog(node, modules, set(ctx.scale), constants, registry):
            _h_analog(ctx, node, constants)
            continue
        if node.op in ("call_function", "call_method") and not any(a in ctx.scale or a in constants for a in node.all_input_nodes):
            _h_value(node)  # arithmetic on sizes (``n * heads``): no tensor, no scale
            continue
        key = _handler_key(node, modules)
        handler = handlers.get(key) if handlers is not None and key in handlers else (spec.convert if spec is not None else None)
        if handler is None:
            unsupported.append(_describe_key(node, key))
            blocked.add(node)
            continue
        handler(ctx, node)
    if unsupported:
        raise UsageError("unsupported op(s) for conversion: " + ", ".join(unsupported))
    for node in list(gm.graph.nodes):
        if node.op == "get_attr":
            if node.users:
                users = ", ".join(u.name for u in node.users)
                raise UsageError(f"unsupported op(s) {users}: use the stored tensor {node.target} without an analog form")
            gm.graph.erase_node(node)
            _delete_attr(gm, str(node.target))  # it lives on inside the analog ops that use it
    gm.delete_all_unused_submodules()

    for node in gm.graph.nodes:  # one row per analog op kept (hybrid): no neurons, no max, ANN units
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, AnalogOp):
            report.layers.append(LayerReport(name=str(node.target), kind=f"analog {module.target}", neurons=0, max=None, scale=1.0, clipped_fraction=0.0, spiking=False))
    neurons = sum(1 for m in gm.modules() if isinstance(m, IFNeurons))
    if neurons != len(canonical.activations):
        raise UsageError(f"conversion produced {neurons} neuron layers for {len(canonical.activations)} activations")
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    encoder_name = _unique_name(gm, "encoder")  # a model may have its own "encoder" (ViT)
    gm.add_submodule(encoder_name, InputEncoder())
    with gm.graph.inserting_after(placeholder):
        enc = gm.graph.call_module(encoder_name, (placeholder,))
    placeholder.replace_all_uses_with(enc, delete_user_cb=lambda user: user is not enc)
    for node in gm.graph.nodes:
        node.meta.pop("value_on_scale", None)
    gm.graph.lint()
    gm.recompile()
    gm.meta["annsnn_thresholds"] = thresholds  # per-neuron scale (ANN units per spike), for calibration passes
    return gm, report


def _is_analog_activation(registry: OpRegistry, module: nn.Module) -> bool:
    """An activation module with no IF form (GELU, Tanh, ...): analog, in ANN units."""
    spec = registry.for_module(module)
    return spec is not None and spec.role is Role.ANALOG and spec.activation


def _channel_clipped(observer: ActivationObserver, scales: Tensor) -> float:
    """Share of all calibration values above their channel's scale (channels hold equal counts)."""
    if float(observer.total) == 0 or observer.channel_histogram.numel() == 0:
        return 0.0
    fractions = [observer.fraction_above(s, channel=c) for c, s in enumerate(scales.tolist())]
    return sum(fractions) / len(fractions)


def _describe_key(node: fx.Node, key: object) -> str:
    label = key.__name__ if hasattr(key, "__name__") else str(key)
    return f"{node.target if node.op == 'call_module' else node.name} ({label})"


def _label(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name
