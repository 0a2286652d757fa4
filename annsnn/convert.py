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
through it are fields of its entry in the op registry (:mod:`annsnn.ops`). The options and
reports are :mod:`annsnn.conversion_options`; the calibration pass and the neurons' scales
read from it are :mod:`annsnn.calibrator`. They are re-exported here.
"""
from __future__ import annotations

import copy
import operator

import torch
from torch import Tensor, fx, nn

from .analog import AnalogOp, is_analog
from .calibrator import Calibrator, clipped_fraction, neuron_scale
from .conversion_options import PIPELINE_THRESHOLD_SCALE, ConversionOptions, ConversionReport, LayerKind, LayerReport
from .errors import UsageError
from .layers import IFNeurons, InputEncoder
from .opspec import Demand, OpRegistry, Role
from .rules.scale import ScaleContext, delete_attr, keep_analog, same_scale, sample_shape, size_value, unique_name
from .scale import Scale
from .shape_prop import propagate_shapes

__all__ = [
    "ConversionOptions",
    "LayerKind",
    "LayerReport",
    "ConversionReport",
    "Calibrator",
    "convert",
    "PIPELINE_THRESHOLD_SCALE",
]


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
    gm = copy.deepcopy(canonical.module).to("cpu").eval()  # folding runs on the CPU; the observers stay where they ran
    propagate_shapes(gm, torch.zeros(1, *input_shape, device="cpu"))
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
    neuron_scales: dict[str, Scale] = {}
    thresholds: dict[str, Tensor] = {}  # the same scales as plain tensors, for the calibration passes
    act_nodes = {str(n.target): n for n in gm.graph.nodes if n.op == "call_module" and str(n.target) in canonical.activations}
    for name in canonical.activations:
        node = act_nodes[name]
        observer = calibrator.observers[name]
        clip = modules[name].ceiling  # type: ignore[union-attr]
        shape = sample_shape(node)
        value, notes = neuron_scale(observer, options, clip, shape)
        neuron_scales[name] = Scale.channel(value.flatten(), 1) if options.channel_wise else Scale.tensor(value)
        thresholds[name] = value  # 0-d, or [C, 1, ...] broadcasting over a sample
        report.notes.extend(f"{name}: {n}" for n in notes)
        layer_scale = float(value.mean())
        ceiling = value * options.max_spikes  # what the neurons reach: K spikes of theta per step
        clipped = observer.fraction_above(float(ceiling.mean())) if not options.channel_wise else clipped_fraction(observer, ceiling.flatten())
        population = "" if options.mode.kind != "percentile" else f" of {options.percentile_of} values"
        chosen = f"IF error search at T={options.T}" if options.threshold == "if-search" else f"{options.mode}{population}"
        chosen += f", {options.max_spikes} spikes per step" if options.max_spikes > 1 else ""
        rule = f"{chosen}{' per channel' if options.channel_wise else ''}"
        report.layers.append(
            LayerReport(
                name=name,
                kind=LayerKind.IF,
                neurons=int(torch.tensor(shape[1:]).prod()),
                max=float(observer.max_val),
                scale=layer_scale,
                clipped_fraction=clipped,
                spiking=True,
                scales=[float(v) for v in value.flatten()],
                scale_rule="; ".join([rule] + notes),
                ceiling=clip,
            )
        )

    demand: dict[fx.Node, Scale] = {}
    conflicts: set[fx.Node] = set()
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if not isinstance(output.args[0], fx.Node):
        raise UsageError("unsupported model: it must return a single tensor")
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target) in neuron_scales:
            _push_demand(demand, conflicts, node.args[0], neuron_scales[str(node.target)], modules, registry)
        elif node.op == "call_module" and _is_analog_activation(registry, modules[str(node.target)]):
            _push_demand(demand, conflicts, node.args[0], Scale.one(), modules, registry)
    _push_demand(demand, conflicts, output.args[0], Scale.one(), modules, registry)
    # an add that feeds no neuron takes the scale of a spiking input, so the other
    # branch's weight layer can absorb the rescale instead of a per-step multiply
    for node in gm.graph.nodes:
        spec = registry.lookup(node, modules)
        if spec is not None and spec.role is Role.ADD and node not in demand and node not in conflicts:
            spiking = [a for a in node.args[:2] if isinstance(a, fx.Node) and a.op == "call_module" and str(a.target) in neuron_scales]
            if spiking:
                scale = neuron_scales[str(spiking[0].target)]
                demand[node] = scale
                for a in node.args[:2]:
                    if a is not spiking[0]:
                        _push_demand(demand, conflicts, a, scale, modules, registry)

    ctx = ScaleContext(gm=gm, modules=modules, registry=registry, v_init=options.v_init, max_spikes=options.max_spikes, neuron_scale=neuron_scales, demand=demand,
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
            report.layers.append(LayerReport(name=str(node.target), kind=LayerKind.ANALOG, neurons=0, max=None, scale=1.0, clipped_fraction=0.0, spiking=False,
                                             op=str(module.target)))
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


def _describe_key(node: fx.Node, key: object) -> str:
    label = key.__name__ if hasattr(key, "__name__") else str(key)
    return f"{node.target if node.op == 'call_module' else node.name} ({label})"
