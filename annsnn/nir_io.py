"""NIR export and import (Pedersen et al., "Neuromorphic intermediate representation: A
unified instruction set for interoperable brain-inspired computing", Nature
Communications 15, 8122, 2024; arXiv:2311.14641), through the ``nir`` package: it builds
the typed node objects and writes/reads the HDF5 file (annsnn writes no HDF5 itself).
Reading parses HDF5 datasets with h5py and never runs code from the file.

**How annsnn's discrete time maps onto NIR's continuous time.** NIR's ``IF`` is
``dv/dt = R I`` with a spike when ``v`` crosses ``v_threshold``. One annsnn step is one
time unit, ``dt = 1``, and the input current is held over the step (zero-order hold),
so forward Euler with ``R = 1`` gives annsnn's ``v[t] = v[t-1] + x[t]``. Every IF node is
written with ``r = 1`` and ``v_threshold = 1`` (scales are folded into the weights).

NIR 1.0 has no field for three properties of annsnn's neuron; they go into each IF
node's metadata (and annsnn's importer honours them):

* ``reset = "subtract"``: the NIR equations reset to ``v_reset``; annsnn subtracts the
  threshold. snnTorch 1.0's importer subtracts as well; a reader that resets to
  ``v_reset = 0`` loses the residual charge and fires less.
* ``fires_at = ">="``: annsnn fires at ``v >= 1``, NIR's equations say ``v > 1``; they
  differ only when a potential lands exactly on 1.
* ``v_init``: the initial potential (as a fraction of the threshold).

Graph metadata records what lies outside the graph: the graph's input is the
*normalized* image ``(x - mean)/std`` (the normalization is listed there), fed to the
first layer as an analog current at every step (direct encoding), and the output is the
last layer's current, summed over the steps as the class score.

Exported nodes: Conv1d/Conv2d, Affine (Linear with bias) or Linear, IF, AvgPool2d
(also for an evenly dividing adaptive average pool), Flatten, Scale (annsnn's Rescale
synapse), and residual adds as several edges into one node (NIR sums a node's inputs).
Anything else (spiking max-pool, hybrid analog activations, padding, slicing,
concatenation) is refused in one line that lists every such layer. Each op's NIR form is
the ``nir`` field of its entry in the op registry (:mod:`annsnn.rules.nir_export`); the
exporter reads the entries of the registry the SNN was converted with.
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn

from .errors import UsageError
from .names import layer_label
from .files import atomic_path
from .foreign_snn import GenericNeurons, NeuronSpec, network_from_graph
from .opspec import Role
from .rules.nir_export import node_shape
from .layers import IFNeurons, InputEncoder, Normalize, Rescale, TemporalModule
from .shape_prop import propagate_shapes
from .snn import SpikingNetwork
from .workspace import SnnFile

__all__ = ["NirExport", "to_nir", "export_nir", "read_nir", "from_nir", "load_nir", "NIR_NODE_TYPES"]

NIR_NODE_TYPES = ("Input", "Output", "Conv1d", "Conv2d", "Affine", "Linear", "IF", "LIF", "AvgPool2d", "SumPool2d", "Flatten", "Scale", "Identity")
_FORMAT = "annsnn"


@dataclass
class NirExport:
    """What :func:`export_nir` wrote."""

    path: str
    nodes: dict[str, str]  # NIR node name -> NIR type
    edges: int
    notes: list[str] = field(default_factory=list)


def _require_nir():
    try:
        import nir
    except ImportError:
        raise UsageError("NIR support needs the 'nir' package: pip install 'annsnn[nir]'") from None
    return nir


def _propagate(snn: SpikingNetwork) -> None:
    for module in snn.graph.modules():
        if isinstance(module, TemporalModule):
            module.steps = 1
            module.reset_state()
    snn.encoder.encoding = "direct"
    with torch.no_grad():
        propagate_shapes(snn.graph, torch.zeros(1, *snn.meta["input_shape"]))
    for module in snn.graph.modules():
        if isinstance(module, TemporalModule):
            module.reset_state()


def to_nir(snn: SpikingNetwork) -> "nir.NIRGraph":  # noqa: F821
    """The NIR graph of ``snn``; raises :class:`UsageError` listing every layer NIR cannot express."""
    nir = _require_nir()

    _propagate(snn)
    gm = snn.graph
    registry = snn.registry
    modules = dict(gm.named_modules())
    nodes: dict[str, object] = {}
    edges: list[tuple[str, str]] = []
    sources: dict[fx.Node, list[str]] = {}
    problems: list[str] = []
    normalization = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            nodes["input"] = nir.Input(input_type={"input": np.array(snn.meta["input_shape"])})
            sources[node] = ["input"]
            continue
        if node.op == "output":
            arg = node.args[0]
            if not isinstance(arg, fx.Node):
                problems.append("output (not a single tensor)")
                continue
            nodes["output"] = nir.Output(output_type={"output": np.array(node_shape(arg))})
            edges += [(s, "output") for s in sources.get(arg, [])]
            continue
        ins = [a for a in node.all_input_nodes]
        label = layer_label(str(node.target)) if node.op == "call_module" else node.name  # as the tables name it
        if node.op == "call_module":
            module = modules[str(node.target)]
            if isinstance(module, InputEncoder):
                sources[node] = sources[node.args[0]]
                continue
            spec = registry.for_module(module)
            if spec is not None and spec.role is Role.INPUT:
                if sources[node.args[0]] != ["input"]:
                    problems.append(f"{label} (normalization inside the network)")
                normalization = module.config()
                sources[node] = sources[node.args[0]]
                continue
            result = spec.nir(module, node, label) if spec is not None and spec.nir is not None else None
            if result is None:
                result = f"{label} ({type(module).__name__})"
        else:
            if not hasattr(node.meta.get("tensor_meta"), "shape"):
                continue  # sizes and other non-tensor values feed shapes only
            spec = registry.lookup(node, modules)
            if spec is not None and spec.role is Role.ADD and len(ins) == 2 and all(isinstance(a, fx.Node) for a in node.args[:2]):
                merged = sources[ins[0]] + sources[ins[1]]  # NIR sums a node's inputs: the add is edges into one node
                if len(set(merged)) != len(merged):
                    problems.append(f"{label} (adds a value to itself)")
                sources[node] = merged
                continue
            result = spec.nir(None, node, label) if spec is not None and spec.nir is not None else None
            if result is None:
                result = f"{label} ({getattr(node.target, '__name__', str(node.target))})"
        if isinstance(result, str):
            problems.append(result)
            sources[node] = [s for a in ins for s in sources.get(a, [])]
            continue
        name = _node_name(node, label, nodes)
        nodes[name] = result
        src = sources.get(node.args[0], []) if isinstance(node.args[0], fx.Node) else []
        edges += [(s, name) for s in src]
        sources[node] = [name]
    delay = int(snn.meta.get("readout_delay", 0))
    if delay:
        problems.append(f"readout delay ({delay} step(s) left out of the readout: NIR's output sums every step; convert with --readout-delay 0)")
    if snn.record.calibration.readout_weights:
        problems.append("per-step readout weights (--readout weighted, the default at --T 8 or less): NIR's output sums every step alike; convert with --readout delay")
    if problems:
        hint = " (the zero-padded option-A shortcut of CIFAR ResNets)" if any("F.pad" in p for p in problems) and any("slicing" in p for p in problems) else ""
        calibrated = any("per-step corrections" in p or p.startswith(("readout delay", "per-step readout weights")) for p in problems)
        hint += "; 'annsnn convert MODEL --target nir' converts with the best calibration NIR can express" if calibrated else ""
        hint += "; convert with --maxpool avg to make max-pools average pools, which NIR expresses" if any("SpikingMaxPool2d" in p for p in problems) else ""
        raise UsageError("NIR cannot express: " + "; ".join(problems) + hint)
    info = {
        "format": _FORMAT,
        "time_step_dt": 1.0,
        "input": "the normalized image (x - mean)/std, an analog current into the first layer at every step (direct encoding)",
        "input_normalization": normalization or {"mean": [], "std": []},
        "readout": "the output node's current summed over the time steps; the class is its argmax",
        "neurons": "IF with r=1, v_threshold=1, dt=1 (v[t] = v[t-1] + I[t]); reset by subtracting the threshold and firing at v >= 1 (node metadata)",
        "input_shape": list(snn.meta["input_shape"]),
        "dataset": snn.meta.get("dataset", {}),
    }
    metadata = {
        "annsnn": json.dumps(info),
        "input_normalization_mean": json.dumps((normalization or {}).get("mean", [])),
        "input_normalization_std": json.dumps((normalization or {}).get("std", [])),
        "input_encoding": info["input"],
        "readout": info["readout"],
        "dt": 1.0,
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _node_name(node: fx.Node, label: str, taken: dict) -> str:
    """A NIR node's name: the layer's name as annsnn's tables show it (``features.2`` ->
    ``features_2``), or the graph node's own unique name for a function or a reused module."""
    from .names import layer_label

    name = re.sub(r"\W", "_", layer_label(label) if node.op == "call_module" else node.name)
    return name if name not in taken and name not in ("input", "output") else re.sub(r"\W", "_", node.name)


