"""Operation counts: ANN MACs (fvcore) and SNN synaptic ACs from real spikes.

**ANN.** MACs per layer from fvcore's ``FlopCountAnalysis`` (one FMA = one MAC);
conv/linear MACs are the headline, BatchNorm/pooling are listed apart.

**SNN.** For every spike source (IF neurons, spiking max-pools) and every synaptic
sink it reaches (a Conv/Linear, or a neuron/output reached through an identity
or rescale synapse), a *fan-out map* ``F[i]`` gives the number of synaptic
operations one spike at position i triggers, padding and borders included:
``F = J^T 1`` where J is the routing-plus-layer map with every weight set to 1
and average pools read as sum pools (so an input to an AvgPool carries its
spike count, not its mean). Per step, ``ACs(t) = sum_i s_t[i] F[i]``, computed
in float64. Weight layers fed by analog values count dense MACs: once per
sample for a static (direct-encoded) input, every step otherwise. Each neuron
costs one update per step; each bias of a time-varying layer one AC per step.

Each op's counting rule is a field of its entry in the op registry (:mod:`annsnn.ops`):
its structural form (``fanout``, :mod:`annsnn.rules.fanout`), whether spikes reaching it are
synaptic events (``sink``), and a weight layer's dense MACs (``macs``). An op with no rule
is reported as unsupported, never counted as zero.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, fx, nn

from .analog import AnalogOp, analog_macs
from .errors import UsageError
from .layers import SpikingMaxPool2d, IFNeurons, InputEncoder, Normalize, TemporalModule
from .opspec import OpRegistry, Role
from .rules.fanout import StructuralFn, dense_macs, valid_taps
from .shape_prop import propagate_shapes
from .snn import Encoding, SpikingNetwork, static_nodes
from .training_mode import evaluating

__all__ = [
    "AnnLayerCount",
    "AnnCounts",
    "count_ann",
    "dense_macs",
    "valid_taps",
    "SnnCounter",
    "SnnLayerCounts",
    "WorkSplit",
]

_MAC_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "einsum", "mm")


@dataclass
class AnnLayerCount:
    """Counts of one module's own ops (its children's are in their own rows)."""

    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int  # conv/linear/matmul multiply-accumulates, padded positions excluded
    bias_adds: int
    other_ops: dict[str, int] = field(default_factory=dict)  # batch_norm, pooling, ...
    macs_with_padding: int = 0  # fvcore's own count: multiplications by padded zeros included


@dataclass
class AnnCounts:
    layers: list[AnnLayerCount]
    input_shape: list[int]
    unsupported: dict[str, int] = field(default_factory=dict)  # op -> calls fvcore has no count for

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def macs_with_padding(self) -> int:
        return sum(layer.macs_with_padding for layer in self.layers)

    @property
    def bias_adds(self) -> int:
        return sum(layer.bias_adds for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def other_ops(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for layer in self.layers:
            for key, value in layer.other_ops.items():
                total[key] = total.get(key, 0) + value
        return total

    def to_dict(self) -> dict:
        return {
            "input_shape": self.input_shape,
            "macs": self.macs,
            "macs_with_padding": self.macs_with_padding,
            "bias_adds": self.bias_adds,
            "params": self.params,
            "other_ops": self.other_ops(),
            "unsupported": dict(self.unsupported),
            "layers": [asdict(layer) for layer in self.layers],
        }


def _conv_macs_jit(inputs: list, outputs: list) -> Counter:
    """fvcore handle for ``aten::_convolution``: MACs on real inputs (padding excluded) as
    ``conv``, and fvcore's own count (padding included) as ``conv_with_padding``."""
    from fvcore.nn.jit_handles import conv_flop_jit, get_shape

    with_padding = int(conv_flop_jit(inputs, outputs)["conv"])
    x_shape, w_shape = get_shape(inputs[0]), get_shape(inputs[1])
    transposed = bool(inputs[6].toIValue())
    if transposed:  # a transposed conv's padding crops its output; fvcore counts input-side work
        return Counter({"conv": with_padding, "conv_with_padding": with_padding})
    stride, padding, dilation = (_int_list(inputs[i]) for i in (3, 4, 5))
    groups = int(inputs[8].toIValue())
    taps = valid_taps(tuple(x_shape[2:]), tuple(w_shape[2:]), stride, padding, dilation)
    real = int(x_shape[0]) * int(w_shape[0]) * (int(x_shape[1]) // groups) * taps
    return Counter({"conv": real, "conv_with_padding": with_padding})


def _conv_mode_macs_jit(inputs: list, outputs: list) -> Counter:
    """fvcore handle for ``aten::_convolution_mode``, a convolution with ``padding='same'``
    or ``'valid'`` (fvcore has none: it was left out of the count): the same two counts as
    :func:`_conv_macs_jit`, the padding applied as torch applies it (``valid_taps``)."""
    from fvcore.nn.jit_handles import get_shape

    x_shape, w_shape, out_shape = get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0])
    stride, dilation = _int_list(inputs[3]), _int_list(inputs[5])
    padding = str(inputs[4].toIValue())
    groups = int(inputs[6].toIValue())
    per_tap = int(x_shape[0]) * int(w_shape[0]) * (int(x_shape[1]) // groups)
    taps = valid_taps(tuple(x_shape[2:]), tuple(w_shape[2:]), stride, padding, dilation)
    return Counter({"conv": per_tap * taps, "conv_with_padding": per_tap * math.prod(w_shape[2:]) * math.prod(out_shape[2:])})


def _int_list(value) -> tuple[int, ...]:
    """A constant int list of a jit graph (a constant, or a ``prim::ListConstruct`` of constants)."""
    constant = value.toIValue()
    if constant is None and value.node().kind() == "prim::ListConstruct":
        constant = [item.toIValue() for item in value.node().inputs()]
    if constant is None or any(item is None for item in constant):
        raise UsageError("cannot count a convolution whose stride, padding or dilation is computed at run time")
    return tuple(int(item) for item in constant)


def _safe_scope(name: str) -> str:
    return name.replace("/", "\u2215")


def count_ann(model: nn.Module, input_shape: tuple[int, ...]) -> AnnCounts:
    """Per-module MACs of ``model`` for one sample of ``input_shape`` (fvcore).

    Every op fvcore counts is counted, functional calls in a ``forward`` included: a row
    holds the ops of a module's own ``forward`` (its children have their own rows), so
    the rows add up to fvcore's total. Convolution MACs exclude padded positions, as the
    SNN's SyOPs do; fvcore's raw count is kept as ``macs_with_padding``. Ops fvcore has
    no count for are returned in ``unsupported`` (never printed). Module names need not
    be identifiers (onnx2torch's ``11/Relu`` works).
    """
    with evaluating(model):  # the user's model back in its own mode afterwards
        return _count_ann(model, input_shape)


def _count_ann(model: nn.Module, input_shape: tuple[int, ...]) -> AnnCounts:
    from .quiet import import_fvcore_nn

    import_fvcore_nn()  # without torch's jit.script notice
    from fvcore.nn import FlopCountAnalysis

    class _Analysis(FlopCountAnalysis):
        # fvcore splits jit scope names on '/', so give every module a '/'-free alias
        def _get_aliases(self, m: nn.Module):
            aliases = {k: _safe_scope(v) for k, v in super()._get_aliases(m).items()}
            aliases.update({v: v for v in list(aliases.values())})  # scopes name modules by alias
            return aliases

    first = next(iter(model.parameters()), None)
    example = torch.zeros(1, *input_shape, device=first.device if first is not None else "cpu")
    shapes: dict[str, list[int]] = {}
    outputs: Counter = Counter()  # output values per sample over every call: a module applied twice adds its bias twice
    handles = []
    modules = dict(model.named_modules())
    for name, module in modules.items():
        def hook(mod, args, out, _name=name):
            if isinstance(out, Tensor):
                shapes[_name] = list(out.shape)
                outputs[_name] += math.prod(out.shape[1:])

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:
        raise UsageError(f"the model does not run on input shape {tuple(input_shape)}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; pass --input-shape C,H,W") from None
    finally:
        for handle in handles:
            handle.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = _Analysis(model, example)
        analysis.set_op_handle("aten::_convolution", _conv_macs_jit)
        analysis.set_op_handle("aten::_convolution_mode", _conv_mode_macs_jit)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = analysis.by_module_and_operator()
        unsupported = {str(k): int(v) for k, v in analysis.unsupported_ops().items()}
    rows = []
    for name, module in modules.items():
        alias = analysis.canonical_module_name(name)
        if alias != _safe_scope(name):
            continue  # a shared module: counted under its first name
        own = Counter(by_module.get(alias, {}))
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if analysis.canonical_module_name(full) == _safe_scope(full):
                own.subtract(by_module.get(_safe_scope(full), {}))
        ops = {k: int(v) for k, v in own.items() if v}
        is_leaf = not list(module.children())
        if not ops and not (is_leaf and name):
            continue
        with_padding = ops.pop("conv_with_padding", 0)
        macs = sum(ops.pop(op, 0) for op in _MAC_OPS)
        with_padding += macs - own.get("conv", 0)  # non-conv MAC ops have no padding
        bias = getattr(module, "bias", None)
        out_shape = shapes.get(name, [])
        bias_adds = outputs[name] if isinstance(bias, Tensor) and out_shape and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) else 0
        rows.append(
            AnnLayerCount(
                name=name or "(model)",
                type=type(module).__name__,
                output_shape=out_shape,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=macs,
                bias_adds=bias_adds,
                other_ops=ops,
                macs_with_padding=with_padding,
            )
        )
    return AnnCounts(layers=rows, input_shape=list(input_shape), unsupported=unsupported)


