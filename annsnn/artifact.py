"""Save and load a :class:`SpikingNetwork` without pickled code.

The file is a ``torch.save`` dict of strings and tensors only, so it loads with
``torch.load(weights_only=True)``. Both graphs (SNN and ANN) are stored as a JSON
description -- nodes whose targets come from an allowlist of functions, methods
and module types -- plus their state_dicts. Loading rebuilds the modules from
that allowlist, so nothing in the file can name code to run.

torch.fx turns a graph into Python source (node names become variables, placeholder
targets become parameters, keyword names and module paths are pasted in as written),
so before anything is built :func:`validate_spec` checks every string of the graph
that reaches that source: names are plain identifiers (no keyword, no dunder, no
builtin or name fx's generated code relies on), module paths are dotted identifiers
or quote-free ONNX-style parts such as ``0/Conv``, targets come from the allowlists,
and ``getattr`` reads only plain attribute names. A file that fails is refused with
one line; nothing from it has run.
"""
from __future__ import annotations

import builtins
import json
import keyword
import operator
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .analog import ANALOG_FUNCTIONS, ANALOG_METHODS, ANALOG_MODULES, AnalogOp, build_module, module_config
from .errors import UsageError
from .files import atomic_path
from .layers import SpikingMaxPool2d, IFNeurons, InputEncoder, Normalize, ReLUClip, Rescale
from .snn import SpikingNetwork

__all__ = ["save_snn", "load_snn", "graph_to_spec", "graph_from_spec", "validate_spec", "FORMAT"]

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
    "torch.chunk": torch.chunk,
    "torch.swapaxes": torch.swapaxes,
    "torch.movedim": torch.movedim,
    "torch.split": torch.split,
    "torch.unbind": torch.unbind,
}
for _name, _fn in ANALOG_FUNCTIONS.items():  # the ANN graph of a hybrid SNN keeps its analog ops
    _FUNCTIONS.setdefault(_name, _fn)
_FUNCTION_NAMES = {id(fn): name for name, fn in reversed(list(_FUNCTIONS.items()))}
_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "permute", "transpose", "expand", "clone", "size", "dim", "mean", "add", "add_", "chunk", "split", "unbind", "swapaxes", "movedim"} | set(ANALOG_METHODS)


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
_MODULES["AnalogOp"] = (AnalogOp, lambda m: m.config())
for _cls in ANALOG_MODULES:  # constructor arguments through the analog registry (LeakyReLU(0.2) stays 0.2)
    _MODULES.setdefault(_cls.__name__, (_cls, module_config))


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
    if cls is AnalogOp:
        return AnalogOp.from_config(config, state, prefix)
    if cls in ANALOG_MODULES:
        return build_module(type_name, config)
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


# Names the code fx generates refers to (besides builtins): a node may not shadow them.
_RESERVED = frozenset({"self", "getattr", "torch", "operator", "builtins", "math", "fx_pytree", "pytree", "inf", "nan", "NoneType", "device", "wrap"})
# A module-path part fx cannot write as ``.part`` goes inside ``getattr(obj, "part")``; these
# characters cannot leave that string literal (onnx2torch names modules like ``11/Relu``).
_QUOTED_PART = re.compile(r"[A-Za-z0-9_/\-]+")
_OPS = frozenset({"placeholder", "output", "call_module", "call_method", "call_function", "get_attr"})


def _bad(what: str) -> UsageError:
    return UsageError(f"SNN file refused: {what} (crafted or damaged file; nothing from it was run)")


def _is_identifier(name: object) -> bool:
    """An ASCII Python identifier that is no keyword, no dunder name and none of the names
    fx's generated code relies on."""
    return (
        isinstance(name, str) and name.isidentifier() and name.isascii() and not keyword.iskeyword(name)
        and not name.startswith("__") and name not in _RESERVED
    )


def _is_plain_name(name: object) -> bool:
    """An identifier that shadows no builtin either (fx itself never names a node so)."""
    return _is_identifier(name) and not hasattr(builtins, str(name))


