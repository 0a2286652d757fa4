"""Convert a canonical ANN into a true-spike IF SNN by data-based normalization.

Every value in the SNN graph carries a *scale* ``s`` (a tensor broadcast over one
sample): the ANN value is ``s * (SNN value)``, in the rate limit. A neuron with
calibrated scale ``lambda`` emits spikes ``{0, 1}`` whose rate times ``lambda``
approximates the ANN activation. Weight layers absorb scales (Rueckauer et al.
2017): ``W' = W * s_in / s_out`` and ``b' = b / s_out``, where ``s_out`` is the
scale that the consuming neuron demands, so thresholds stay 1. Where a scale
cannot be folded (a residual shortcut carrying another layer's spikes) a
:class:`~annsnn.layers.Rescale` synapse is inserted and reported.

Conversion is a mapping from layer type to handler (:func:`default_handlers`).
"""
from __future__ import annotations

import copy
import operator
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import UsageError
from .graph import WEIGHT_LAYERS, CanonicalGraph, UNCONVERTIBLE_MODULES
from .layers import SpikingMaxPool2d, IFNeurons, InputEncoder, Normalize, ReLUClip, Rescale
from .modes import ScaleMode
from .observer import DEFAULT_BINS, ActivationObserver, PercentileOf
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
ThresholdMethod = Literal["mode", "if-search"]
BiasMethod = Literal["none", "layer", "step"]
_TOL = 1e-5


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

    def __post_init__(self) -> None:
        if self.threshold not in ("mode", "if-search"):
            raise UsageError(f"invalid threshold method {self.threshold!r}: use 'mode' or 'if-search'")
        if self.bias not in ("none", "layer", "step"):
            raise UsageError(f"invalid bias method {self.bias!r}: use 'none', 'layer' or 'step'")
        if (self.threshold != "mode" or self.bias != "none") and (self.T is None or self.T < 1):
            raise UsageError("calibration for a latency needs --T N with N >= 1")
        if self.bias_samples < 1:
            raise UsageError(f"invalid bias samples {self.bias_samples}: use at least 1")
        if not 0.0 <= self.v_init < 1.0:
            raise UsageError(f"invalid --v-init {self.v_init}: use a fraction of the threshold in [0, 1)")
        if self.maxpool not in ("spiking", "avg"):
            raise UsageError(f"invalid --maxpool {self.maxpool!r}: use 'spiking' or 'avg'")
        if self.percentile_of not in ("positive", "all"):
            raise UsageError(f"invalid --percentile-of {self.percentile_of!r}: use 'positive' or 'all'")

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
        }


@dataclass
class LayerReport:
    """One converted activation."""

    name: str
    kind: str  # "IF", "IF clip 6", or "analog <type>"
    neurons: int
    max: float
    scale: float  # the layer's scale (mean over channels when channel-wise)
    clipped_fraction: float  # share of calibration activations above the scale
    spiking: bool


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

    @property
    def neurons(self) -> int:
        return sum(layer.neurons for layer in self.layers if layer.spiking)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["neurons"] = self.neurons
        return data


class Calibrator:
    """The canonical ANN with an :class:`ActivationObserver` after every activation.

    Run batches through :meth:`observe` once; then :func:`convert` may read any mode.
    """

    def __init__(self, canonical: CanonicalGraph, *, channel_wise: bool = False, bins: int = DEFAULT_BINS) -> None:
        self.canonical = canonical
        self.module = copy.deepcopy(canonical.module).eval()
        self.observers: dict[str, ActivationObserver] = {}
        self.samples = 0
        graph = self.module.graph
        for node in list(graph.nodes):
            if node.op == "call_module" and str(node.target) in canonical.activations:
                obs_name = f"{node.target}__observer"
                observer = ActivationObserver(bins=bins, channel_wise=channel_wise)
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


