"""Save and load a :class:`SpikingNetwork` without pickled code.

The file is a ``torch.save`` dict of strings and tensors only, so it loads with
``torch.load(weights_only=True)``. Both graphs (SNN and ANN) are stored as a JSON
description -- nodes whose targets come from an allowlist of functions, methods
and module types -- plus their state_dicts. Loading rebuilds the modules from
that allowlist, so nothing in the file can name code to run.

The allowlist is the op registry (:mod:`annsnn.ops`): a function is saved under the name
its entry gives it, a module under its class name with the entry's ``save`` config, and
rebuilt only by that entry's ``load``. ``load_snn(path, registry=...)`` must be given the
registry that holds a user-registered op; without it the file is refused.

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
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from .errors import UsageError
from .files import atomic_path
from .ops import default_registry
from .opspec import OpRegistry
from .snn import SpikingNetwork

__all__ = ["save_snn", "load_snn", "graph_to_spec", "graph_from_spec", "validate_spec", "FORMAT"]

FORMAT = "annsnn-snn"
VERSION = 1

def _make_module(type_name: str, config: dict, state: dict[str, torch.Tensor], prefix: str, registry: OpRegistry) -> nn.Module:
    found = registry.module_type(type_name)
    if found is None:
        raise UsageError(f"SNN file names an unknown layer type {type_name!r}")
    load = found[1].load
    assert load is not None
    return load(config, state, prefix, registry)


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


def validate_spec(spec: Any, registry: OpRegistry) -> None:
    """Check a graph description before anything is built from it; raise ``UsageError`` if it
    could put anything but allowlisted calls (ops of ``registry``) into the code fx generates."""
    if not isinstance(spec, dict) or not isinstance(spec.get("nodes"), list) or not isinstance(spec.get("modules"), dict):
        raise _bad("the graph is not a {nodes, modules} description")
    for path, info in spec["modules"].items():
        _check_module_path(path)
        if not isinstance(info, dict) or not isinstance(info.get("type"), str) or registry.module_type(info["type"]) is None or not isinstance(info.get("config", {}), dict):
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
            if not isinstance(target, str) or not registry.saveable_method(target):
                raise _bad(f"{where} names a method annsnn does not allow: {target!r}")
        elif op == "get_attr":
            parts = target.split(".") if isinstance(target, str) else [""]
            if not all(p.isdigit() or (p.isidentifier() and p.isascii() and not keyword.iskeyword(p) and not p.startswith("__")) for p in parts):
                raise _bad(f"{where} reads a stored tensor with a bad attribute path {target!r}")
        elif not isinstance(target, str) or not registry.saveable_function(target):
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


def graph_to_spec(gm: fx.GraphModule, registry: OpRegistry) -> dict:
    """A JSON-ready description of ``gm``'s graph and modules (ops of ``registry`` only)."""
    nodes, modules = [], {}
    named = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_function":
            name = registry.function_name(node.target)
            if name is None or not registry.saveable_function(name):
                raise UsageError(f"cannot save function {getattr(node.target, '__name__', node.target)} in an SNN file")
            target: Any = name
        elif node.op == "call_method":
            if not registry.saveable_method(node.target):
                raise UsageError(f"cannot save method .{node.target}() in an SNN file")
            target = node.target
        elif node.op == "call_module":
            module = named[str(node.target)]
            type_name = type(module).__name__
            found = registry.module_type(type_name)
            if found is None or found[0] is not type(module):
                raise UsageError(f"cannot save layer {node.target} ({type_name}) in an SNN file: it is not in the op registry")
            save = found[1].save
            assert save is not None
            modules[str(node.target)] = {"type": type_name, "config": save(module)}
            target = str(node.target)
        elif node.op in ("placeholder", "output"):
            target = str(node.target)
        elif node.op == "get_attr":
            target = _attr_path(str(node.target))
        else:
            raise UsageError(f"cannot save graph op {node.op} in an SNN file")
        nodes.append({"name": node.name, "op": node.op, "target": target, "args": _encode(node.args), "kwargs": _encode(dict(node.kwargs))})
    return {"nodes": nodes, "modules": modules}


def graph_from_spec(spec: dict, state: dict[str, torch.Tensor], registry: OpRegistry) -> fx.GraphModule:
    """Rebuild a GraphModule from :func:`graph_to_spec` output and its state_dict.

    The description is validated first (:func:`validate_spec`); nodes are then named by fx's
    own namespace, and a name it would have to change is refused. Modules and functions come
    from ``registry`` only.
    """
    validate_spec(spec, registry)
    root = nn.Module()
    for path, info in spec["modules"].items():
        module = _make_module(info["type"], info.get("config", {}), state, path + ".", registry)
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
            target = registry.function(target)
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


def save_snn(snn: SpikingNetwork, path: str | os.PathLike, registry: OpRegistry | None = None) -> None:
    """Write ``snn`` atomically to ``path``; its ops must be in ``registry`` (default: the
    registry ``snn`` was converted or loaded with)."""
    registry = registry if registry is not None else snn.registry
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta": json.dumps(snn.meta, default=_jsonable),
        "snn_graph": json.dumps(graph_to_spec(snn.graph, registry)),
        "ann_graph": json.dumps(graph_to_spec(snn.ann, registry)),
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


def load_snn(path: str | os.PathLike, registry: OpRegistry | None = None) -> SpikingNetwork:
    """Load an SNN file with ``weights_only=True``; a bad file is a one-line error.

    Modules are rebuilt only through the entries of ``registry`` (default
    :func:`annsnn.ops.default_registry`): a file naming a user-registered op needs the
    registry that holds it."""
    registry = registry if registry is not None else default_registry()
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
        snn_graph = graph_from_spec(json.loads(payload["snn_graph"]), payload["snn_state"], registry)
        ann_graph = graph_from_spec(json.loads(payload["ann_graph"]), payload["ann_state"], registry)
    except UsageError:
        raise
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"{str(file)!r} is a damaged annsnn SNN file ({type(exc).__name__})") from None
    return SpikingNetwork(snn_graph, ann_graph, meta, registry=registry).eval()
