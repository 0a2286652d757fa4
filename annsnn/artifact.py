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
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from .errors import UsageError
from .files import atomic_path, load_weights_only
from .ops import default_registry
from .opspec import OpRegistry
from .record import SnnRecord
from .snn import SpikingNetwork

__all__ = ["save_snn", "write_snn", "load_snn", "check_runs", "graph_to_spec", "graph_from_spec", "validate_spec", "FORMAT", "VERSION"]

FORMAT = "annsnn-snn"
VERSION = 2  # 2: a typed ``record`` (annsnn.record.SnnRecord); 1: an untyped ``meta`` dict
READS = (1, 2)

def _make_module(type_name: str, config: dict, state: dict[str, torch.Tensor], prefix: str, registry: OpRegistry) -> nn.Module:
    """Build a layer from its entry's ``load``: first on the meta device (no memory), where
    its tensors' names, shapes and dtypes are compared with the file's, then for real."""
    found = registry.module_type(type_name)
    if found is None:
        raise UsageError(f"SNN file names an unknown layer type {type_name!r}")
    load = found[1].load
    assert load is not None
    if type_name == "IFNeurons":
        _check_neuron_config(config, state, prefix)
    try:
        with torch.device("meta"):
            probe = load(config, state, prefix, registry)
    except UsageError:
        raise
    except Exception:  # noqa: BLE001 - a layer built from the file's own tensors (they bound its size) may not build on meta
        probe = None
    if probe is not None:
        _compare(probe, state, prefix, type_name)
    try:
        module = load(config, state, prefix, registry)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config the layer's constructor rejects
        raise _bad(f"layer {prefix[:-1]} ({type_name}) has a bad configuration ({type(exc).__name__}: {_first_line(exc)[:200]})") from None
    if probe is None:
        _compare(module, state, prefix, type_name)
    return module


