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

Counting is a registry keyed by layer type (:func:`default_structural_handlers`);
a layer it does not know is reported as unsupported, never counted as zero.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .errors import UsageError
from .graph import UNCONVERTIBLE_MODULES
from .layers import SpikingMaxPool2d, IFNeurons, InputEncoder, Normalize, ReLUClip, Rescale, TemporalModule
from .snn import Encoding, SpikingNetwork, static_nodes

__all__ = [
    "AnnLayerCount",
    "AnnCounts",
    "count_ann",
    "dense_macs",
    "SnnCounter",
    "SnnLayerCounts",
    "default_structural_handlers",
]

_MAC_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "einsum", "mm")


@dataclass
class AnnLayerCount:
    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int  # conv/linear multiply-accumulates
    bias_adds: int
    other_ops: dict[str, int] = field(default_factory=dict)  # batch_norm, pooling, ...


@dataclass
class AnnCounts:
    layers: list[AnnLayerCount]
    input_shape: list[int]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

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
            "bias_adds": self.bias_adds,
            "params": self.params,
            "other_ops": self.other_ops(),
            "layers": [asdict(layer) for layer in self.layers],
        }


def dense_macs(module: nn.Module, output_shape: tuple[int, ...]) -> int:
    """Closed form per sample: conv ``out_numel * C_in/groups * prod(kernel)``; linear ``out_numel * in``."""
    out = math.prod(output_shape[1:])
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return out * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return out * module.in_features
    raise TypeError(f"no closed form for {type(module).__name__}")


def count_ann(model: nn.Module, input_shape: tuple[int, ...]) -> AnnCounts:
    """Per-layer MACs of ``model`` for one sample of ``input_shape`` (fvcore)."""
    from fvcore.nn import FlopCountAnalysis

    model = model.eval()
    first = next(iter(model.parameters()), None)
    example = torch.zeros(1, *input_shape, device=first.device if first is not None else "cpu")
    shapes: dict[str, list[int]] = {}
    handles = []
    leaves = {name: m for name, m in model.named_modules() if name and not list(m.children())}
    for name, module in leaves.items():
        def hook(mod, args, out, _name=name):
            if isinstance(out, Tensor):
                shapes[_name] = list(out.shape)

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
        analysis = FlopCountAnalysis(model, example)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_module = analysis.by_module_and_operator()
    rows = []
    for name, module in leaves.items():
        ops = dict(by_module.get(name, {}))
        macs = sum(int(ops.pop(op, 0)) for op in _MAC_OPS)
        bias = getattr(module, "bias", None)
        out_shape = shapes.get(name, [])
        bias_adds = math.prod(out_shape[1:]) if isinstance(bias, Tensor) and out_shape and isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) else 0
        rows.append(
            AnnLayerCount(
                name=name,
                type=type(module).__name__,
                output_shape=out_shape,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=macs,
                bias_adds=bias_adds,
                other_ops={k: int(v) for k, v in ops.items() if v},
            )
        )
    return AnnCounts(layers=rows, input_shape=list(input_shape))


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
    neurons: int = 0
    static: bool = False  # MACs counted once per sample (direct-encoded constant input)
    weight_numel: int = 0  # per layer, for memory-aware energy
    input_numel: int = 0
    output_numel: int = 0


StructuralFn = Callable[[nn.Module, Tensor], Tensor]


def _conv_structure(module: nn.Module, x: Tensor) -> Tensor:
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise UsageError(f"cannot count {type(module).__name__} with padding_mode={module.padding_mode!r}")
    ones = torch.ones_like(module.weight, dtype=x.dtype)
    fn = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
    return fn(x, ones, None, module.stride, module.padding, module.dilation, module.groups)


def _linear_structure(module: nn.Module, x: Tensor) -> Tensor:
    return F.linear(x, torch.ones_like(module.weight, dtype=x.dtype))


def _avgpool2d_structure(module: nn.Module, x: Tensor) -> Tensor:
    return F.avg_pool2d(x, module.kernel_size, module.stride, module.padding, module.ceil_mode, module.count_include_pad, divisor_override=1)