def export_nir(snn: SpikingNetwork, path: str | os.PathLike, *, source: SnnFile | None = None) -> NirExport:
    """Write ``snn`` as a NIR file (atomically); nothing is written if NIR cannot express it.
    ``source``, the SNN file it was read from, goes into the graph's metadata
    (``annsnn_source``: JSON of its path and SHA-256), so the NIR file names its SNN."""
    nir = _require_nir()

    graph = to_nir(snn)
    if source is not None:
        graph.metadata["annsnn_source"] = json.dumps(source.to_dict())
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    notes = [
        "IF nodes: r=1, v_threshold=1, dt=1; reset by subtraction, firing at v >= 1 and v_init are in each node's metadata (NIR 1.0 has no fields for them)",
        "the graph's input is the normalized image (mean/std in the graph metadata), an analog current at every step",
    ]
    return NirExport(path=str(path), nodes=kinds, edges=len(graph.edges), notes=notes)


# ---------------------------------------------------------------------------
# import


def read_nir(path: str | os.PathLike) -> "nir.NIRGraph":  # noqa: F821
    """Read a NIR file; a missing, truncated or foreign file, or an unknown node type, is a one-line error."""
    nir = _require_nir()

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"NIR file {str(file)!r} does not exist")
    unknown = _unknown_node_types(file)
    if unknown:
        raise UsageError(f"{str(file)!r} names a node type NIR (and annsnn) does not know: {', '.join(unknown)}")
    try:
        return nir.read(str(file))
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else "invalid graph"
        if message.startswith("Unknown unit type"):
            raise UsageError(f"{str(file)!r} names a node type NIR (and annsnn) does not know: {message.split(':', 1)[1].strip()}") from None
        raise UsageError(f"{str(file)!r} is not a valid NIR graph ({message})") from None
    except Exception as exc:  # h5py raises OSError/KeyError for truncated or non-HDF5 files
        raise UsageError(f"{str(file)!r} is not a readable NIR file (truncated, corrupt, or another format: {type(exc).__name__})") from None