# ---------------------------------------------------------------------------
# SNN


@dataclass
class SnnLayerCounts:
    """Per-step totals over all samples seen, for one layer (arrays of length max T)."""

    name: str
    type: str
    role: str  # "synaptic" (spike-fed), "mac" (analog input), "neurons"
    synaptic_acs: Tensor
    macs: Tensor
    bias_acs: Tensor
    neuron_updates: Tensor
    spikes: Tensor
    active_updates: Tensor  # neuron updates with a non-zero input current or a spike
    comparisons: Tensor  # spiking max-pool: one per input event per window holding it
    neurons: int = 0
    static: bool = False  # MACs counted once per sample (direct-encoded constant input)
    weight_numel: int = 0  # per layer, for memory-aware energy
    input_numel: int = 0
    output_numel: int = 0
    input_shape: tuple[int, ...] = ()
    feeds: str | None = None  # an identity synapse: the layer it feeds (neurons or an analog op)


@dataclass(frozen=True)
class WorkSplit:
    """Dense work of one step for one sample, as the ANN would do it: weight layers driven by
    spikes (their dense MACs, which the SNN replaces by ACs on spikes) against analog work
    (weight layers fed analog values, static ones included, and analog ops)."""

    spike_driven_macs: int
    analog_macs: int

    @property
    def analog_share(self) -> float:
        total = self.spike_driven_macs + self.analog_macs
        return self.analog_macs / total if total else 0.0