def _full(scale: Tensor, node: fx.Node) -> Tensor:
    """Scale expanded to the node's shape with batch 1 (a view)."""
    shape = _sample_shape(node)
    return scale.reshape(scale.shape).expand(shape) if scale.dim() == len(shape) else scale.expand(shape[1:]).unsqueeze(0).expand(shape)


def _nan_equal(a: Tensor, b: Tensor) -> bool:
    a, b = torch.broadcast_tensors(a, b)
    mask = ~(torch.isnan(a) | torch.isnan(b))
    if not bool(mask.any()):
        return True
    return bool(torch.allclose(a[mask], b[mask], rtol=_TOL, atol=0.0))


def _channel_vector(scale: Tensor, node: fx.Node, dim: int = 1) -> Tensor:
    """One scale per channel along ``dim`` (dim -1 for Linear); error if it varies inside a channel."""
    full = _full(scale, node)
    moved = full.movedim(dim, 0).reshape(full.shape[dim], -1)
    hi = torch.nan_to_num(moved, nan=-float("inf")).amax(1)
    lo = torch.nan_to_num(moved, nan=float("inf")).amin(1)
    empty = torch.isinf(hi)
    hi = torch.where(empty, torch.ones_like(hi), hi)
    lo = torch.where(empty, torch.ones_like(lo), lo)
    if not bool(torch.allclose(lo, hi, rtol=_TOL, atol=0.0)):
        raise UsageError(f"cannot fold scales into {node.name}: its input scale varies within a channel")
    return hi


def _is_scalar(scale: Tensor) -> bool:
    finite = scale[~torch.isnan(scale)]
    return finite.numel() == 0 or bool(torch.allclose(finite, finite.flatten()[0].expand_as(finite), rtol=_TOL, atol=0))


# ---------------------------------------------------------------------------
# conversion context and handlers


@dataclass
class _Context:
    gm: fx.GraphModule
    modules: dict[str, nn.Module]
    options: ConversionOptions
    lam: dict[str, Tensor]  # activation module name -> scale (broadcast over a sample)
    demand: dict[fx.Node, Tensor]
    scale: dict[fx.Node, Tensor] = field(default_factory=dict)
    kind: dict[fx.Node, str] = field(default_factory=dict)  # analog | current | spike
    report: ConversionReport | None = None
    rescale_count: int = 0

    def insert_rescale(self, user: fx.Node, source: fx.Node, factor: Tensor, why: str) -> fx.Node:
        factor = torch.nan_to_num(factor, nan=0.0)
        if _is_scalar(factor):
            factor = factor[~torch.isnan(factor)].flatten()[:1].reshape(()) if factor.numel() else torch.tensor(1.0)
        else:
            factor = factor.squeeze(0) if factor.dim() > 1 and factor.shape[0] == 1 else factor
        self.rescale_count += 1
        name = f"rescale_{self.rescale_count}"
        self.gm.add_submodule(name, Rescale(factor))
        with self.gm.graph.inserting_before(user):
            node = self.gm.graph.call_module(name, (source,))
        node.meta["tensor_meta"] = source.meta.get("tensor_meta")
        user.replace_input_with(source, node)
        self.kind[node] = self.kind[source]
        self.scale[node] = self.scale[source] / torch.where(factor == 0, torch.ones_like(factor), factor)
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
    shape = [1] * (len(_sample_shape(node)) - 1)
    if linear:
        shape[-1] = out_ch
    else:
        shape[0] = out_ch
    ctx.scale[node] = s_out.float().view(shape)
    ctx.kind[node] = "current"


def _h_neuron(ctx: _Context, node: fx.Node) -> None:
    name = str(node.target)
    src = node.args[0]
    assert isinstance(src, fx.Node)
    lam = ctx.lam[name]
    if not _nan_equal(_full(ctx.scale[src], src), _full(lam, src)):
        ratio = _full(ctx.scale[src], src) / _full(lam, src)
        src = ctx.insert_rescale(node, src, ratio, "scale of the neuron it feeds")
    ctx.gm.set_submodule(name, IFNeurons(ctx.options.v_init))
    ctx.scale[node] = lam.float()
    ctx.kind[node] = "spike"


