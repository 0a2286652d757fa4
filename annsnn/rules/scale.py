"""Conversion rules: how each op carries a scale from the ANN into the SNN.

Every value in the SNN graph carries a *scale* ``s`` (a tensor broadcast over one sample):
the ANN value is ``s * (SNN value)``, in the rate limit. A weight layer absorbs scales
(Rueckauer et al. 2017): ``W' = W * s_in / s_out`` and ``b' = b / s_out``; an op that
moves, copies or zero-pads values gets the op run on its input's scale; where two scales
meet and cannot be folded (a residual sum) a :class:`~annsnn.layers.Rescale` synapse with
factor ``s_source / s_target`` is inserted. Each rule is the ``convert`` field of an op
entry (:mod:`annsnn.ops`); :func:`annsnn.convert.convert` calls them in graph order with
one :class:`ScaleContext`.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from ..analog import AnalogOp, analog_call
from ..errors import UsageError
from ..layers import IFNeurons, Rescale, SpikingMaxPool2d
from ..opspec import OpRegistry, Role
from ..scale import Scale, ScaleError

__all__ = [
    "burst_maxpools",
    "burst_maxpool_error",
    "ScaleContext",
    "scale_weight",
    "scale_neuron",
    "scale_normalize",
    "scale_maxpool",
    "scale_pool",
    "scale_pad",
    "scale_mean",
    "scale_add",
    "scale_scalar_mul",
    "scale_scalar_div",
    "scale_size",
    "scale_split",
    "move_scale",
    "keep_analog",
    "size_value",
    "evaluate_on_scales",
    "sample_shape",
    "same_scale",
    "unique_name",
    "delete_attr",
]


# ---------------------------------------------------------------------------
# scale helpers


def sample_shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise UsageError(f"unsupported op {node.name}: its output is not a single tensor")
    return tuple(meta.shape)


def _shape(node: fx.Node) -> tuple[int, ...]:
    return sample_shape(node)


def _channel_vector(scale: Scale, node: fx.Node, dim: int = 1) -> Tensor:
    """One scale per channel along ``dim`` (dim -1 for Linear); error naming ``node`` if it
    varies inside a channel. An always-zero (free) channel gets 1."""
    try:
        return scale.channel_values(_shape(node), dim)
    except ScaleError:
        raise UsageError(f"cannot fold scales into {node.name}: its input scale varies within a channel") from None


def same_scale(scale: Scale, other: Scale, node: fx.Node) -> bool:
    return scale.equal(other, _shape(node))


# ---------------------------------------------------------------------------
# conversion context and handlers


@dataclass
class ScaleContext:
    """What the scale rules read and write while :func:`annsnn.convert.convert` walks the graph.

    ``scale[node]`` is the node's scale ``s`` (ANN value = ``s`` * SNN value); ``kind[node]``
    is what it carries (``analog``, ``current`` or ``spike``); ``neuron_scale[name]`` is the
    calibrated scale of the neurons of activation ``name``; ``demand[node]`` the scale a
    consumer asks ``node`` to produce (a weight layer absorbs it). The rules record the
    synapses they insert in ``rescale_synapses`` and the ops they keep analog in ``analog``.
    """

    gm: fx.GraphModule
    modules: dict[str, nn.Module]
    registry: OpRegistry
    v_init: float  # the IF neurons' initial potential, a fraction of the threshold
    max_spikes: int  # spikes a neuron may emit per step (1: binary; K > 1: burst neurons)
    neuron_scale: dict[str, Scale]  # activation module name -> its neurons' scale
    demand: dict[fx.Node, Scale]
    scale: dict[fx.Node, Scale] = field(default_factory=dict)
    kind: dict[fx.Node, str] = field(default_factory=dict)  # analog | current | spike
    rescale_synapses: list[str] = field(default_factory=list)
    analog: list[str] = field(default_factory=list)
    rescale_count: int = 0
    parts: dict[fx.Node, tuple[Scale, ...]] = field(default_factory=dict)  # scales of chunk/split outputs

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
        self.rescale_synapses.append(f"{name}: {_label(source)} -> {_label(user)} ({why})")
        return node


def _input_nodes(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes]


FOLD_ELEMENTS = 1 << 22  # weights folded at a time (32 MiB of float64)


def scale_weight(ctx: ScaleContext, node: fx.Node) -> None:
    """``W' = W * s_in / s_out`` per (output, input) channel pair (grouped convolutions
    read their group's inputs), in float64, rounded once to the weight's dtype;
    ``b' = b / s_out``."""
    layer = ctx.modules[str(node.target)]
    src = node.args[0]
    assert isinstance(src, fx.Node)
    linear = isinstance(layer, nn.Linear)
    s_in = _channel_vector(ctx.scale[src], src, dim=-1 if linear else 1).double()
    out_ch = layer.out_features if linear else layer.out_channels
    demanded = ctx.demand.get(node)
    s_out = _channel_vector(demanded, node, dim=-1 if linear else 1).double() if demanded is not None else torch.ones(out_ch, dtype=torch.float64)
    with torch.no_grad():
        weight = layer.weight
        if linear:
            fold = lambda w, rows: w.mul_(s_in.view(1, -1)).div_(s_out[rows].view(-1, 1))  # noqa: E731
        else:
            groups = layer.groups
            per_group_in = layer.in_channels // groups
            per_group_out = out_ch // groups
            group_of_out = torch.arange(out_ch) // per_group_out
            in_index = group_of_out.view(-1, 1) * per_group_in + torch.arange(per_group_in).view(1, -1)
            factor = (s_in[in_index] / s_out.view(-1, 1)).view(out_ch, per_group_in, *([1] * (weight.dim() - 2)))
            fold = lambda w, rows: w.mul_(factor[rows])  # noqa: E731
        # a few output rows at a time, in float64: the same elementwise products as one
        # pass over the whole weight, without a float64 copy of it (VGG-16's first linear
        # layer has 103 M weights: three whole-size float64 temporaries were 2.5 GB)
        per_row = max(1, weight[0].numel())
        block = max(1, FOLD_ELEMENTS // per_row)
        for lo in range(0, out_ch, block):
            rows = slice(lo, min(lo + block, out_ch))
            weight[rows].copy_(fold(weight[rows].double(), rows).to(weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_((layer.bias.double() / s_out).to(layer.bias.dtype))
    ctx.scale[node] = Scale.channel(s_out, -1 if linear else 1).simplest(_shape(node))
    ctx.kind[node] = "current"


def scale_neuron(ctx: ScaleContext, node: fx.Node) -> None:
    name = str(node.target)
    src = node.args[0]
    assert isinstance(src, fx.Node)
    lam = ctx.neuron_scale[name]
    if not same_scale(ctx.scale[src], lam, src):
        src = ctx.insert_rescale(node, src, lam, "scale of the neuron it feeds")
    ctx.gm.set_submodule(name, IFNeurons(ctx.v_init, max_spikes=ctx.max_spikes))
    ctx.scale[node] = lam
    ctx.kind[node] = "spike"


def keep_analog(ctx: ScaleContext, node: fx.Node, constants: set[fx.Node]) -> None:
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
        scales.append(None if same_scale(scale, Scale.one(), a) else scale.to_factor(shape))
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
            name = unique_name(ctx.gm, f"analog_{target.name}")
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
        ctx.analog.append(f"{name} ({module.target})")
    ctx.gm.graph.erase_node(node)


def _fetch_attr(gm: fx.GraphModule, target: str) -> Tensor:
    value: object = gm
    for part in target.split("."):
        value = getattr(value, part)
    if not isinstance(value, Tensor):
        raise UsageError(f"unsupported op: stored attribute {target} is not a tensor")
    return value.detach()


def delete_attr(gm: fx.GraphModule, target: str) -> None:
    *path, last = target.split(".")
    owner: nn.Module = gm.get_submodule(".".join(path)) if path else gm
    if last in owner._parameters:
        del owner._parameters[last]
    elif last in owner._buffers:
        del owner._buffers[last]


def unique_name(gm: fx.GraphModule, base: str) -> str:
    name, k = base.replace(".", "_"), 1
    candidate = name
    while hasattr(gm, candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def scale_normalize(ctx: ScaleContext, node: fx.Node) -> None:
    src = node.args[0]
    if not isinstance(src, fx.Node) or ctx.kind.get(src) != "analog" or not same_scale(ctx.scale[src], Scale.one(), src):
        raise UsageError(f"unsupported op {node.name}: input normalization inside the network")
    ctx.scale[node] = Scale.one()
    ctx.kind[node] = "analog"


BURST_MAXPOOL = "burst neurons (--max-spikes K > 1) emit counts, which a spiking max-pool cannot compare"


def burst_maxpool_error(layer: str) -> UsageError:
    """The one refusal of a spiking max-pool over burst neurons' counts (from the graph before
    the calibration, :func:`burst_maxpools`, or from :func:`scale_maxpool`)."""
    return UsageError(f"unsupported layer {layer}: {BURST_MAXPOOL}; try --maxpool avg, or --max-spikes 1")


def burst_maxpools(gm: fx.GraphModule, registry: OpRegistry) -> list[str]:
    """The max-pools of a canonical graph that read only neurons' outputs, directly or
    through ops that copy values (other max-pools, reshape, pad, cat, flatten: the
    ``copies_spikes`` of their entries, as :func:`_binary_spikes` follows them): with burst
    neurons they would compare spike counts, which :func:`scale_maxpool` refuses. Known from
    the graph alone, so the refusal can come before the calibration pass."""
    modules = dict(gm.named_modules())

    def reads_neuron(node: object) -> bool:
        if not isinstance(node, fx.Node) or node.op not in ("call_module", "call_function", "call_method"):
            return False
        if node.op == "call_module" and isinstance(modules[str(node.target)], nn.MaxPool2d):
            return reads_neuron(node.args[0])
        spec = registry.lookup(node, modules)
        if spec is None:
            return False
        if spec.role is Role.NEURON:
            return True
        sources = node.all_input_nodes
        return spec.copies_spikes and bool(sources) and all(reads_neuron(a) for a in sources)

    return [str(node.target) for node in gm.graph.nodes
            if node.op == "call_module" and isinstance(modules[str(node.target)], nn.MaxPool2d) and reads_neuron(node.args[0])]


def scale_maxpool(ctx: ScaleContext, node: fx.Node) -> None:
    pool = ctx.modules[str(node.target)]
    src = node.args[0]
    assert isinstance(src, fx.Node)
    _channel_vector(ctx.scale[src], src)  # a pool needs one scale per channel
    if ctx.kind[src] == "spike":
        if not _binary_spikes(ctx, src):
            if any(isinstance(m, IFNeurons) and m.max_spikes > 1 for m in ctx.gm.modules()):
                raise burst_maxpool_error(str(node.target))
            raise UsageError(f"unsupported layer {node.target}: max-pool of non-binary spike input (a sum or rescaling of spike trains); try --maxpool avg")
        ctx.gm.set_submodule(str(node.target), SpikingMaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode))
    elif ctx.kind[src] == "current":
        raise UsageError(f"unsupported layer {node.target}: max-pool of membrane currents (not followed by a ReLU); try --maxpool avg")
    scale_pool(ctx, node)


def _binary_spikes(ctx: ScaleContext, node: fx.Node) -> bool:
    """Whether ``node`` carries {0, 1} spikes: a neuron's output moved only by ops that
    copy values (reshape, pad, cat, flatten, spiking max-pool). A sum or a rescaling of
    spike trains is not binary, and a spiking max-pool on it would be counted wrongly."""
    if node.op == "call_module":
        module = ctx.gm.get_submodule(str(node.target))
        if isinstance(module, IFNeurons):
            return module.max_spikes == 1  # a burst neuron's output is a count in 0..K
        spec = ctx.registry.for_module(module)
    else:
        spec = ctx.registry.lookup(node, {})
    if spec is None or not spec.copies_spikes:
        return False
    sources = [a for a in node.all_input_nodes if a in ctx.kind]
    return bool(sources) and all(_binary_spikes(ctx, a) for a in sources)


def _carried_kind(ctx: ScaleContext, inputs: list[fx.Node]) -> str:
    """What an op's output carries: membrane current if any input does, else analog values
    if any input is analog, else spikes."""
    kinds = {ctx.kind[a] for a in inputs}
    return "current" if "current" in kinds else ("analog" if "analog" in kinds else "spike")


def scale_pool(ctx: ScaleContext, node: fx.Node) -> None:
    """A pooling layer: ``pool(s * x) = s * pool(x)`` for a per-channel ``s``, so the scale
    passes through (an error naming the node if it varies within a channel)."""
    tensor_inputs = [a for a in _input_nodes(node) if a in ctx.scale]
    if node.op != "call_module":  # a functional pool that canonicalization did not lower
        ctx.scale[node] = evaluate_on_scales(ctx, node)
    else:
        src = tensor_inputs[0]
        _channel_vector(ctx.scale[src], src)  # error naming the node if not per channel
        ctx.scale[node] = ctx.scale[src].per_channel(_shape(src), 1).simplest(_shape(node))
    ctx.kind[node] = _carried_kind(ctx, tensor_inputs)


def move_scale(ctx: ScaleContext, node: fx.Node) -> None:
    """An op that moves or copies values (reshape, flatten, cat, slicing, ...): its scale is
    the op run on the scales (:func:`evaluate_on_scales`)."""
    tensor_inputs = [a for a in _input_nodes(node) if a in ctx.scale]
    ctx.scale[node] = evaluate_on_scales(ctx, node)
    ctx.kind[node] = _carried_kind(ctx, tensor_inputs)


def _zero_padding(node: fx.Node, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``F.pad(x, widths[, "constant", 0])`` run with the value 1 (a placeholder scale; in the
    free mask: free); any other mode or value is refused."""
    mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
    if mode != "constant":
        raise UsageError(f"unsupported op {node.name}: pad mode {mode!r} (only zero padding)")
    value = kwargs.get("value", args[3] if len(args) > 3 else 0.0)
    if value not in (None, 0, 0.0):
        raise UsageError(f"unsupported op {node.name}: padding with {value} (only zero padding)")
    return args[:2], {"value": 1.0}


def scale_pad(ctx: ScaleContext, node: fx.Node) -> None:
    """``F.pad`` with zeros: the scale is the input's, padded; the padded positions are free
    (always zero), so they never decide a scale (:class:`~annsnn.scale.Scale`)."""
    tensor_inputs = [a for a in _input_nodes(node) if a in ctx.scale]
    ctx.scale[node] = evaluate_on_scales(ctx, node, rewrite=_zero_padding)
    ctx.kind[node] = _carried_kind(ctx, tensor_inputs)


def scale_mean(ctx: ScaleContext, node: fx.Node) -> None:
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
        ctx.scale[node] = evaluate_on_scales(ctx, node, {src: scale})
    ctx.kind[node] = ctx.kind[src]


def scale_add(ctx: ScaleContext, node: fx.Node) -> None:
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
        if not same_scale(ctx.scale[src], target, node):
            ctx.insert_rescale(node, src, target, "residual branch rescaled to the add's scale")
    both_free = a.free_full(shape) & b.free_full(shape)
    ctx.scale[node] = target.with_free(both_free, shape) if bool(both_free.any()) else target
    kinds = {ctx.kind[a] for a in node.all_input_nodes}
    ctx.kind[node] = "current" if "current" in kinds else ("analog" if "analog" in kinds else "spike")


def scale_scalar_mul(ctx: ScaleContext, node: fx.Node, divide: bool = False) -> None:
    """``c * x`` (or ``x / c``): the value scales, the scale does not, ``c * (s x) = s (c x)``."""
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    numbers = [a for a in node.args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    if len(tensors) != 1 or len(numbers) != 1 or node.kwargs or (divide and node.args[0] is not tensors[0]):
        raise UsageError(f"unsupported op {node.name}: multiplication other than by a constant")
    ctx.scale[node] = ctx.scale[tensors[0]]
    ctx.kind[node] = ctx.kind[tensors[0]]


def scale_scalar_div(ctx: ScaleContext, node: fx.Node) -> None:
    """``x / c``: as :func:`scale_scalar_mul`; a constant divided by a tensor is refused."""
    scale_scalar_mul(ctx, node, divide=True)


def scale_size(ctx: ScaleContext, node: fx.Node) -> None:
    """``x.size(d)``, ``x.dim()``, ``x.shape``: no scale; the value (at batch 1) is kept for
    the ops that read it, computed on the input's scale tensor (same shape)."""
    src = node.args[0]
    assert isinstance(src, fx.Node)
    full = ctx.scale[src].full(_shape(src))
    if node.op == "call_method":
        node.meta["value_on_scale"] = getattr(full, str(node.target))(*node.args[1:])
    else:
        node.meta["value_on_scale"] = node.target(full, *node.args[1:])  # type: ignore[operator]


def scale_split(ctx: ScaleContext, node: fx.Node) -> None:
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


def size_value(node: fx.Node) -> None:
    """A node computed from sizes only: its value (at batch 1) is kept for the ops that read it."""

    def value(a: fx.Node) -> object:
        return a.meta.get("value_on_scale")

    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    if node.op == "call_method":
        node.meta["value_on_scale"] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
    else:
        node.meta["value_on_scale"] = node.target(*args, **kwargs)  # type: ignore[operator]


def evaluate_on_scales(
    ctx: ScaleContext,
    node: fx.Node,
    override: dict[fx.Node, Scale] | None = None,
    rewrite: Callable[[fx.Node, tuple, dict], tuple[tuple, dict]] | None = None,
) -> Scale:
    """The scale of an op that moves, copies or zero-pads values: run the op once on the
    scale values and once on the always-zero (free) masks. ``rewrite`` adapts the call's
    arguments first (zero padding runs with the value 1: its positions are free)."""
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
        if rewrite is not None:
            args, kwargs = rewrite(node, args, kwargs)
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


def _label(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name
