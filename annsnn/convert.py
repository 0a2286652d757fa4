"""Convert a canonical ANN into a true-spike IF SNN by data-based normalization.

Every value in the SNN graph carries a *scale* ``s`` (a tensor broadcast over one
sample): the ANN value is ``s * (SNN value)``, in the rate limit. A neuron with
calibrated scale ``lambda`` emits spikes ``{0, 1}`` whose rate times ``lambda``
approximates the ANN activation. Weight layers absorb scales (Rueckauer et al.
2017): ``W' = W * s_in / s_out`` and ``b' = b / s_out``, where ``s_out`` is the
scale that the consuming neuron demands, so thresholds stay 1. Where a scale
cannot be folded (a residual shortcut carrying another layer's spikes) a
:class:`~annsnn.layers.Rescale` synapse is inserted and reported.

Each op's conversion rule (:mod:`annsnn.rules.scale`) and how a demanded scale travels back
through it are fields of its entry in the op registry (:mod:`annsnn.ops`).
"""
from __future__ import annotations

import copy
import operator
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .analog import AnalogOp, is_analog
from .equivalence import Equivalence
from .errors import UsageError
from .graph import CanonicalGraph
from .layers import IFNeurons, InputEncoder
from .modes import ScaleMode
from .observer import DEFAULT_BINS, ActivationObserver, PercentileOf
from .opspec import Demand, OpRegistry, Role
from .rules.scale import ScaleContext, delete_attr, keep_analog, same_scale, sample_shape, size_value, unique_name
from .scale import Scale
from .thresholds import if_thresholds

__all__ = [
    "ConversionOptions",
    "LayerReport",
    "ConversionReport",
    "Calibrator",
    "convert",
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

    def __init__(self, canonical: CanonicalGraph, *, channel_wise: bool = False, bins: int = DEFAULT_BINS) -> None:
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


def _push_demand(ctx_demand: dict[fx.Node, Scale], conflicts: set[fx.Node], node: object, scale: Scale, modules: dict[str, nn.Module], registry: OpRegistry) -> None:
    """Let ``node`` (and, through sums, pools and reshapes, the ops before it) produce
    ``scale``, so a weight layer absorbs it; each op's :class:`~annsnn.ops.Demand` says how."""
    if not isinstance(node, fx.Node) or node in conflicts:
        return
    if node in ctx_demand:
        if not same_scale(ctx_demand[node], scale, node):
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
            value = torch.tensor(1.0, dtype=torch.float64)
    elif channel_wise:
        value = observer.scale(mode, True, options.percentile_of)
        dead = observer.channel_max <= 0
        rare = (value <= 0) & ~dead  # fired, but more than q% of its values are zero
        if bool(dead.any()):
            fallback, _ = layer_value()
            notes.append(f"{int(dead.sum())} channel(s) never fired in calibration; their scale is the layer-wise scale {fallback:.4g}")
            value = torch.where(dead, torch.full_like(value, fallback), value)
        if bool(rare.any()):
            positive = torch.tensor([observer.percentile(mode.value, c, "positive") if bool(rare[c]) else 0.0 for c in range(value.numel())], dtype=value.dtype)
            notes.append(f"{int(rare.sum())} channel(s) have a {mode} percentile of 0 over all values; their scale is the {mode} percentile of their positive values")
            value = torch.where(rare, positive, value)
            value = torch.where(value > 0, value, observer.channel_max.to(value))
    else:
        number, note = layer_value()
        if note is not None:
            notes.append(note)
        value = torch.tensor(number, dtype=torch.float64)
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
    *,
    registry: OpRegistry | None = None,
) -> tuple[fx.GraphModule, ConversionReport]:
    """Build the SNN graph (on merged ``[T*B, ...]`` tensors) and its report.

    Each op converts by the ``convert`` rule of its entry in ``registry`` (default: the one
    the model was canonicalized with, ``calibrator.canonical.registry``).
    """
    canonical = calibrator.canonical
    registry = registry if registry is not None else canonical.registry
    gm = copy.deepcopy(canonical.module).eval()
    ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
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
        shape = sample_shape(node)
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

    ctx = ScaleContext(gm=gm, modules=modules, registry=registry, v_init=options.v_init, neuron_scale=lam, demand=demand,
                       rescale_synapses=report.rescale_synapses, analog=report.analog)
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
            if not same_scale(ctx.scale[src], Scale.one(), src):
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
            keep_analog(ctx, node, constants)
            continue
        if node.op in ("call_function", "call_method") and not any(a in ctx.scale or a in constants for a in node.all_input_nodes):
            size_value(node)  # arithmetic on sizes (``n * heads``): no tensor, no scale
            continue
        if spec is None or spec.convert is None:
            unsupported.append(_describe_key(node, type(modules[str(node.target)]) if node.op == "call_module" else node.target))
            blocked.add(node)
            continue
        spec.convert(ctx, node)
    if unsupported:
        raise UsageError("unsupported op(s) for conversion: " + ", ".join(unsupported))
    for node in list(gm.graph.nodes):
        if node.op == "get_attr":
            if node.users:
                users = ", ".join(u.name for u in node.users)
                raise UsageError(f"unsupported op(s) {users}: use the stored tensor {node.target} without an analog form")
            gm.graph.erase_node(node)
            delete_attr(gm, str(node.target))  # it lives on inside the analog ops that use it
    gm.delete_all_unused_submodules()

    for node in gm.graph.nodes:  # one row per analog op kept (hybrid): no neurons, no max, ANN units
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, AnalogOp):
            report.layers.append(LayerReport(name=str(node.target), kind=f"analog {module.target}", neurons=0, max=None, scale=1.0, clipped_fraction=0.0, spiking=False))
    neurons = sum(1 for m in gm.modules() if isinstance(m, IFNeurons))
    if neurons != len(canonical.activations):
        raise UsageError(f"conversion produced {neurons} neuron layers for {len(canonical.activations)} activations")
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    encoder_name = unique_name(gm, "encoder")  # a model may have its own "encoder" (ViT)
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