def _h_analog_activation(ctx: _Context, node: fx.Node) -> None:
    src = node.args[0]
    assert isinstance(src, fx.Node)
    one = torch.ones(())
    if not _nan_equal(_full(ctx.scale[src], src), one):
        ctx.insert_rescale(node, src, _full(ctx.scale[src], src), "analog activation needs ANN units")
    ctx.scale[node] = one
    ctx.kind[node] = "analog"


def _h_normalize(ctx: _Context, node: fx.Node) -> None:
    src = node.args[0]
    if not isinstance(src, fx.Node) or ctx.kind.get(src) != "analog" or not _nan_equal(ctx.scale[src], torch.ones(())):
        raise UsageError(f"unsupported op {node.name}: input normalization inside the network")
    ctx.scale[node] = torch.ones(())
    ctx.kind[node] = "analog"


def _h_maxpool(ctx: _Context, node: fx.Node) -> None:
    pool = ctx.modules[str(node.target)]
    src = node.args[0]
    assert isinstance(src, fx.Node)
    _channel_vector(ctx.scale[src], src)  # a pool needs one scale per channel
    if ctx.kind[src] == "spike":
        ctx.gm.set_submodule(str(node.target), SpikingMaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode))
    elif ctx.kind[src] == "current":
        raise UsageError(f"unsupported layer {node.target}: max-pool of membrane currents (not followed by a ReLU); try --maxpool avg")
    _h_commute(ctx, node)


def _h_commute(ctx: _Context, node: fx.Node) -> None:
    """Ops that commute with a positive scale: evaluate the op on the scale tensor."""
    tensor_inputs = [a for a in _input_nodes(node) if a in ctx.scale]
    if node.op == "call_module" and isinstance(ctx.modules[str(node.target)], (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.MaxPool2d, SpikingMaxPool2d)):
        # pool(s * x) = s * pool(x) for a per-channel s: the scale passes through
        src = tensor_inputs[0]
        channels = _channel_vector(ctx.scale[src], src)
        shape = [1] * (len(_sample_shape(node)) - 1)
        shape[0] = -1
        ctx.scale[node] = channels.float().view(shape)
    else:
        ctx.scale[node] = _evaluate_on_scales(ctx, node)
    kinds = {ctx.kind[a] for a in tensor_inputs}
    ctx.kind[node] = "current" if "current" in kinds else ("analog" if "analog" in kinds else "spike")


def _h_mean(ctx: _Context, node: fx.Node) -> None:
    src = node.args[0]
    assert isinstance(src, fx.Node)
    _channel_vector(ctx.scale[src], src)
    _h_commute(ctx, node)


def _h_add(ctx: _Context, node: fx.Node) -> None:
    inputs = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    if len(inputs) != 2 or node.kwargs.get("alpha", 1) != 1:
        raise UsageError(f"unsupported op {node.name}: only the sum of two tensors is supported")
    target = ctx.demand.get(node)
    target_full = _full(target, node) if target is not None else _full(ctx.scale[inputs[0]], inputs[0])
    for src in inputs:
        src_full = _full(ctx.scale[src], src)
        if not _nan_equal(src_full, target_full):
            ctx.insert_rescale(node, src, src_full / target_full, "residual branch rescaled to the add's scale")
    ctx.scale[node] = target_full
    kinds = {ctx.kind[a] for a in node.all_input_nodes}
    ctx.kind[node] = "current" if "current" in kinds else ("analog" if "analog" in kinds else "spike")


def _h_scalar_mul(ctx: _Context, node: fx.Node) -> None:
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    numbers = [a for a in node.args if isinstance(a, (int, float))]
    if len(tensors) != 1 or len(numbers) != 1 or (node.target is operator.truediv and node.args[0] is not tensors[0]):
        raise UsageError(f"unsupported op {node.name}: multiplication other than by a constant")
    ctx.scale[node] = ctx.scale[tensors[0]]
    ctx.kind[node] = ctx.kind[tensors[0]]