def _check_module_path(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise _bad(f"module path {path!r} is not a string")
    for part in path.split("."):
        if part.startswith("__") or keyword.iskeyword(part) or not (part.isidentifier() and part.isascii() or _QUOTED_PART.fullmatch(part)):
            raise _bad(f"module path {path!r} has an illegal part {part!r}")
    return path


def _check_value(value: Any, known: set[str], where: str) -> None:
    """Arguments: only the JSON shapes :func:`_encode` writes, node references to earlier nodes."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, list):
        for v in value:
            _check_value(v, known, where)
        return
    if not isinstance(value, dict) or len(value) != 1:
        raise _bad(f"{where} holds an argument annsnn cannot read")
    (tag, inner), = value.items()
    if tag == "node":
        if not isinstance(inner, str) or inner not in known:
            raise _bad(f"{where} refers to an unknown or later node {inner!r}")
    elif tag in ("slice", "tuple"):
        if not isinstance(inner, list) or (tag == "slice" and len(inner) != 3):
            raise _bad(f"{where} holds a malformed {tag}")
        _check_value(inner, known, where)
    elif tag == "dict":
        if not isinstance(inner, dict):
            raise _bad(f"{where} holds a malformed dict")
        for v in inner.values():
            _check_value(v, known, where)
    elif tag == "ellipsis":
        if inner is not True:
            raise _bad(f"{where} holds a malformed ellipsis")
    elif tag == "dtype":
        if not (isinstance(inner, str) and inner.isidentifier() and isinstance(getattr(torch, inner, None), torch.dtype)):
            raise _bad(f"{where} names an unknown dtype {inner!r}")
    else:
        raise _bad(f"{where} holds an argument annsnn cannot read ({tag!r})")


def validate_spec(spec: Any) -> None:
    """Check a graph description before anything is built from it; raise ``UsageError`` if it
    could put anything but allowlisted calls into the code fx generates."""
    if not isinstance(spec, dict) or not isinstance(spec.get("nodes"), list) or not isinstance(spec.get("modules"), dict):
        raise _bad("the graph is not a {nodes, modules} description")
    for path, info in spec["modules"].items():
        _check_module_path(path)
        if not isinstance(info, dict) or info.get("type") not in _MODULES or not isinstance(info.get("config", {}), dict):
            raise _bad(f"module {path!r} has an unknown layer type")
        for key in info.get("config", {}):
            if not _is_identifier(key):
                raise _bad(f"module {path!r} has an illegal option name {key!r}")
    known: set[str] = set()
    outputs = 0
    for item in spec["nodes"]:
        if not isinstance(item, dict):
            raise _bad("a graph node is not an object")
        name, op, target = item.get("name"), item.get("op"), item.get("target")
        if not _is_plain_name(name):
            raise _bad(f"illegal node name {name!r}")
        if name in known:
            raise _bad(f"node name {name!r} appears twice")
        if op not in _OPS:
            raise _bad(f"node {name} has an unknown graph op {op!r}")
        where = f"node {name}"
        if op == "placeholder":
            if not _is_identifier(target):  # a parameter name of forward(); 'input' is fine here
                raise _bad(f"illegal input name {target!r}")
        elif op == "output":
            outputs += 1
            if target != "output":
                raise _bad(f"output node {name} has target {target!r}")
        elif op == "call_module":
            if _check_module_path(target) not in spec["modules"]:
                raise _bad(f"{where} calls a module {target!r} the file does not define")
        elif op == "call_method":
            if target not in _METHODS:
                raise _bad(f"{where} names a method annsnn does not allow: {target!r}")
        elif op == "get_attr":
            parts = target.split(".") if isinstance(target, str) else [""]
            if not all(p.isdigit() or (p.isidentifier() and p.isascii() and not keyword.iskeyword(p) and not p.startswith("__")) for p in parts):
                raise _bad(f"{where} reads a stored tensor with a bad attribute path {target!r}")
        elif target not in _FUNCTIONS:
            raise _bad(f"{where} names a function annsnn does not allow: {target!r}")
        args, kwargs = item.get("args"), item.get("kwargs")
        if not (isinstance(args, dict) and isinstance(args.get("tuple"), list) and len(args) == 1):
            raise _bad(f"{where} has malformed arguments")
        if not (isinstance(kwargs, dict) and isinstance(kwargs.get("dict"), dict) and len(kwargs) == 1):
            raise _bad(f"{where} has malformed keyword arguments")
        for key in kwargs["dict"]:
            if not _is_identifier(key):
                raise _bad(f"{where} has an illegal keyword name {key!r}")
        _check_value(args, known, where)
        _check_value(kwargs, known, where)
        if target == "builtins.getattr":
            attr = args["tuple"][1] if len(args["tuple"]) == 2 else None
            if not _is_identifier(attr) and attr != "device":
                raise _bad(f"{where} reads an attribute annsnn does not allow: {attr!r}")
        known.add(name)
    if outputs != 1 or spec["nodes"][-1].get("op") != "output":
        raise _bad("the graph does not end in exactly one output")


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
        elif node.op == "get_attr":
            target = _attr_path(str(node.target))
        else:
            raise UsageError(f"cannot save graph op {node.op} in an SNN file")
        nodes.append({"name": node.name, "op": node.op, "target": target, "args": _encode(node.args), "kwargs": _encode(dict(node.kwargs))})
    return {"nodes": nodes, "modules": modules}


def graph_from_spec(spec: dict, state: dict[str, torch.Tensor]) -> fx.GraphModule:
    """Rebuild a GraphModule from :func:`graph_to_spec` output and its state_dict.

    The description is validated first (:func:`validate_spec`); nodes are then named by fx's
    own namespace, and a name it would have to change is refused.
    """
    validate_spec(spec)
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
        if op == "call_function":
            target = _FUNCTIONS[target]
        if op == "output":
            args = [args[0]]
        if op == "get_attr":  # a stored tensor read by an analog op (validated by validate_spec)
            target = _attr_path(str(target))
            _attach_attr(root, target, state)
        # create_node names the node through fx's namespace, which renames anything that is not
        # a fresh plain identifier; validate_spec already refused those, this is a second check.
        node = graph.create_node(op, target, tuple(args), kwargs, name=item["name"])
        if node.name != item["name"]:
            raise _bad(f"node name {item['name']!r} is not usable")
        nodes[item["name"]] = node
    gm = fx.GraphModule(root, graph)
    missing, unexpected = gm.load_state_dict(state, strict=False, assign=True)  # the file's tensors, not a second copy
    if unexpected or missing:
        raise UsageError("SNN file's tensors do not match its graph (corrupt file)")
    return gm.eval()


def _attr_path(target: str) -> str:
    """A stored tensor's dotted path: identifiers only, no dunder names."""
    parts = target.split(".")
    if not all((p.isidentifier() and not p.startswith("__")) or p.isdigit() for p in parts):
        raise UsageError(f"SNN file holds a bad attribute path {target!r}")
    return target


def _attach_attr(root: nn.Module, target: str, state: dict[str, torch.Tensor]) -> None:
    """Give ``root`` the stored tensor ``target`` (a ``get_attr`` of the ANN graph), from the state."""
    if target not in state:
        raise UsageError(f"SNN file's graph reads a stored tensor {target!r} it does not hold")
    parent = root
    parts = target.split(".")
    for part in parts[:-1]:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
        if not isinstance(parent, nn.Module):
            raise UsageError(f"SNN file holds a bad attribute path {target!r}")
    if not hasattr(parent, parts[-1]):
        parent.register_buffer(parts[-1], state[target].clone())


def save_snn(snn: SpikingNetwork, path: str | os.PathLike) -> None:
    """Write ``snn`` atomically to ``path``."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta": json.dumps(snn.meta, default=_jsonable),
        "snn_graph": json.dumps(graph_to_spec(snn.graph)),
        "ann_graph": json.dumps(graph_to_spec(snn.ann)),
        "snn_state": {k: _own_storage(v) for k, v in snn.graph.state_dict().items()},
        "ann_state": {k: _own_storage(v) for k, v in snn.ann.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, str(tmp))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` itself when it fills its storage (written as is, no copy: the largest
    models hold GBs); a compact copy when it is a view into a larger storage, which
    ``torch.save`` would otherwise write whole."""
    tensor = tensor.detach()
    fills = tensor.is_contiguous() and tensor.storage_offset() == 0 and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    return tensor if fills else tensor.clone()


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
