"""SNNs that annsnn did not convert: leaky and generic integrate-and-fire neurons, and
networks trained directly in SpikingJelly, brought into annsnn's own form so that one
counter (:class:`~annsnn.counting.SnnCounter`) measures converted and directly trained
SNNs alike.

**Neuron.** :class:`GenericNeurons` runs one discrete-time update per step on the
merged ``[K*B, ...]`` layout of :mod:`annsnn.layers`::

    h[t] = v[t-1] + a * (v_leak - v[t-1]) + b * x[t]            (charge)
    s[t] = 1[h[t] >= theta]   (or  1[h[t] > theta]  when strict)  (fire)
    v[t] = h[t] - s[t] * theta                 (reset = "subtract")
    v[t] = (1 - s[t]) * h[t] + s[t] * v_reset  (reset = "hard")

* IF (no leak): ``a = 0``. NIR's ``IF`` (``dv/dt = R I``) under forward Euler with step
  ``dt`` gives ``b = R dt``.
* NIR's ``LIF`` (``tau dv/dt = (v_leak - v) + R I``) under forward Euler with step ``dt``
  gives ``a = dt/tau`` and ``b = R dt/tau``.
* SpikingJelly 2.0's ``LIFNode`` (Fang et al., Science Advances 2023, "SpikingJelly: an
  open-source machine learning infrastructure platform for spike-based intelligence"):
  ``decay_input=True`` is ``H = V + (X - (V - V_reset))/tau`` (``a = b = 1/tau``,
  ``v_leak = v_reset``, or 0 when it resets by subtraction), ``decay_input=False`` is
  ``H = V - (V - V_reset)/tau + X`` (``a = 1/tau``, ``b = 1``). It fires at ``H >= V_th``
  and resets hard to ``v_reset``, or by subtracting ``V_th`` when ``v_reset`` is None.

Because :class:`GenericNeurons` subclasses :class:`~annsnn.layers.IFNeurons`, the counter
treats it as a spike source with one update per neuron and step, as it does IF neurons.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, fx, nn

from .errors import UsageError
from .layers import IFNeurons, InputEncoder, ReLUClip, TemporalModule
from .ops import default_registry
from .snn import SpikingNetwork
from .training_mode import evaluating

__all__ = [
    "NeuronSpec",
    "GenericNeurons",
    "dense_stand_in",
    "network_from_graph",
    "from_spikingjelly",
    "SUPPORTED_SPIKINGJELLY_NEURONS",
    "spikingjelly_neuron_spec",
    "as_spiking",
    "network_from_direct",
    "network_from_stdp",
    "without_stand_in_accuracy",
]

Reset = Literal["subtract", "hard"]


@dataclass(frozen=True)
class NeuronSpec:
    """Discrete-time neuron parameters (see the module docstring for the update)."""

    leak: float = 0.0  # a
    gain: float = 1.0  # b
    v_leak: float = 0.0
    threshold: float = 1.0
    reset: Reset = "subtract"
    v_reset: float = 0.0
    strict: bool = False  # fire at h > theta instead of h >= theta
    v_init: float = 0.0  # absolute initial potential
    sj_tau: float | None = None  # SpikingJelly's own arithmetic (divide by tau), for bit equality with its LIFNode
    sj_decay_input: bool = True

    def __post_init__(self) -> None:
        for name in ("leak", "gain", "v_leak", "threshold", "v_reset", "v_init"):
            if not math.isfinite(getattr(self, name)):
                raise UsageError(f"neuron parameter {name} is not finite")
        if not 0.0 <= self.leak <= 1.0:
            raise UsageError(f"neuron leak factor {self.leak:g} is outside [0, 1] (tau shorter than one step)")
        if self.threshold <= 0:
            raise UsageError("neuron threshold must be positive")
        if self.reset not in ("subtract", "hard"):
            raise UsageError(f"unknown reset {self.reset!r}")

    @property
    def kind(self) -> str:
        return "LIF" if self.leak > 0 else "IF"


class GenericNeurons(IFNeurons):
    """IF/LIF neurons with any threshold, leak, gain and reset (:class:`NeuronSpec`)."""

    def __init__(self, spec: NeuronSpec) -> None:
        super().__init__(v_init=spec.v_init / spec.threshold)
        self.spec = spec

    def forward(self, x: Tensor) -> Tensor:
        p = self.spec
        seq = x.reshape(self.steps, -1, *x.shape[1:]).float()
        if self.v is None:
            self.v = torch.full(seq.shape[1:], p.v_init, dtype=torch.float32, device=x.device)
        v = self.v
        spikes = torch.empty_like(seq)
        for t in range(seq.shape[0]):
            if p.sj_tau is not None:  # SpikingJelly 2.0 neuronal_charge, same operation order
                h = v + (seq[t] - (v - p.v_leak)) / p.sj_tau if p.sj_decay_input else v - (v - p.v_leak) / p.sj_tau + seq[t]
            elif p.leak:
                h = v + p.leak * (p.v_leak - v) + p.gain * seq[t]
            else:
                h = v + p.gain * seq[t]
            s = (h > p.threshold) if p.strict else (h >= p.threshold)
            spikes[t] = s
            if p.reset == "subtract":
                v = h - spikes[t] * p.threshold
            else:
                v = torch.where(s, torch.full_like(h, p.v_reset), h)
        self.v = v
        return spikes.to(x.dtype).reshape(x.shape)

    def config(self) -> dict:
        return {"spec": self.spec.__dict__}

    def extra_repr(self) -> str:
        p = self.spec
        return f"{p.kind}, threshold={p.threshold:g}{' (strict)' if p.strict else ''}, leak={p.leak:g}, gain={p.gain:g}, reset={p.reset}"


def dense_stand_in(graph: fx.GraphModule) -> fx.GraphModule:
    """The same layers with ReLU in place of every neuron: the MAC reference of a foreign
    SNN (which has no ANN of its own). Its accuracy means nothing and is not reported."""
    gm = copy.deepcopy(graph)
    for name, module in list(gm.named_modules()):
        if isinstance(module, IFNeurons):
            parent, _, leaf = name.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, ReLUClip(None))
        if isinstance(module, InputEncoder):
            module.encoding = "direct"
    gm.recompile()
    return gm.eval()


def network_from_graph(graph: fx.GraphModule, input_shape: tuple[int, ...], meta: dict) -> SpikingNetwork:
    """Wrap an fx graph (placeholder -> ``encoder`` -> layers) as a :class:`SpikingNetwork`."""
    from .shape_prop import propagate_shapes

    if not isinstance(graph.get_submodule("encoder"), InputEncoder):
        raise UsageError("internal: a foreign network needs an InputEncoder named 'encoder'")
    ann = dense_stand_in(graph)
    with torch.no_grad():
        propagate_shapes(ann, torch.zeros(1, *input_shape))
    sizes = [int(math.prod(n.meta["tensor_meta"].shape[1:])) for n in ann.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")]
    info = dict(meta)
    info.update({"input_shape": list(input_shape), "max_activation_numel": max(sizes) if sizes else 1, "ann_is_stand_in": True})
    for module in graph.modules():
        if isinstance(module, TemporalModule):
            module.reset_state()
    return SpikingNetwork(graph.eval(), ann, info, registry=default_registry()).eval()


# ---------------------------------------------------------------------------
# SpikingJelly


def _sj_types() -> dict[str, type]:
    from spikingjelly.activation_based import neuron

    return {"IFNode": neuron.IFNode, "LIFNode": neuron.LIFNode, "ParametricLIFNode": neuron.ParametricLIFNode}


SUPPORTED_SPIKINGJELLY_NEURONS = ("IFNode", "LIFNode", "ParametricLIFNode")


def spikingjelly_neuron_spec(node: nn.Module) -> NeuronSpec:
    """The :class:`NeuronSpec` of a SpikingJelly 2.0 IF/LIF/PLIF node; anything else is refused."""
    types = _sj_types()
    name = type(node).__name__
    if type(node) not in types.values():
        raise UsageError(f"unknown neuron type {name}: annsnn reads SpikingJelly {', '.join(SUPPORTED_SPIKINGJELLY_NEURONS)}")
    v_th = float(node.v_threshold)
    hard = node.v_reset is not None
    v_reset = float(node.v_reset) if hard else 0.0
    reset: Reset = "hard" if hard else "subtract"
    v_init = v_reset if hard else 0.0  # SpikingJelly starts at v_reset (0 for soft reset)
    if isinstance(node, types["IFNode"]):
        return NeuronSpec(0.0, 1.0, 0.0, v_th, reset, v_reset, False, v_init)
    if isinstance(node, types["ParametricLIFNode"]):
        tau = 1.0 / float(torch.sigmoid(node.w.detach()))
    else:
        tau = float(node.tau)
    decay_input = bool(node.decay_input)
    return NeuronSpec(1.0 / tau, 1.0 / tau if decay_input else 1.0, v_reset if hard else 0.0, v_th, reset, v_reset, False, v_init, tau, decay_input)


def _flatten_chain(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        out: list[nn.Module] = []
        for child in module:
            out += _flatten_chain(child)
        return out
    return [module]


def from_spikingjelly(module: nn.Module, input_shape: tuple[int, ...], meta: dict | None = None) -> SpikingNetwork:
    """A SpikingJelly multi-step network given as an ``nn.Sequential`` chain (containers such
    as ``SeqToANNContainer`` are Sequentials) in annsnn's form. BatchNorm after a conv or
    linear layer is folded; Dropout is dropped (eval). Neurons: IF, LIF, PLIF nodes; any
    other module on the chain is refused with one line listing them."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    with evaluating(module):  # the user's network back in its own mode afterwards
        chain = _flatten_chain(module)
    sj = tuple(_sj_types().values())
    layers: list[nn.Module] = []
    refused: list[str] = []
    for item in chain:
        if isinstance(item, sj):
            layers.append(GenericNeurons(spikingjelly_neuron_spec(item)))
        elif isinstance(item, (nn.Conv1d, nn.Conv2d)):
            layers.append(_plain_conv(item))
        elif isinstance(item, nn.Linear):
            plain = nn.Linear(item.in_features, item.out_features, bias=item.bias is not None)
            plain.load_state_dict(item.state_dict())
            layers.append(plain)
        elif isinstance(item, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not layers or not isinstance(layers[-1], (nn.Conv1d, nn.Conv2d, nn.Linear)):
                refused.append(f"{type(item).__name__} not after a conv/linear layer")
                continue
            prev = layers.pop()
            norm = copy.deepcopy(item).eval()  # the running statistics, whatever mode the user's net is in
            layers.append(fuse_conv_bn_eval(prev.eval(), norm) if isinstance(prev, (nn.Conv1d, nn.Conv2d)) else fuse_linear_bn_eval(prev.eval(), norm))
        elif isinstance(item, nn.AvgPool2d):
            layers.append(nn.AvgPool2d(item.kernel_size, item.stride, item.padding, item.ceil_mode, item.count_include_pad, item.divisor_override))
        elif isinstance(item, nn.AdaptiveAvgPool2d):
            layers.append(nn.AdaptiveAvgPool2d(item.output_size))
        elif isinstance(item, nn.Flatten):
            layers.append(nn.Flatten(item.start_dim, item.end_dim))
        elif isinstance(item, (nn.Dropout, nn.Identity)):
            continue
        elif type(item).__name__.endswith("Node"):
            refused.append(f"unknown neuron type {type(item).__name__}")
        else:
            refused.append(type(item).__name__)
    if refused:
        raise UsageError("annsnn cannot analyse this SpikingJelly network: " + ", ".join(dict.fromkeys(refused)) + f" (supported: Conv, Linear, BatchNorm, AvgPool, Flatten, Dropout, {', '.join(SUPPORTED_SPIKINGJELLY_NEURONS)} in an nn.Sequential)")
    root = nn.Module()
    root.add_module("encoder", InputEncoder())
    graph = fx.Graph()
    value = graph.call_module("encoder", (graph.placeholder("x"),))
    for i, layer in enumerate(layers):
        root.add_module(f"layer{i}", layer)
        value = graph.call_module(f"layer{i}", (value,))
    graph.output(value)
    gm = fx.GraphModule(root, graph)
    return network_from_graph(gm, input_shape, {"source": "spikingjelly", **(meta or {})})


def _plain_conv(item: nn.Module) -> nn.Module:
    cls = nn.Conv2d if isinstance(item, nn.Conv2d) else nn.Conv1d
    plain = cls(item.in_channels, item.out_channels, item.kernel_size, item.stride, item.padding, item.dilation, item.groups, item.bias is not None, item.padding_mode)
    plain.load_state_dict(item.state_dict())
    return plain


def as_spiking(canonical: fx.GraphModule, spec: NeuronSpec, meta: dict, input_shape: tuple[int, ...]) -> SpikingNetwork:
    """A canonical ANN graph (:func:`annsnn.graph.canonicalize`) with every ReLU replaced by
    ``spec`` neurons and an input encoder in front: the form of a directly trained SNN
    that has the ANN's architecture."""
    gm = copy.deepcopy(canonical)
    refused = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(str(node.target))
        if isinstance(module, ReLUClip):
            if module.ceiling is not None:
                refused.append(f"{node.target} (ReLU6/clip)")
            parent, _, leaf = str(node.target).rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, GenericNeurons(spec))
        elif isinstance(module, (nn.MaxPool2d,)):
            refused.append(f"{node.target} (MaxPool2d on spikes)")
    if refused:
        raise UsageError("annsnn cannot count these layers of a directly trained SNN: " + ", ".join(refused))
    gm.add_submodule("encoder", InputEncoder())
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(placeholder):
        enc = gm.graph.call_module("encoder", (placeholder,))
    placeholder.replace_all_uses_with(enc, delete_user_cb=lambda user: user is not enc)
    gm.graph.lint()
    gm.recompile()
    return network_from_graph(gm, input_shape, meta)