def _h_passive(ctx: _Context, node: fx.Node) -> None:
    """Non-tensor helpers (``x.size(0)``): no scale."""


def _evaluate_on_scales(ctx: _Context, node: fx.Node) -> Tensor:
    def sub(a):
        if isinstance(a, fx.Node):
            if a in ctx.scale:
                return _full(ctx.scale[a], a).clone()
            return a.meta.get("value_on_scale")
        return a

    args = fx.node.map_aggregate(node.args, sub)
    kwargs = dict(fx.node.map_aggregate(node.kwargs, sub))
    if node.op == "call_function" and node.target is F.pad:
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        if mode != "constant":
            raise UsageError(f"unsupported op {node.name}: pad mode {mode!r} (only zero padding)")
        args = args[:2]
        kwargs = {"value": float("nan")}
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


_COMMUTING_FUNCTIONS = {torch.flatten, torch.reshape, operator.getitem, F.pad, torch.cat, torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute}
_COMMUTING_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute", "transpose", "expand", "clone"}
_PASSIVE_METHODS = {"size", "dim"}


def default_handlers() -> dict[object, Handler]:
    """Layer type (module class, function, or method name) -> conversion handler."""
    handlers: dict[object, Handler] = {
        nn.Conv1d: _h_weight,
        nn.Conv2d: _h_weight,
        nn.Linear: _h_weight,
        ReLUClip: _h_neuron,
        Normalize: _h_normalize,
        nn.MaxPool2d: _h_maxpool,
        nn.AvgPool1d: _h_commute,
        nn.AvgPool2d: _h_commute,
        nn.AdaptiveAvgPool1d: _h_commute,
        nn.AdaptiveAvgPool2d: _h_commute,
        nn.Flatten: _h_commute,
        operator.add: _h_add,
        torch.add: _h_add,
        operator.iadd: _h_add,
        "add": _h_add,
        "add_": _h_add,
        operator.mul: _h_scalar_mul,
        operator.truediv: _h_scalar_mul,
        torch.mean: _h_mean,
        "mean": _h_mean,
        getattr: _h_passive,
    }
    for cls in UNCONVERTIBLE_MODULES:
        handlers[cls] = _h_analog_activation
    for fn in _COMMUTING_FUNCTIONS:
        handlers[fn] = _h_commute
    for name in _COMMUTING_METHODS:
        handlers[name] = _h_commute
    for name in _PASSIVE_METHODS:
        handlers[name] = _h_passive
    return handlers


def _handler_key(node: fx.Node, modules: dict[str, nn.Module]) -> object:
    if node.op == "call_module":
        return type(modules[str(node.target)])
    return node.target


def _push_demand(ctx_demand: dict[fx.Node, Tensor], conflicts: set[fx.Node], node: object, scale: Tensor, modules: dict[str, nn.Module]) -> None:
    if not isinstance(node, fx.Node) or node in conflicts:
        return
    if node in ctx_demand:
        if not _nan_equal(ctx_demand[node], scale):
            del ctx_demand[node]
            conflicts.add(node)
        return
    if len(node.users) != 1:
        return
    key = _handler_key(node, modules)
    if key in WEIGHT_LAYERS:
        ctx_demand[node] = scale
    elif key in (operator.add, torch.add, operator.iadd, "add", "add_"):
        ctx_demand[node] = scale
        for a in node.args[:2]:
            _push_demand(ctx_demand, conflicts, a, scale, modules)
    elif key in (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d):
        _push_demand(ctx_demand, conflicts, node.args[0], scale, modules)
    elif key in (nn.Flatten, torch.flatten, "flatten", "view", "reshape", torch.reshape) and scale.numel() == 1:
        _push_demand(ctx_demand, conflicts, node.args[0], scale, modules)