def _adaptive_avgpool_structure(module: nn.Module, x: Tensor) -> Tensor:
    out = module(x)
    in_sizes, out_sizes = x.shape[2:], out.shape[2:]
    if any(i % o for i, o in zip(in_sizes, out_sizes)):
        raise UsageError(f"cannot count adaptive pooling from {tuple(in_sizes)} to {tuple(out_sizes)} (uneven windows)")
    return out * math.prod(i // o for i, o in zip(in_sizes, out_sizes))


def _identity_structure(module: nn.Module, x: Tensor) -> Tensor:
    return x


def _same(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


def default_structural_handlers() -> dict[type, StructuralFn]:
    """Layer type -> its structural (all-ones, sum-pool) map for fan-out counting."""
    return {
        nn.Conv1d: _conv_structure,
        nn.Conv2d: _conv_structure,
        nn.Linear: _linear_structure,
        nn.AvgPool2d: _avgpool2d_structure,
        nn.AdaptiveAvgPool2d: _adaptive_avgpool_structure,
        nn.AdaptiveAvgPool1d: _adaptive_avgpool_structure,
        nn.Flatten: _same,
        Rescale: _identity_structure,
    }


_SYNAPTIC_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)
_SINK_TYPES = (IFNeurons, SpikingMaxPool2d, ReLUClip) + UNCONVERTIBLE_MODULES


class SnnCounter:
    """Counts operations of one SNN under one encoding, per layer and per step.

    Attach with :meth:`attach` before :func:`~annsnn.simulate.simulate` runs; use the
    ``on_chunk`` callback :meth:`on_chunk`. Totals accumulate over batches.
    """

    def __init__(
        self,
        snn: SpikingNetwork,
        encoding: Encoding,
        max_steps: int,
        handlers: dict[type, StructuralFn] | None = None,
    ) -> None:
        self.snn = snn
        self.encoding = encoding
        self.max_steps = max_steps
        self.handlers = handlers if handlers is not None else default_structural_handlers()
        self.samples = 0
        self.unsupported: list[str] = []
        graph_module = snn.graph
        self.modules = dict(graph_module.named_modules())
        _shape_prop(snn)
        self.static = static_nodes(graph_module.graph, self.modules, encoding)
        self._batch = 0
        self._start = 0
        self.layers: dict[str, SnnLayerCounts] = {}
        self.fanout: dict[str, tuple[list[str], Tensor]] = {}  # source -> (sink names, [N, sinks])
        self._mac_layers: list[tuple[str, int, int, bool]] = []  # name, macs/sample, bias/sample, static
        self._bias_layers: list[tuple[str, int]] = []
        self._analyse()
        self._handles: list = []

    # --- structure -----------------------------------------------------------
    def _layer(self, name: str, type_name: str, role: str) -> SnnLayerCounts:
        if name not in self.layers:
            zeros = lambda: torch.zeros(self.max_steps, dtype=torch.float64)  # noqa: E731
            self.layers[name] = SnnLayerCounts(name, type_name, role, zeros(), zeros(), zeros(), zeros(), zeros())
        return self.layers[name]

    def _analyse(self) -> None:
        graph = self.snn.graph.graph
        analog_reach = self._analog_reach(graph)
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            module = self.modules[str(node.target)]
            name = str(node.target)
            if isinstance(module, IFNeurons):
                layer = self._layer(name, "IFNeurons", "neurons")
                layer.neurons = _numel(node)
                # --- calibration hook (issue 12, helper "lowlat"): a per-step bias
                # (annsnn.calibration) adds one current per neuron and step: one AC each.
                if getattr(module, "step_bias", None) is not None:
                    self._bias_layers.append((name, layer.neurons))
                continue
            if isinstance(module, _SYNAPTIC_TYPES):
                out = _numel(node)
                bias = out if module.bias is not None else 0
                sizes = {"weight_numel": module.weight.numel(), "input_numel": _numel(node.args[0]), "output_numel": out}
                if node in analog_reach:
                    is_static = node in self.static
                    self._mac_layers.append((name, dense_macs(module, (1, *_shape(node))), bias, is_static))
                    layer = self._layer(name, type(module).__name__, "mac")
                    layer.static = is_static
                else:
                    layer = self._layer(name, type(module).__name__, "synaptic")
                    if bias:
                        self._bias_layers.append((name, bias))
                for key, value in sizes.items():
                    setattr(layer, key, value)
                continue
            known = isinstance(module, _SINK_TYPES + (InputEncoder, Normalize, TemporalModule)) or type(module) in self.handlers
            if not known:
                has_params = any(True for _ in module.parameters(recurse=False))
                self.unsupported.append(f"{name} ({type(module).__name__})")
                if has_params:
                    warnings.warn(f"annsnn cannot count layer {name} ({type(module).__name__}); it is listed as unsupported")
        for node in graph.nodes:
            if node.op == "call_module" and isinstance(self.modules[str(node.target)], (IFNeurons, SpikingMaxPool2d)):
                self._fanout_maps(node)

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
                analog.add(node)  # Poisson spikes are normalized into analog values
            elif isinstance(module, (IFNeurons, SpikingMaxPool2d)):
                continue
            elif isinstance(module, _SYNAPTIC_TYPES):
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
        sinks: list[tuple[str, Tensor]] = []
        graph = self.snn.graph.graph
        reached = {source}
        for node in graph.nodes:
            if node is source or node.op == "placeholder":
                continue
            inputs = node.all_input_nodes
            if not any(a in reached for a in inputs):
                continue
            if node.op == "output":
                sinks.append(("output", _arg_value(node.args[0], values)))
                continue
            if node.op == "call_module":
                module = self.modules[str(node.target)]
                name = str(node.target)
                routed = _arg_value(node.args[0], values)
                if isinstance(module, _SYNAPTIC_TYPES):
                    sinks.append((name, self.handlers[type(module)](module, routed)))
                    continue
                if isinstance(module, _SINK_TYPES):
                    if not isinstance(module, SpikingMaxPool2d):
                        sinks.append((f"{name} (identity synapse)", routed))
                    continue
                handler = self.handlers.get(type(module))
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
            if node.op == "call_method":
                if target in ("size", "dim"):
                    values[node] = getattr(args[0], str(target))(*args[1:])
                    reached.add(node)
                    continue
                target_name = "sum" if target == "mean" else str(target)
                values[node] = getattr(args[0], target_name)(*args[1:], **kwargs)
            elif target is torch.mean:
                values[node] = torch.sum(*args, **kwargs)
            elif getattr(target, "__name__", "") in ("mul", "truediv"):
                values[node] = next(a for a in args if isinstance(a, Tensor))
            else:
                values[node] = target(*args, **kwargs)  # type: ignore[operator]
            reached.add(node)
        names, columns = [], []
        for sink_name, y in sinks:
            if not isinstance(y, Tensor) or not y.requires_grad:
                continue
            (grad,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
            names.append(sink_name)
            columns.append(grad.reshape(-1))
            self._layer(sink_name, "identity synapse" if "identity" in sink_name or sink_name == "output" else self._type_of(sink_name), "synaptic")
        if columns:
            self.fanout[str(source.target)] = (names, torch.stack(columns, dim=1).detach())
        self._layer(str(source.target), type(self.modules[str(source.target)]).__name__, "neurons")

    def _type_of(self, name: str) -> str:
        module = self.modules.get(name)
        return type(module).__name__ if module is not None else "synapse"

    # --- run time ------------------------------------------------------------
    def attach(self, batch_size: int) -> None:
        """Install hooks for one batch of ``batch_size`` samples."""
        self._batch = batch_size
        self.samples += batch_size
        for name in self.fanout:
            module = self.modules[name]
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        for name, layer in self.layers.items():
            if layer.role == "neurons" and isinstance(self.modules.get(name), (IFNeurons, SpikingMaxPool2d)) and name not in self.fanout:
                self._handles.append(self.modules[name].register_forward_hook(self._make_hook(name)))
        for name, macs, bias, is_static in self._mac_layers:
            layer = self.layers[name]
            if is_static:
                layer.macs[0] += macs * batch_size
                layer.bias_acs[0] += bias * batch_size

    def analog_macs_per_step(self) -> int:
        """Dense MACs of the analog-input layers for one sample and one step."""
        return sum(macs for _, macs, _, _ in self._mac_layers)

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
            per_step = out.reshape(steps, self._batch, -1).sum(1).to(torch.float64)
            span = slice(self._start, self._start + steps)
            self.layers[name].spikes[span] += per_step.sum(1).cpu()
            if name in self.fanout:
                sinks, matrix = self.fanout[name]
                if matrix.device != per_step.device:
                    matrix = matrix.to(per_step.device)
                    self.fanout[name] = (sinks, matrix)
                acs = (per_step @ matrix).cpu()  # [steps, sinks]
                for j, sink in enumerate(sinks):
                    self.layers[sink].synaptic_acs[span] += acs[:, j]

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


def _shape_prop(snn: SpikingNetwork) -> None:
    graph_module = snn.graph
    temporal = [m for m in graph_module.modules() if isinstance(m, TemporalModule)]
    for module in temporal:
        module.steps = 1
        module.reset_state()
    snn.encoder.encoding = "direct"
    shape = tuple(snn.meta["input_shape"])
    with torch.no_grad():
        ShapeProp(graph_module).propagate(torch.zeros(1, *shape))
    for node in graph_module.graph.nodes:
        if node.op == "call_method" and node.target in ("size", "dim"):
            src = node.args[0]
            node.meta["annsnn_value"] = getattr(torch.zeros(tuple(src.meta["tensor_meta"].shape)), str(node.target))(*node.args[1:])
    for module in temporal:
        module.reset_state()


def _shape(node: fx.Node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape[1:])


def _numel(node: fx.Node) -> int:
    return int(math.prod(_shape(node)))