def _compare(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, type_name: str) -> None:
    """The file's tensors for ``module`` have the names, shapes and dtypes it needs."""
    for name, expected in module.state_dict().items():
        key = prefix + name
        stored = state.get(key)
        if stored is None:
            continue  # reported as a missing tensor once the graph is built
        if tuple(stored.shape) != tuple(expected.shape) or stored.dtype != expected.dtype:
            raise _bad(f"tensor {key} is {_describe(stored)} but layer {prefix[:-1]} ({type_name}) needs {_describe(expected)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _describe(tensor: torch.Tensor) -> str:
    return f"{str(tensor.dtype).replace('torch.', '')} {list(tensor.shape)}"


def _check_neuron_config(config: dict, state: dict[str, torch.Tensor], prefix: str) -> None:
    """IF neurons: ``v_init`` a finite number, ``bias_steps`` S >= 0 an int, and a stored
    ``step_bias`` float32 of S steps exactly when S > 0."""
    name = prefix[:-1]
    v_init = config.get("v_init", 0.0)
    if isinstance(v_init, bool) or not isinstance(v_init, (int, float)) or not math.isfinite(v_init):
        raise _bad(f"layer {name} has v_init = {v_init!r}, not a finite number")
    steps = config.get("bias_steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise _bad(f"layer {name} has bias_steps = {steps!r}, not an integer >= 0")
    bias = state.get(prefix + "step_bias")
    if bias is not None:
        if bias.dtype != torch.float32:
            raise _bad(f"tensor {prefix}step_bias is {_describe(bias)}, not float32")
        if bias.dim() < 1 or int(bias.shape[0]) != steps:
            raise _bad(f"tensor {prefix}step_bias is {_describe(bias)} but layer {name} records bias_steps = {steps}")


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
    payload = _payload(snn, registry)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a Python file: a full disk is an OSError (ENOSPC), not torch's bare RuntimeError
            torch.save(payload, handle)


def _payload(snn: SpikingNetwork, registry: OpRegistry) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "record": json.dumps(snn.record.to_dict(), default=_jsonable, allow_nan=False),
        "snn_graph": json.dumps(graph_to_spec(snn.graph, registry)),
        "ann_graph": json.dumps(graph_to_spec(snn.ann, registry)),
        "snn_state": {k: _own_storage(v) for k, v in snn.graph.state_dict().items()},
        "ann_state": {k: _own_storage(v) for k, v in snn.ann.state_dict().items()},
    }


def write_snn(snn: SpikingNetwork, handle, registry: OpRegistry | None = None) -> None:
    """Write ``snn`` to an open binary file ``handle`` (see :func:`save_snn`)."""
    torch.save(_payload(snn, registry if registry is not None else snn.registry), handle)


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
        raise UsageError(f"SNN file {str(file)!r} is a folder, not a file" if file.is_dir() else f"SNN file {str(file)!r} does not exist")
    try:
        payload = load_weights_only(str(file), map_location="cpu")
    except Exception:
        raise UsageError(f"{str(file)!r} is not a readable annsnn SNN file (corrupt, truncated, or another format)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{str(file)!r} is not an annsnn SNN file; convert a model first with 'annsnn convert'")
    if payload.get("version") not in READS:
        raise UsageError(f"{str(file)!r} has SNN format version {payload.get('version')}; this annsnn reads versions {', '.join(map(str, READS))}")
    try:
        if payload["version"] == 1:
            record = SnnRecord.from_meta(json.loads(payload["meta"]))
        else:
            record = SnnRecord.from_dict(json.loads(payload["record"]))
        snn_state, ann_state = payload["snn_state"], payload["ann_state"]
        _check_tensors(snn_state, "SNN")
        _check_tensors(ann_state, "ANN")
        snn_graph = graph_from_spec(json.loads(payload["snn_graph"]), snn_state, registry)
        ann_graph = graph_from_spec(json.loads(payload["ann_graph"]), ann_state, registry)
    except UsageError as exc:
        raise UsageError(f"{str(file)!r}: {exc}") from None
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(f"{str(file)!r} is a damaged annsnn SNN file ({type(exc).__name__}: {_first_line(exc)[:200]})") from None
    snn = SpikingNetwork(snn_graph, ann_graph, record, registry=registry).eval()
    try:
        check_runs(snn)
    except UsageError as exc:
        raise UsageError(f"{str(file)!r}: {exc}") from None
    return snn


def _check_tensors(state: Any, side: str) -> None:
    """Every stored tensor is a real (not complex) tensor; floating ones are finite."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise _bad(f"the {side} tensors are not a name -> tensor table")
    for name, tensor in state.items():
        if tensor.is_complex():
            raise _bad(f"{side} tensor {name} is {_describe(tensor)}: complex values")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise _bad(f"{side} tensor {name} holds NaN or infinite values")


def check_runs(snn: SpikingNetwork) -> None:
    """Run the SNN graph (one step) and the ANN once on a shape-only ``[1, *input_shape]``
    input (torch's ``FakeTensorMode``: no memory, no values); a graph whose tensors do not
    fit together (a step bias of 17 channels on a 16-channel layer, an input shape the
    layers cannot take) is refused with one line. A graph that cannot run on shape-only
    tensors (data-dependent code) is left to the real run."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .layers import TemporalModule
    from .memory_estimate import data_dependent_failure

    shape = snn.record.input_shape
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    was_disabled, fake_log.disabled = fake_log.disabled, True
    temporal = [m for m in snn.graph.modules() if isinstance(m, TemporalModule)]
    try:
        for label, graph in (("ANN", snn.ann), ("SNN", snn.graph)):
            for module in temporal:
                module.steps = 1
                module.reset_state()
            try:
                with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
                    graph(torch.empty((1, *shape)))
            except Exception as exc:  # noqa: BLE001 - classified below
                if data_dependent_failure(exc):
                    continue
                raise _bad(f"its {label} graph does not run on its input shape {list(shape)} ({_first_line(exc)[:200]})") from None
    finally:
        fake_log.disabled = was_disabled
        for module in temporal:
            module.reset_state()