def _layer_scale(observer: ActivationObserver, options: ConversionOptions, ceiling: float | None, shape: tuple[int, ...]) -> tuple[Tensor, list[str]]:
    notes: list[str] = []
    channel_wise = options.channel_wise
    if options.threshold == "if-search":
        assert options.T is not None
        value = if_thresholds(observer, options.T, channel_wise, ceiling)
    else:
        value = observer.scale(options.mode, channel_wise, options.percentile_of)
    fallback = float(observer.max_val) if float(observer.max_val) > 0 else 1.0
    if channel_wise:
        dead = observer.channel_max <= 0
        rare = (value <= 0) & ~dead  # fired, but on fewer values than the percentile skips
        if bool(dead.any()):
            notes.append(f"{int(dead.sum())} channel(s) never fired in calibration; their scale is the layer max")
            value = torch.where(dead, torch.full_like(value, fallback), value)
        if bool(rare.any()):
            notes.append(f"{int(rare.sum())} channel(s) fired too rarely for the percentile; their scale is the channel max")
            value = torch.where(rare, observer.channel_max.to(value), value)
    elif float(observer.max_val) <= 0:
        notes.append("layer never fired in calibration; scale set to 1")
        value = torch.tensor(1.0, dtype=torch.float64)
    elif float(value) <= 0:
        notes.append("layer fired too rarely for the percentile; its scale is the layer max")
        value = torch.tensor(float(observer.max_val), dtype=torch.float64)
    if ceiling is not None:
        value = value.clamp(max=ceiling)
    if channel_wise:
        view = [1] * (len(shape) - 1)
        view[0] = -1
        value = value.view(view)
    return value.float(), notes


