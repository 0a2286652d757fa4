"""Save and load a :class:`SpikingNetwork` without pickled code.

The file is a ``torch.save`` dict of strings and tensors only, so it loads with
``torch.load(weights_only=True)``. Both graphs (SNN and ANN) are stored as a JSON
description -- nodes whose targets come from an allowlist of functions, methods
and module types -- plus their state_dicts. Loading rebuilds the modules from
that allowlist, so nothing in the file can name code to run.
"""
from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import UsageError
from .files import atomic_path
from .graph import UNCONVERTIBLE_MODULES
from .layers import SpikingMaxPool2d, IFNeurons, InputEncoder, Normalize, ReLUClip, Rescale
from .snn import SpikingNetwork

__all__ = ["save_snn", "load_snn", "graph_to_spec", "graph_from_spec", "FORMAT"]

FORMAT = "annsnn-snn"
VERSION = 1

_FUNCTIONS: dict[str, Callable] = {
    "torch.flatten": torch.flatten,
    "torch.reshape": torch.reshape,
    "torch.cat": torch.cat,
    "torch.add": torch.add,
    "torch.mean": torch.mean,
    "torch.squeeze": torch.squeeze,
    "torch.unsqueeze": torch.unsqueeze,
    "torch.transpose": torch.transpose,
    "torch.permute": torch.permute,
    "torch.relu": torch.relu,
    "operator.add": operator.add,
    "operator.iadd": operator.iadd,
    "operator.mul": operator.mul,
    "operator.truediv": operator.truediv,
    "operator.getitem": operator.getitem,
    "builtins.getattr": getattr,
    "F.pad": F.pad,
}
_FUNCTION_NAMES = {id(fn): name for name, fn in _FUNCTIONS.items()}
_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute", "transpose", "expand", "clone", "size", "dim", "mean", "add", "add_"}


def _conv_config(m: nn.Module) -> dict:
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
        "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None, "padding_mode": m.padding_mode,
    }


def _pool_config(m: nn.Module) -> dict:
    keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override", "output_size")
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys if hasattr(m, k) for v in [getattr(m, k)]}


_MODULES: dict[str, tuple[type[nn.Module], Callable[[nn.Module], dict]]] = {
    "Conv1d": (nn.Conv1d, _conv_config),
    "Conv2d": (nn.Conv2d, _conv_config),
    "Linear": (nn.Linear, lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}),
    "AvgPool1d": (nn.AvgPool1d, _pool_config),
    "AvgPool2d": (nn.AvgPool2d, _pool_config),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, _pool_config),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, _pool_config),
    "MaxPool2d": (nn.MaxPool2d, _pool_config),
    "Flatten": (nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim}),
    "ReLUClip": (ReLUClip, lambda m: m.config()),
    "IFNeurons": (IFNeurons, lambda m: m.config()),
    "SpikingMaxPool2d": (SpikingMaxPool2d, lambda m: m.config()),
    "Rescale": (Rescale, lambda m: {}),
    "Normalize": (Normalize, lambda m: {}),
    "InputEncoder": (InputEncoder, lambda m: {}),
}
for _cls in UNCONVERTIBLE_MODULES:
    _MODULES.setdefault(_cls.__name__, (_cls, lambda m: {}))


def _make_module(type_name: str, config: dict, state: dict[str, torch.Tensor], prefix: str) -> nn.Module:
    if type_name not in _MODULES:
        raise UsageError(f"SNN file names an unknown layer type {type_name!r}")
    cls = _MODULES[type_name][0]
    if cls is Rescale:
        return Rescale(state[prefix + "factor"])
    if cls is Normalize:
        return Normalize(state[prefix + "mean"], state[prefix + "std"])
    if cls is IFNeurons:  # the per-step bias is a tensor of the state, not a config value
        if bool(config.get("bias_steps", 0)) != (prefix + "step_bias" in state):
            raise UsageError("SNN file's neuron bias does not match its graph (corrupt file)")
        return IFNeurons(float(config.get("v_init", 0.0)), step_bias=state.get(prefix + "step_bias"))
    if cls in UNCONVERTIBLE_MODULES:
        return cls()
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    return cls(**kwargs)


def _encode(value: Any) -> Any:
    if isinstance(value, fx.Node):
        return {"node": value.name}
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UsageError(f"cannot save an argument of type {type(value).__name__} in an SNN file")


def _decode(value: Any, nodes: dict[str, fx.Node]) -> Any:
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if isinstance(value, dict):
        if "node" in value:
            return nodes[value["node"]]
        if "slice" in value:
            return slice(*[_decode(v, nodes) for v in value["slice"]])
        if "tuple" in value:
            return tuple(_decode(v, nodes) for v in value["tuple"])
        if "dict" in value:
            return {k: _decode(v, nodes) for k, v in value["dict"].items()}
        if "ellipsis" in value:
            return Ellipsis
        if "dtype" in value:
            dtype = getattr(torch, value["dtype"], None)
            if not isinstance(dtype, torch.dtype):
                raise UsageError("SNN file names an unknown dtype")
            return dtype
        raise UsageError("SNN file holds an argument annsnn cannot read")
    return value