def network_from_direct(payload: dict) -> SpikingNetwork:
    """A directly trained checkpoint (``annsnn zoo train --snn``) in annsnn's form: the
    architecture canonicalized (BatchNorm folded, as in eval) with its LIF neurons."""
    from .graph import canonicalize
    from .zoo import build
    from .zoo.direct import DIRECT_FORMAT

    if payload.get("format") != DIRECT_FORMAT:
        raise UsageError("not a directly trained SNN checkpoint")
    try:
        cfg = payload["neuron"]
        if cfg.get("type") != "LIFNode":
            raise UsageError(f"unknown neuron type {cfg.get('type')!r} in the checkpoint (annsnn reads LIFNode)")
        tau = float(cfg["tau"])
        v_reset = cfg.get("v_reset")
        spec = NeuronSpec(1.0 / tau, 1.0 / tau if cfg.get("decay_input", True) else 1.0, float(v_reset or 0.0), float(cfg["v_threshold"]),
                          "hard" if v_reset is not None else "subtract", float(v_reset or 0.0), False, float(v_reset or 0.0), tau, bool(cfg.get("decay_input", True)))
        model = build(payload["arch"], num_classes=int(payload["num_classes"]))
        model.load_state_dict(payload["state_dict"])
        shape = tuple(int(s) for s in payload["input_shape"])
        norm = (list(payload["normalization"]["mean"]), list(payload["normalization"]["std"]))
    except UsageError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"damaged directly trained SNN checkpoint ({type(exc).__name__})") from None
    canonical = canonicalize(model, normalization=norm, input_shape=shape)
    meta = {"source": "annsnn-direct-snn", "arch": payload["arch"], "trained_T": int(payload["T"]), "neuron": cfg,
            "dataset": {"name": payload.get("dataset")}, "normalization": {"mean": norm[0], "std": norm[1]}}
    return as_spiking(canonical.module, spec, meta, shape)