def convert(
    calibrator: Calibrator,
    options: ConversionOptions,
    input_shape: tuple[int, ...],
    handlers: dict[object, Handler] | None = None,
) -> tuple[fx.GraphModule, ConversionReport]:
    """Build the SNN graph (on merged ``[T*B, ...]`` tensors) and its report."""
    handlers = handlers if handlers is not None else default_handlers()
    canonical = calibrator.canonical
    gm = copy.deepcopy(canonical.module).eval()
    ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
    modules = dict(gm.named_modules())
    report = ConversionReport(
        options=options.to_dict(),
        analog=list(canonical.analog),
        folded_batchnorm=list(canonical.folded_bn),
        reordered_maxpool=list(canonical.reordered_pools),
        calibration_samples=calibrator.samples,
    )
    if calibrator.samples == 0:
        raise UsageError("no calibration data was observed; calibrate before converting")
    lam: dict[str, Tensor] = {}
    act_nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in canonical.activations}
    for name in canonical.activations:
        node = act_nodes[name]
        observer = calibrator.observers[name]
        clip = modules[name].ceiling  # type: ignore[union-attr]
        shape = _sample_shape(node)
        value, notes = _layer_scale(observer, options, clip, shape)
        lam[name] = value
        report.notes.extend(f"{name}: {n}" for n in notes)
        layer_scale = float(value.mean())
        clipped = observer.fraction_above(layer_scale) if not options.channel_wise else _channel_clipped(observer, value.flatten())
        report.layers.append(
            LayerReport(
                name=name,
                kind="IF" if clip is None else f"IF clip {clip:g}",
                neurons=int(torch.tensor(shape[1:]).prod()),
                max=float(observer.max_val),
                scale=layer_scale,
                clipped_fraction=clipped,
                spiking=True,
            )
        )
    for item in canonical.analog:
        report.layers.append(LayerReport(name=item, kind="analog", neurons=0, max=float("nan"), scale=1.0, clipped_fraction=0.0, spiking=False))

    demand: dict[fx.Node, Tensor] = {}
    conflicts: set[fx.Node] = set()
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if not isinstance(output.args[0], fx.Node):
        raise UsageError("unsupported model: it must return a single tensor")
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target) in lam:
            _push_demand(demand, conflicts, node.args[0], lam[str(node.target)], modules)
        elif node.op == "call_module" and isinstance(modules[str(node.target)], UNCONVERTIBLE_MODULES):
            _push_demand(demand, conflicts, node.args[0], torch.ones(()), modules)
    _push_demand(demand, conflicts, output.args[0], torch.ones(()), modules)
    # an add that feeds no neuron takes the scale of a spiking input, so the other
    # branch's weight layer can absorb the rescale instead of a per-step multiply
    for node in gm.graph.nodes:
        if _handler_key(node, modules) in (operator.add, torch.add, operator.iadd, "add", "add_") and node not in demand and node not in conflicts:
            spiking = [a for a in node.args[:2] if isinstance(a, fx.Node) and a.op == "call_module" and str(a.target) in lam]
            if spiking:
                scale = lam[str(spiking[0].target)]
                demand[node] = scale
                for a in node.args[:2]:
                    if a is not spiking[0]:
                        _push_demand(demand, conflicts, a, scale, modules)

    ctx = _Context(gm=gm, modules=modules, options=options, lam=lam, demand=demand, report=report)
    unsupported: list[str] = []
    for node in list(gm.graph.nodes):
        if node.op == "placeholder":
            ctx.scale[node] = torch.ones(())
            ctx.kind[node] = "analog"
            continue
        if node.op == "output":
            src = node.args[0]
            if not _nan_equal(_full(ctx.scale[src], src), torch.ones(())):
                ctx.insert_rescale(node, src, _full(ctx.scale[src], src), "output in ANN units")
            continue
        if node.op == "get_attr":
            raise UsageError(f"unsupported op {node.name}: a stored tensor used inside forward ({node.target})")
        if node.op == "call_method" and node.target in _PASSIVE_METHODS:
            src = node.args[0]
            node.meta["value_on_scale"] = getattr(_full(ctx.scale[src], src), str(node.target))(*node.args[1:])
            continue
        if node.op == "call_function" and node.target is getattr:
            src = node.args[0]
            node.meta["value_on_scale"] = getattr(_full(ctx.scale[src], src), node.args[1])
            continue
        if node.op == "call_function" and node.target is operator.getitem and node.args[0] not in ctx.scale:
            node.meta["value_on_scale"] = node.args[0].meta.get("value_on_scale")[node.args[1]]  # type: ignore[union-attr,index]
            continue
        key = _handler_key(node, modules)
        handler = handlers.get(key)
        if handler is None:
            unsupported.append(_describe_key(node, key))
            continue
        handler(ctx, node)
    if unsupported:
        raise UsageError("unsupported op(s) for conversion: " + ", ".join(unsupported))

    neurons = sum(1 for m in gm.modules() if isinstance(m, IFNeurons))
    if neurons != len(canonical.activations):
        raise UsageError(f"conversion produced {neurons} neuron layers for {len(canonical.activations)} activations")
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    gm.add_submodule("encoder", InputEncoder())
    with gm.graph.inserting_after(placeholder):
        enc = gm.graph.call_module("encoder", (placeholder,))
    placeholder.replace_all_uses_with(enc, delete_user_cb=lambda user: user is not enc)
    for node in gm.graph.nodes:
        node.meta.pop("value_on_scale", None)
    gm.graph.lint()
    gm.recompile()
    gm.meta["annsnn_thresholds"] = lam  # per-neuron scale (ANN units per spike), for calibration passes
    return gm, report


def _channel_clipped(observer: ActivationObserver, scales: Tensor) -> float:
    total = float(observer.total)
    if total == 0 or observer.channel_histogram.numel() == 0:
        return 0.0
    width = observer.bin_width
    above = 0.0
    for c, s in enumerate(scales.tolist()):
        index = min(int(s / width), observer.bins) if width > 0 else 0
        above += float(observer.channel_histogram[c, index + 1 :].sum())
    return above / total


def _describe_key(node: fx.Node, key: object) -> str:
    label = key.__name__ if hasattr(key, "__name__") else str(key)
    return f"{node.name} ({label})"


def _label(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name