def _unknown_node_types(file: Path) -> list[str]:
    """``type (node)`` for every node whose type the ``nir`` package does not define;
    [] when the file cannot be scanned (then :func:`nir.read` reports the problem)."""
    import h5py
    import nir

    known = set(nir.ir.__all__)
    found: list[str] = []

    def scan(group, prefix: str) -> None:
        nodes = group.get("nodes") if "nodes" in group else None
        if nodes is None:
            return
        for name, node in nodes.items():
            kind = node["type"][()] if "type" in node else b"?"
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind not in known:
                found.append(f"{kind} ({prefix}{name})")
            elif kind == "NIRGraph":
                scan(node, f"{prefix}{name}.")

    try:
        with h5py.File(file, "r") as f:
            scan(f["node"], "")
    except Exception:  # unreadable: nir.read gives the one-line error
        return []
    return found


def _meta_str(value) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "SO":
        return value.item().decode() if isinstance(value.item(), bytes) else str(value.item())
    return str(value)


def _uniform(array, what: str, label: str) -> float:
    values = np.unique(np.asarray(array, dtype=np.float64))
    if values.size != 1:
        raise UsageError(f"NIR node {label}: per-neuron {what} values are not supported (found {values.size} distinct)")
    return float(values[0])


def _neuron(node, label: str, dt: float) -> nn.Module:
    import nir

    meta = {k: _meta_str(v) for k, v in (node.metadata or {}).items()}
    r = _uniform(node.r, "r", label)
    theta = _uniform(node.v_threshold, "v_threshold", label)
    v_reset = _uniform(node.v_reset, "v_reset", label)
    if isinstance(node, nir.IF):
        if "dt" in meta and float(meta["dt"]) != dt:
            raise UsageError(f"NIR node {label} was written by annsnn: its neurons run in steps of dt = {float(meta['dt']):g}, recorded in the file, "
                             f"so --dt {dt:g} does not apply; drop --dt")
        if meta.get("reset") == "subtract" and meta.get("fires_at") == ">=" and r == 1.0 and theta == 1.0 and float(meta.get("dt", dt)) == 1.0:
            return IFNeurons(v_init=float(meta.get("v_init", 0.0)))  # annsnn's own neuron, bit for bit
        return GenericNeurons(NeuronSpec(0.0, r * dt, 0.0, theta, "hard", v_reset, True, 0.0))
    tau = _uniform(node.tau, "tau", label)
    v_leak = _uniform(node.v_leak, "v_leak", label)
    if tau <= 0 or dt / tau > 1:
        raise UsageError(f"NIR node {label}: tau={tau:g} is shorter than the step dt={dt:g}; pass a smaller --dt")
    return GenericNeurons(NeuronSpec(dt / tau, r * dt / tau, v_leak, theta, "hard", v_reset, True, 0.0))