def network_from_stdp(payload: dict):
    """An STDP checkpoint as a :class:`~annsnn.snn.SpikingNetwork` (Poisson input only):
    ``encoder -> Linear(784, N) -> DiehlCookNeurons -> Linear(N, classes)`` readout."""
    from .zoo.stdp import STDP_FORMAT, DiehlCookNeurons, RateEncoder, load_stdp_checkpoint, readout_matrix

    if payload.get("format") != STDP_FORMAT:
        raise UsageError("not an STDP checkpoint")
    weight, theta, assignments, params, prob, classes, shape = load_stdp_checkpoint(payload)
    root = nn.Module()
    root.add_module("encoder", RateEncoder(prob))
    synapse = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    synapse.weight.data.copy_(weight)
    root.add_module("synapse", synapse)
    root.add_module("excitatory", DiehlCookNeurons(theta, params))
    readout = nn.Linear(weight.shape[0], classes, bias=False)
    readout.weight.data.copy_(readout_matrix(assignments, classes))
    root.add_module("readout", readout)
    graph = fx.Graph()
    x = graph.placeholder("x")
    value = graph.call_module("encoder", (x,))
    value = graph.call_module("flatten", (value,))
    root.add_module("flatten", nn.Flatten())
    for name in ("synapse", "excitatory", "readout"):
        value = graph.call_module(name, (value,))
    graph.output(value)
    meta = {"source": STDP_FORMAT, "encoding": "poisson", "trained_T": int(payload.get("T", 0)),
            "dataset": {"name": payload.get("dataset")}, "neurons": int(weight.shape[0])}
    return network_from_graph(fx.GraphModule(root, graph), shape, meta)


def without_stand_in_accuracy(result):
    """An :class:`~annsnn.analyzer.AnalysisResult` of a foreign SNN with the stand-in ANN's
    accuracy and the SNN-vs-ANN gap removed (they compare with an untrained dense copy);
    its MACs and energy stay, labelled, as the dense reference of the same layers."""
    import dataclasses

    ann = dataclasses.replace(result.ann, top1=None, recall_macro=None, f1_macro=None)
    rows = [dataclasses.replace(r, gap=None) for r in result.rows]
    notes = list(result.notes) + [
        "foreign SNN: the 'ANN' row is the same layers with ReLU in place of the neurons, a dense MAC reference; it is not a trained ANN and has no accuracy; 'agreement' compares with it and means nothing"
    ]
    return dataclasses.replace(result, ann=ann, rows=rows, notes=notes)