class SnnCounter:
    """Counts operations of one SNN under one encoding, per layer and per step.

    Attach with :meth:`attach` before :func:`~annsnn.simulate.simulate` runs; use the
    ``on_chunk`` callback :meth:`on_chunk`. Totals accumulate over batches.

    Spike sources are IF layers, spiking max-pools and, under Poisson encoding, the
    input encoder: its {0, 1} spikes drive the first layer with ACs like any other
    spike (the ``(s - mean)/std`` normalization folds into the weights, its constant
    into one bias AC per output per step). Every source emits {0, 1} spikes: conversion
    refuses a spiking max-pool on graded (summed or rescaled) spike input.

    *Active* neuron update (for chips that charge it apart, e.g. Loihi): a neuron whose
    input current in that step is non-zero (a synaptic event or a bias) or that spikes.

    Spiking max-pool comparisons, event-driven: each input spike is compared with the
    running maximum of every pooling window that holds it, so
    ``comparisons(t) = sum_i s_t[i] W[i]`` with ``W[i]`` the number of windows holding i.
    """

    def __init__(
        self,
        snn: SpikingNetwork,
        encoding: Encoding,
        max_steps: int,
        *,
        registry: OpRegistry | None = None,
    ) -> None:
        self.snn = snn
        self.encoding = encoding
        self.max_steps = max_steps
        self.registry = registry if registry is not None else snn.registry  # default: the entries it was converted with
        self.samples = 0
        self.unsupported: list[str] = []
        graph_module = snn.graph
        self.modules = dict(graph_module.named_modules())
        self.analog_costs = _shape_prop(snn, self.registry)  # AnalogOp name -> ops per sample and step
        self.static = static_nodes(graph_module.graph, self.modules, encoding)
        self._batch = 0
        self._start = 0
        self.layers: dict[str, SnnLayerCounts] = {}
        self.fanout: dict[str, tuple[list[str], list[str], Tensor]] = {}  # source -> (sinks, count fields, [N, sinks])
        self._sources: list[str] = []
        self._mac_layers: list[tuple[str, int, int, bool]] = []  # name, macs/sample, bias/sample, static
        self._bias_layers: list[tuple[str, int]] = []
        self._input_layers: list[tuple[str, int]] = []  # layers fed by the input: name, dense MACs/sample
        self._analyse()
        self._handles: list = []

    # --- structure -----------------------------------------------------------
    def _layer(self, name: str, type_name: str, role: str) -> SnnLayerCounts:
        if name not in self.layers:
            zeros = lambda: torch.zeros(self.max_steps, dtype=torch.float64)  # noqa: E731
            self.layers[name] = SnnLayerCounts(name, type_name, role, zeros(), zeros(), zeros(), zeros(), zeros(), zeros(), zeros())
        return self.layers[name]

    def _is_weight(self, module: nn.Module | None) -> bool:
        return module is not None and self.registry.has_role(module, Role.WEIGHT)

    def _is_sink(self, module: nn.Module) -> bool:
        spec = self.registry.for_module(module)
        return spec is not None and spec.sink

    def dense_macs(self, module: nn.Module, input_shape: tuple[int, ...]) -> int:
        """Dense MACs per sample of weight layer ``module`` on ``input_shape``: its entry's ``macs`` rule."""
        spec = self.registry.for_module(module)
        assert spec is not None and spec.macs is not None
        return spec.macs(module, input_shape)

    def _fanout(self, module: nn.Module) -> StructuralFn | None:
        """The entry's structural form of ``module`` on a spike-count map, or None (no rule)."""
        spec = self.registry.for_module(module)
        if spec is None or spec.fanout is None:
            return None
        rule = spec.fanout
        return lambda layer, x: rule(layer, (x,), {})

    def _is_source(self, module: nn.Module) -> bool:
        return isinstance(module, (IFNeurons, SpikingMaxPool2d)) or (isinstance(module, InputEncoder) and self.encoding != "direct")  # Poisson or event spikes

    def _analyse(self) -> None:
        graph = self.snn.graph.graph
        analog_reach = self._analog_reach(graph)
        input_fed = self._input_fed(graph)
        normalized = any(isinstance(m, Normalize) and bool((m.mean != 0).any()) for m in self.modules.values())
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            module = self.modules[str(node.target)]
            name = str(node.target)
            if isinstance(module, IFNeurons):
                layer = self._layer(name, type(module).__name__, "neurons")
                layer.neurons = _numel(node)
                # --- calibration hook (issue 12, helper "lowlat"): a per-step bias
                # (annsnn.calibration) adds one current per neuron and step: one AC each.
                if getattr(module, "step_bias", None) is not None:
                    self._bias_layers.append((name, layer.neurons))
                continue
            if isinstance(module, SpikingMaxPool2d):
                self._layer(name, "SpikingMaxPool2d", "pool")
                continue
            if isinstance(module, InputEncoder) and self.encoding != "direct":
                self._layer(name, "InputEncoder", "input")
                continue
            if isinstance(module, AnalogOp):
                is_static = node in self.static
                self._mac_layers.append((name, self.analog_costs[name], 0, is_static))
                layer = self._layer(name, f"analog {module.target}", "mac")
                layer.static = is_static
                layer.output_numel = _numel(node)
                continue
            if self._is_weight(module):
                out = _numel(node)
                in_shape = _shape(node.args[0])
                bias = out if module.bias is not None or (node in input_fed and self.encoding != "direct" and normalized) else 0
                sizes = {"weight_numel": module.weight.numel(), "input_numel": _numel(node.args[0]), "output_numel": out, "input_shape": in_shape}
                if node in input_fed:
                    self._input_layers.append((name, self.dense_macs(module, in_shape)))
                if node in analog_reach:
                    is_static = node in self.static
                    self._mac_layers.append((name, self.dense_macs(module, in_shape), bias, is_static))
                    layer = self._layer(name, type(module).__name__, "mac")
                    layer.static = is_static
                else:
                    layer = self._layer(name, type(module).__name__, "synaptic")
                    if bias:
                        self._bias_layers.append((name, bias))
                for key, value in sizes.items():
                    setattr(layer, key, value)
                continue
            known = self._is_sink(module) or isinstance(module, (InputEncoder, Normalize, TemporalModule)) or self._fanout(module) is not None
            if not known:
                has_params = any(True for _ in module.parameters(recurse=False))
                self.unsupported.append(f"{name} ({type(module).__name__})")
                if has_params:
                    warnings.warn(f"annsnn cannot count layer {name} ({type(module).__name__}); it is listed as unsupported")
        for node in graph.nodes:
            if node.op == "call_module" and self._is_source(self.modules[str(node.target)]):
                self._sources.append(str(node.target))
                self._fanout_maps(node)

    def _input_fed(self, graph: fx.Graph) -> set[fx.Node]:
        """Weight layers whose input comes from the network input with no weight layer between."""
        reach: set[fx.Node] = set()
        fed: set[fx.Node] = set()
        for node in graph.nodes:
            if node.op == "placeholder":
                reach.add(node)
                continue
            if not any(a in reach for a in node.all_input_nodes):
                continue
            module = self.modules.get(str(node.target)) if node.op == "call_module" else None
            if self._is_weight(module):
                fed.add(node)
            elif not isinstance(module, (IFNeurons, SpikingMaxPool2d)):
                reach.add(node)
        return fed

    def _analog_reach(self, graph: fx.Graph) -> set[fx.Node]:
        """Weight layers whose input carries analog (non-spike) values."""
        analog: set[fx.Node] = set()
        reached: set[fx.Node] = set()
        for node in graph.nodes:
            if node.op == "placeholder":
                analog.add(node)
                continue
            if node.op != "call_module":
                if any(a in analog for a in node.all_input_nodes):
                    analog.add(node)
                continue
            module = self.modules[str(node.target)]
            feeds_analog = any(a in analog for a in node.all_input_nodes)
            if isinstance(module, InputEncoder):
                if self.encoding == "direct":
                    analog.add(node)  # the analog image itself
                continue  # Poisson: {0, 1} spikes, a spike source
            elif isinstance(module, (IFNeurons, SpikingMaxPool2d)):
                continue
            elif isinstance(module, AnalogOp):
                if feeds_analog:
                    reached.add(node)
                analog.add(node)  # an analog op's output is analog, whatever its inputs
            elif self._is_weight(module):
                if feeds_analog:
                    reached.add(node)
                analog.add(node)  # output current is analog
            elif feeds_analog:
                analog.add(node)
        return reached

    def _fanout_maps(self, source: fx.Node) -> None:
        shape = _shape(source)
        x = torch.zeros(1, *shape, dtype=torch.float64, requires_grad=True)
        values: dict[fx.Node, Tensor] = {source: x}
        sinks: list[tuple[str, str, Tensor, str | None]] = []  # name, count field, structural output, the layer an identity synapse feeds
        graph = self.snn.graph.graph
        reached = {source}
        for node in graph.nodes:
            if node is source or node.op == "placeholder":
                continue
            inputs = node.all_input_nodes
            if not any(a in reached for a in inputs):
                continue
            if node.op == "output":
                sinks.append(("output", "synaptic_acs", _arg_value(node.args[0], values), None))
                continue
            if node.op == "call_module":
                module = self.modules[str(node.target)]
                name = str(node.target)
                routed = _arg_value(node.args[0], values)
                if self._is_weight(module):
                    handler = self._fanout(module)
                    if handler is None:
                        self.unsupported.append(f"{name} ({type(module).__name__}) on a spike path")
                    else:
                        sinks.append((name, "synaptic_acs", handler(module, routed), None))
                    continue
                if isinstance(module, SpikingMaxPool2d):
                    handler = self._fanout(module)
                    if handler is None:
                        self.unsupported.append(f"{name} (SpikingMaxPool2d comparisons)")
                    else:
                        sinks.append((name, "comparisons", handler(module, routed), None))
                    continue
                if isinstance(module, AnalogOp):  # each spike is one add into its input's running sum
                    parts = [values[a] for a in node.all_input_nodes if isinstance(values.get(a), Tensor) and values[a].requires_grad]
                    if parts:
                        sinks.append((f"{name} (analog input)", "synaptic_acs", sum(p.sum() for p in parts), None))
                    continue
                if self._is_sink(module):
                    sinks.append((f"{name} (identity synapse)", "synaptic_acs", routed, name))
                    continue
                handler = self._fanout(module)
                if handler is None:
                    self.unsupported.append(f"{name} ({type(module).__name__}) on a spike path")
                    continue
                values[node] = handler(module, routed)
                reached.add(node)
                continue
            # functions and methods: run on the routed values, unreached inputs as zeros
            args = fx.node.map_aggregate(node.args, lambda a: _arg_value(a, values) if isinstance(a, fx.Node) else a)
            kwargs = fx.node.map_aggregate(node.kwargs, lambda a: _arg_value(a, values) if isinstance(a, fx.Node) else a)
            target = node.target
            op = (lambda obj, *a, _name=str(target), **k: getattr(obj, _name)(*a, **k)) if node.op == "call_method" else target
            tensors: list[Tensor] = []
            fx.node.map_aggregate((args, kwargs), lambda a: tensors.append(a) if isinstance(a, Tensor) else None)
            spec = self.registry.lookup(node, self.modules)
            if not tensors:  # arithmetic on sizes read from a spike tensor: a value, not a spike path
                values[node] = op(*args, **kwargs)  # type: ignore[operator]
            elif spec is None or spec.fanout is None:
                self.unsupported.append(f"{node.name} ({getattr(target, '__name__', target)}) on a spike path")
                continue
            else:
                values[node] = spec.fanout(op, args, kwargs)
            reached.add(node)
        names, fields, columns = [], [], []
        for sink_name, count_field, y, feeds in sinks:
            if not isinstance(y, Tensor) or not y.requires_grad:
                continue
            (grad,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
            names.append(sink_name)
            fields.append(count_field)
            columns.append(grad.reshape(-1))
            if count_field == "synaptic_acs":
                identity = feeds is not None or sink_name == "output"
                self._layer(sink_name, "identity synapse" if identity else self._type_of(sink_name), "synaptic").feeds = feeds
        if columns:
            self.fanout[str(source.target)] = (names, fields, torch.stack(columns, dim=1).detach())

    def _type_of(self, name: str) -> str:
        module = self.modules.get(name)
        return type(module).__name__ if module is not None else "synapse"

    # --- run time ------------------------------------------------------------
    def attach(self, batch_size: int) -> None:
        """Install hooks for one batch of ``batch_size`` samples."""
        self._batch = batch_size
        self.samples += batch_size
        for name in self._sources:
            self._handles.append(self.modules[name].register_forward_hook(self._make_hook(name)))
        for name, macs, bias, is_static in self._mac_layers:
            layer = self.layers[name]
            if is_static:
                layer.macs[0] += macs * batch_size
                layer.bias_acs[0] += bias * batch_size

    def analog_macs_per_step(self) -> int:
        """Dense MACs of the analog-input layers for one sample and one step."""
        return sum(macs for _, macs, _, _ in self._mac_layers)

    def input_layers(self) -> list[str]:
        """Names of the weight layers fed by the network input."""
        return [name for name, _ in self._input_layers]

    def input_layer_macs(self) -> int:
        """Dense MACs (padding excluded) of the layers fed by the input, for one sample and one step."""
        return sum(macs for _, macs in self._input_layers)
    def work_split(self) -> WorkSplit:
        """Spike-driven vs analog dense work per sample and step (see :class:`WorkSplit`)."""
        spike = 0
        for name, layer in self.layers.items():
            module = self.modules.get(name)
            if layer.role == "synaptic" and self._is_weight(module) and layer.input_shape:
                spike += self.dense_macs(module, tuple(layer.input_shape))  # type: ignore[arg-type]
        return WorkSplit(spike, self.analog_macs_per_step())

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def on_chunk(self, start: int, steps: int) -> None:
        """Per-chunk counts that depend only on time: neuron updates, biases, dynamic MACs."""
        self._start = start
        span = slice(start, start + steps)
        batch = self._batch
        for layer in self.layers.values():
            if layer.role == "neurons" and layer.neurons:
                layer.neuron_updates[span] += layer.neurons * batch
        for name, bias in self._bias_layers:
            self.layers[name].bias_acs[span] += bias * batch
        for name, macs, bias, is_static in self._mac_layers:
            if not is_static:
                self.layers[name].macs[span] += macs * batch
                self.layers[name].bias_acs[span] += bias * batch

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args, out: Tensor) -> None:
            steps = module.steps  # type: ignore[attr-defined]
            spikes = out.reshape(steps, self._batch, -1)  # {0, 1}: conversion refuses graded pool inputs
            per_step = spikes.sum(1).to(torch.float64)
            span = slice(self._start, self._start + steps)
            layer = self.layers[name]
            layer.spikes[span] += per_step.sum(1).cpu()
            if isinstance(module, IFNeurons):
                current = args[0].reshape(steps, self._batch, *args[0].shape[1:])
                bias = module.step_bias  # added inside the neuron: a current too (step t's row; the last row after the bias's steps)
                rows = None if bias is None else torch.arange(module.t - steps, module.t).clamp_(max=bias.shape[0] - 1).tolist()
                # step by step: small temporaries (full-size boolean tensors cost more than the simulation)
                active = [torch.count_nonzero(torch.logical_or((current[s] if rows is None else current[s] + bias[rows[s]].to(current.device)).reshape(self._batch, -1), spikes[s]))
                          for s in range(steps)]
                layer.active_updates[span] += torch.stack(active).to(torch.float64).cpu()
                recurrent = int(getattr(module, "recurrent_fanout", 0))
                if recurrent:  # synapses inside the layer (STDP's lateral inhibition): each spike reaches `recurrent` neurons
                    layer.synaptic_acs[span] += per_step.sum(1).cpu() * recurrent
            if name in self.fanout:
                sinks, fields, matrix = self.fanout[name]
                if matrix.device != per_step.device:
                    matrix = matrix.to(per_step.device)
                    self.fanout[name] = (sinks, fields, matrix)
                acs = (per_step @ matrix).cpu()  # [steps, sinks]
                for j, (sink, count_field) in enumerate(zip(sinks, fields)):
                    getattr(self.layers[sink], count_field)[span] += acs[:, j]

        return hook