def _nir_module(node, label: str, dt: float) -> nn.Module:
    import nir

    if isinstance(node, (nir.IF, nir.LIF)):
        return _neuron(node, label, dt)
    if isinstance(node, nir.Conv2d):
        w = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
        padding = node.padding if isinstance(node.padding, str) else tuple(int(p) for p in np.atleast_1d(node.padding))
        conv = nn.Conv2d(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), tuple(int(s) for s in np.atleast_1d(node.stride)), padding, tuple(int(d) for d in np.atleast_1d(node.dilation)), int(node.groups), bias=True)
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(torch.as_tensor(np.asarray(node.bias, dtype=np.float32)).reshape(-1))
        return conv
    if isinstance(node, nir.Conv1d):
        w = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
        conv1 = nn.Conv1d(w.shape[1] * int(node.groups), w.shape[0], w.shape[2], int(np.atleast_1d(node.stride)[0]), node.padding if isinstance(node.padding, str) else int(np.atleast_1d(node.padding)[0]), int(np.atleast_1d(node.dilation)[0]), int(node.groups), bias=True)
        conv1.weight.data.copy_(w)
        conv1.bias.data.copy_(torch.as_tensor(np.asarray(node.bias, dtype=np.float32)).reshape(-1))
        return conv1
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.as_tensor(np.asarray(node.weight, dtype=np.float32))
        if w.dim() != 2:
            raise UsageError(f"NIR node {label}: weights of rank {w.dim()} are not supported")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
        lin.weight.data.copy_(w)
        if isinstance(node, nir.Affine):
            lin.bias.data.copy_(torch.as_tensor(np.asarray(node.bias, dtype=np.float32)).reshape(-1))
        return lin
    if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
        k, s, p = (tuple(int(v) for v in np.broadcast_to(np.atleast_1d(x), (2,))) for x in (node.kernel_size, node.stride, node.padding))
        return nn.AvgPool2d(k, s, p, divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
    if isinstance(node, nir.Flatten):
        return nn.Flatten(int(node.start_dim) + 1 if int(node.start_dim) >= 0 else int(node.start_dim), int(node.end_dim) + 1 if int(node.end_dim) >= 0 else int(node.end_dim))
    if isinstance(node, nir.Scale):
        return Rescale(torch.as_tensor(np.asarray(node.scale, dtype=np.float32)))
    if isinstance(node, nir.Identity):
        return nn.Identity()
    raise UsageError(f"NIR node {label} has type {type(node).__name__}, which annsnn cannot run (it reads {', '.join(NIR_NODE_TYPES)})")


def from_nir(graph, *, dt: float = 1.0, input_shape: tuple[int, ...] | None = None, meta: dict | None = None) -> SpikingNetwork:
    """An annsnn :class:`SpikingNetwork` running ``graph`` with step ``dt`` (forward Euler).

    A graph that annsnn wrote comes back as annsnn's own IF neurons (bit-identical
    simulation); other IF/LIF nodes follow NIR's equations: strict threshold, reset to
    ``v_reset``. Several edges into one node are summed. Unknown node types, per-neuron
    parameter arrays, sub-graphs and recurrent edges are refused in one line.
    """
    import nir

    if not math.isfinite(dt) or dt <= 0:
        raise UsageError("--dt must be positive")
    inputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UsageError(f"annsnn runs NIR graphs with one input and one output (this one has {len(inputs)} and {len(outputs)})")
    subgraphs = [n for n, v in graph.nodes.items() if isinstance(v, nir.NIRGraph)]
    if subgraphs:
        raise UsageError(f"NIR sub-graphs (recurrent blocks) are not supported: {', '.join(subgraphs)}")
    unknown = [f"{n} ({type(v).__name__})" for n, v in graph.nodes.items() if type(v).__name__ not in NIR_NODE_TYPES]
    if unknown:
        raise UsageError(f"annsnn cannot run these NIR nodes: {', '.join(unknown)} (it reads {', '.join(NIR_NODE_TYPES)})")
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise UsageError(f"NIR edge {src} -> {dst} names a missing node")
        preds[dst].append(src)
    order = _topological(graph.nodes, graph.edges)
    raw_meta = {k: _meta_str(v) for k, v in (graph.metadata or {}).items()}
    info = json.loads(raw_meta["annsnn"]) if "annsnn" in raw_meta else {}
    shape = tuple(int(s) for s in (input_shape or np.asarray(graph.nodes[inputs[0]].input_type["input"]).tolist()))
    if not shape:
        raise UsageError("the NIR graph gives no input shape; pass --input-shape C,H,W")
    root = nn.Module()
    root.add_module("encoder", InputEncoder())
    fxg = fx.Graph()
    value: dict[str, fx.Node] = {}
    x = fxg.call_module("encoder", (fxg.placeholder("x"),))
    norm = info.get("input_normalization") or {}
    if norm.get("mean"):
        root.add_module("normalize", Normalize(norm["mean"], norm["std"]))
        x = fxg.call_module("normalize", (x,))
    used: set[str] = {"encoder", "normalize"}
    for name in order:
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            value[name] = x
            continue
        if not preds[name]:
            raise UsageError(f"NIR node {name} has no input edge")
        summed = value[preds[name][0]]
        for p in preds[name][1:]:
            summed = fxg.call_function(operator.add, (summed, value[p]))
        if isinstance(node, nir.Output):
            fxg.output(summed)
            continue
        module = _nir_module(node, name, dt)
        attr = re.sub(r"\W", "_", name)
        if not attr or attr[0].isdigit() or attr in used:
            attr = f"n_{attr}_{len(used)}"
        used.add(attr)
        root.add_module(attr, module)
        value[name] = fxg.call_module(attr, (summed,))
    gm = fx.GraphModule(root, fxg)
    try:
        snn = network_from_graph(gm, shape, {"source": "nir", "nir_dt": dt, "nir_metadata": info, "dataset": info.get("dataset", {}), **(meta or {})})
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"the NIR graph does not run on input shape {shape}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return snn


def _topological(nodes: dict, edges: list[tuple[str, str]]) -> list[str]:
    indegree = {n: 0 for n in nodes}
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for src, dst in edges:
        indegree[dst] += 1
        succ[src].append(dst)
    ready = [n for n in nodes if indegree[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                ready.append(m)
    if len(order) != len(nodes):
        cyclic = sorted(n for n, d in indegree.items() if d > 0)
        raise UsageError(f"the NIR graph has recurrent edges (through {', '.join(cyclic[:5])}); annsnn runs feed-forward graphs only")
    return order


def load_nir(path: str | os.PathLike, *, dt: float = 1.0, input_shape: tuple[int, ...] | None = None) -> SpikingNetwork:
    """:func:`read_nir` then :func:`from_nir`."""
    return from_nir(read_nir(path), dt=dt, input_shape=input_shape, meta={"nir_file": str(path)})