def graph_to_spec(gm: fx.GraphModule) -> dict:
    """A JSON-ready description of ``gm``'s graph and modules."""
    nodes, modules = [], {}
    named = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_function":
            name = _FUNCTION_NAMES.get(id(node.target))
            if name is None:
                raise UsageError(f"cannot save function {getattr(node.target, '__name__', node.target)} in an SNN file")
            target: Any = name
        elif node.op == "call_method":
            if node.target not in _METHODS:
                raise UsageError(f"cannot save method .{node.target}() in an SNN file")
            target = node.target
        elif node.op == "call_module":
            module = named[str(node.target)]
            type_name = type(module).__name__
            if type_name not in _MODULES or not isinstance(module, _MODULES[type_name][0]):
                raise UsageError(f"cannot save layer {node.target} ({type_name}) in an SNN file")
            modules[str(node.target)] = {"type": type_name, "config": _MODULES[type_name][1](module)}
            target = str(node.target)
        elif node.op in ("placeholder", "output"):
            target = str(node.target)
        else:
            raise UsageError(f"cannot save graph op {node.op} in an SNN file")
        nodes.append({"name": node.name, "op": node.op, "target": target, "args": _encode(node.args), "kwargs": _encode(dict(node.kwargs))})
    return {"nodes": nodes, "modules": modules}


def graph_from_spec(spec: dict, state: dict[str, torch.Tensor]) -> fx.GraphModule:
    """Rebuild a GraphModule from :func:`graph_to_spec` output and its state_dict."""
    root = nn.Module()
    for path, info in spec["modules"].items():
        module = _make_module(info["type"], info.get("config", {}), state, path + ".")
        parent = root
        parts = path.split(".")
        for part in parts[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(parts[-1], module)
    graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    for item in spec["nodes"]:
        op, target = item["op"], item["target"]
        args = _decode(item["args"], nodes)
        kwargs = _decode(item["kwargs"], nodes)
        if op == "placeholder":
            node = graph.placeholder(target)
        elif op == "output":
            node = graph.output(args[0])
        elif op == "call_module":
            node = graph.call_module(target, tuple(args), kwargs)
        elif op == "call_method":
            if target not in _METHODS:
                raise UsageError(f"SNN file names a method annsnn does not allow: {target}")
            node = graph.call_method(target, tuple(args), kwargs)
        elif op == "call_function":
            if target not in _FUNCTIONS:
                raise UsageError(f"SNN file names a function annsnn does not allow: {target}")
            node = graph.call_function(_FUNCTIONS[target], tuple(args), kwargs)
        else:
            raise UsageError(f"SNN file holds an unknown graph op {op!r}")
        node.name = item["name"]
        nodes[item["name"]] = node
    gm = fx.GraphModule(root, graph)
    missing, unexpected = gm.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise UsageError("SNN file's tensors do not match its graph (corrupt file)")
    return gm.eval()


def save_snn(snn: SpikingNetwork, path: str | os.PathLike) -> None:
    """Write ``snn`` atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta": json.dumps(snn.meta, default=_jsonable),
        "snn_graph": json.dumps(graph_to_spec(snn.graph)),
        "ann_graph": json.dumps(graph_to_spec(snn.ann)),
        "snn_state": {k: v.detach().clone() for k, v in snn.graph.state_dict().items()},
        "ann_state": {k: v.detach().clone() for k, v in snn.ann.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, str(tmp))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def load_snn(path: str | os.PathLike) -> SpikingNetwork:
    """Load an SNN file with ``weights_only=True``; a bad file is a one-line error."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"SNN file {str(file)!r} does not exist")
    try:
        payload = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception:
        raise UsageError(f"{str(file)!r} is not a readable annsnn SNN file (corrupt, truncated, or another format)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{str(file)!r} is not an annsnn SNN file; convert a model first with 'annsnn convert'")
    if payload.get("version") != VERSION:
        raise UsageError(f"{str(file)!r} has SNN format version {payload.get('version')}; this annsnn reads version {VERSION}")
    try:
        meta = json.loads(payload["meta"])
        snn_graph = graph_from_spec(json.loads(payload["snn_graph"]), payload["snn_state"])
        ann_graph = graph_from_spec(json.loads(payload["ann_graph"]), payload["ann_state"])
    except UsageError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{str(file)!r} is a damaged annsnn SNN file ({type(exc).__name__})") from None
    return SpikingNetwork(snn_graph, ann_graph, meta).eval()