def _arg_value(arg, values: dict[fx.Node, Tensor]):
    if isinstance(arg, fx.Node):
        if arg in values:
            return values[arg]
        meta = arg.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            return torch.zeros(tuple(meta.shape), dtype=torch.float64)
        return arg.meta.get("annsnn_value")
    return arg


def _shape_prop(snn: SpikingNetwork, registry: OpRegistry) -> dict[str, int]:
    """Shapes on every node (batch 1); returns each AnalogOp's ops per sample and step."""
    graph_module = snn.graph
    temporal = [m for m in graph_module.modules() if isinstance(m, TemporalModule)]
    for module in temporal:
        module.steps = 1
        module.reset_state()
    snn.encoder.encoding = "direct"
    shape = tuple(snn.meta["input_shape"])
    captured: dict[str, tuple] = {}
    handles = []
    for name, module in graph_module.named_modules():
        if isinstance(module, AnalogOp):
            handles.append(module.register_forward_pre_hook(lambda mod, args, _name=name: captured.__setitem__(_name, args)))
    try:
        with torch.no_grad():
            propagate_shapes(graph_module, torch.zeros(1, *shape))
    finally:
        for handle in handles:
            handle.remove()
    costs = {name: analog_macs(graph_module.get_submodule(name), args) for name, args in captured.items()}
    for node in graph_module.graph.nodes:
        spec = registry.for_method(node.target) if node.op == "call_method" else None
        if spec is not None and spec.role is Role.SIZE:
            src = node.args[0]
            node.meta["annsnn_value"] = getattr(torch.zeros(tuple(src.meta["tensor_meta"].shape)), str(node.target))(*node.args[1:])
    for module in temporal:
        module.reset_state()
    return costs


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape[1:])


def _numel(node: fx.Node) -> int:
    return int(math.prod(_shape(node)))
