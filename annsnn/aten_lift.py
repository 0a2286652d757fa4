"""Lift a graph of ATen ops back into standard ``torch.nn`` modules.

TorchScript (through torch's TorchScript -> ExportedProgram converter) and ``torch.export``
programs arrive as torch.fx graphs of ATen operators whose weights are read with
``get_attr``: ``aten.conv2d(x, W, b, ...)``, ``aten.batch_norm(x, g, b, mean, var, ...)``.
annsnn's canonicalization needs the modules a user would write (``nn.Conv2d``,
``nn.BatchNorm2d``, ``nn.ReLU6``, ...), because BatchNorm folding, scale folding and the
SNN file all work per module. This pass rebuilds the graph from an allowlist: each ATen op
becomes one module (weights copied in) or one plain function (``torch.flatten``,
``operator.add``); anything else is refused with the op's name. No code from the model
file runs here: the pass only reads the graph and its tensors.

Module names follow the original model: the weights ``features.0.weight`` give a layer
named ``features.0``; weightless layers take the name of the module that called them
(``nn_module_stack``), else the node's name. Every name part is a Python identifier.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.operator_schemas import normalize_function

from .errors import UsageError

__all__ = ["attach_module", "lift_aten", "sanitize_path"]


@dataclass(frozen=True)
class _Stored:
    """A ``get_attr`` tensor: usable only as a weight of a lifted layer."""

    path: str
    tensor: torch.Tensor


def sanitize_path(path: str) -> str:
    """``'11/Relu'`` -> ``'11_Relu'``; ``'features.0'`` stays; every part an identifier-like name."""
    parts = [re.sub(r"\W", "_", part) or "_" for part in path.split(".")]
    return ".".join(parts)


def attach_module(root: nn.Module, path: str, layer: nn.Module) -> None:
    """Put ``layer`` (in eval mode) at the dotted ``path`` under ``root``, creating empty
    ``nn.Module`` parents for the missing parts, so that ``call_module(path)`` finds it."""
    parent = root
    parts = path.split(".")
    for part in parts[:-1]:
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    parent.add_module(parts[-1], layer.eval())


class _Builder:
    """The new graph and its root module, filled op by op."""

    def __init__(self, source: fx.GraphModule) -> None:
        self.source = source
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.env: dict[fx.Node, Any] = {}
        self.used: set[str] = set()

    def name(self, base: str) -> str:
        path = sanitize_path(base.strip(".") or "layer")
        candidate, k = path, 1
        while candidate in self.used or self._taken(candidate):
            k += 1
            candidate = f"{path}_{k}"
        self.used.add(candidate)
        return candidate

    def _taken(self, path: str) -> bool:
        module: nn.Module = self.root
        for part in path.split("."):
            if not hasattr(module, part):
                return False
            module = getattr(module, part)
        return True

    def module(self, base: str, layer: nn.Module, args: tuple) -> fx.Node:
        path = self.name(base)
        attach_module(self.root, path, layer)
        return self.graph.call_module(path, args)


def _value(node: fx.Node) -> Any:
    return node.meta.get("val", node.meta.get("tensor_meta"))


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    val = _value(node)
    shape = getattr(val, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):  # symbolic sizes
        return None


def _opname(node: fx.Node) -> str:
    """``'aten::flatten'`` for ``aten.flatten.using_ints`` (the overload dropped)."""
    return str(node.target._schema.name)  # type: ignore[union-attr]


def _x(a: dict) -> Any:
    """The tensor argument, named ``self`` or ``input`` depending on the op's schema."""
    return a["self"] if "self" in a else a["input"]


def _owner(stored: _Stored) -> str:
    return stored.path.rsplit(".", 1)[0] if "." in stored.path else stored.path


def _scope(node: fx.Node, fallback: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return str(path)
    return fallback


def _pair(value: Any, n: int) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) if len(value) == n else tuple(int(value[0]) for _ in range(n)) if len(value) == 1 else tuple(int(v) for v in value)
    return tuple(int(value) for _ in range(n))


# ---------------------------------------------------------------------------
# handlers: (builder, source node, normalized kwargs, mapped kwargs) -> new value


Handler = Callable[[_Builder, fx.Node, dict], Any]


def _weight(b: _Builder, node: fx.Node, value: Any, what: str) -> _Stored:
    if not isinstance(value, _Stored):
        raise UsageError(f"unsupported op {node.name}: its {what} is computed in forward, not a stored weight")
    return value


def _tensor(node: fx.Node, value: Any, what: str = "input") -> fx.Node:
    if isinstance(value, _Stored):
        raise UsageError(f"unsupported op {node.name}: a stored tensor used inside forward ({value.path}) as its {what}")
    if not isinstance(value, fx.Node):
        raise UsageError(f"unsupported op {node.name}: its {what} is not a tensor computed by the model")
    return value


def _conv(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    if a.get("transposed"):
        raise UsageError(f"unsupported op {node.name}: transposed convolution")
    w = _weight(b, node, a["weight"], "weight")
    bias = a.get("bias")
    if bias is not None:
        bias = _weight(b, node, bias, "bias")
    dims = w.tensor.dim() - 2
    if dims not in (1, 2):
        raise UsageError(f"unsupported op {node.name}: {dims}-d convolution")
    groups = int(a.get("groups", 1))
    padding = a.get("padding", 0)
    padding = padding if isinstance(padding, str) else _pair(padding, dims)
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    layer = cls(w.tensor.shape[1] * groups, w.tensor.shape[0], tuple(w.tensor.shape[2:]), stride=_pair(a.get("stride", 1), dims),
                padding=padding, dilation=_pair(a.get("dilation", 1), dims), groups=groups, bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(w.tensor)
        if bias is not None:
            layer.bias.copy_(bias.tensor)
    return b.module(_owner(w), layer, (_tensor(node, a["input"]),))


def _linear_layer(b: _Builder, node: fx.Node, x: Any, weight: torch.Tensor, bias: _Stored | None, owner: str) -> fx.Node:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias.tensor.reshape(-1))
    return b.module(owner, layer, (_tensor(node, x),))


def _linear(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    w = _weight(b, node, a["weight"], "weight")
    bias = a.get("bias")
    return _linear_layer(b, node, a["input"], w.tensor, _weight(b, node, bias, "bias") if bias is not None else None, _owner(w))


def _transposed(b: _Builder, node: fx.Node, a: dict) -> Any:
    """``aten.t`` / ``permute(1, 0)`` of a stored 2-d weight stays a marker (for ``addmm``)."""
    src = _x(a)
    if isinstance(src, _Stored):
        name = _opname(node)
        swaps = name == "aten::t" or (name == "aten::permute" and [int(d) % 2 for d in a["dims"]] == [1, 0]) or (
            name == "aten::transpose" and {int(a["dim0"]) % 2, int(a["dim1"]) % 2} == {0, 1})
        if src.tensor.dim() != 2 or not swaps:
            raise UsageError(f"unsupported op {node.name}: a stored tensor used inside forward ({src.path})")
        return _Stored(src.path + ".T", src.tensor.t())
    if _opname(node) == "aten::t":  # type: ignore[union-attr]
        return b.graph.call_function(torch.transpose, (_tensor(node, src), 0, 1))
    if _opname(node) == "aten::permute":  # type: ignore[union-attr]
        return b.graph.call_function(torch.permute, (_tensor(node, src), tuple(a["dims"])))
    return b.graph.call_function(torch.transpose, (_tensor(node, src), int(a["dim0"]), int(a["dim1"])))


def _addmm(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    """``addmm(bias, x, W.t())`` is a Linear layer."""
    mat2 = _weight(b, node, a["mat2"], "weight")
    if float(a.get("beta", 1)) != 1 or float(a.get("alpha", 1)) != 1:
        raise UsageError(f"unsupported op {node.name}: addmm with alpha/beta")
    bias = _weight(b, node, _x(a), "bias")
    return _linear_layer(b, node, a["mat1"], mat2.tensor.t(), bias, _owner(_Stored(mat2.path.removesuffix(".T"), mat2.tensor)))


def _batch_norm(b: _Builder, node: fx.Node, a: dict) -> Any:
    if a.get("training"):
        raise UsageError(f"unsupported op {node.name}: BatchNorm in training mode (save the model after model.eval())")
    mean = _weight(b, node, a["running_mean"], "running mean")
    var = _weight(b, node, a["running_var"], "running variance")
    weight, bias = a.get("weight"), a.get("bias")
    affine = weight is not None
    rank = len(_shape(node.args[0]) or ())
    if rank in (2, 3):
        cls: type[nn.Module] = nn.BatchNorm1d
    elif rank == 4:
        cls = nn.BatchNorm2d
    else:
        raise UsageError(f"unsupported op {node.name}: BatchNorm on a tensor of unknown or unsupported rank")
    layer = cls(mean.tensor.numel(), eps=float(a["eps"]), affine=affine)
    with torch.no_grad():
        layer.running_mean.copy_(mean.tensor)
        layer.running_var.copy_(var.tensor)
        if affine:
            layer.weight.copy_(_weight(b, node, weight, "weight").tensor)
            layer.bias.copy_(_weight(b, node, bias, "bias").tensor if bias is not None else torch.zeros_like(layer.bias))
    new = b.module(_owner(mean), layer, (_tensor(node, a["input"]),))
    if _opname(node) == "aten::batch_norm":  # type: ignore[union-attr]
        return new
    return (new, None, None)


def _hardtanh(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    lo, hi = float(a.get("min_val", -1.0)), float(a.get("max_val", 1.0))
    layer: nn.Module = nn.ReLU6() if (lo, hi) == (0.0, 6.0) else nn.Hardtanh(lo, hi)
    return b.module(_scope(node, node.name), layer, (_tensor(node, _x(a)),))


def _clamp(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    lo, hi = a.get("min"), a.get("max")
    if isinstance(lo, (fx.Node, _Stored)) or isinstance(hi, (fx.Node, _Stored)):
        raise UsageError(f"unsupported op {node.name}: clamp with tensor bounds")
    if lo is not None and float(lo) == 0.0:
        layer: nn.Module = nn.ReLU() if hi is None else (nn.ReLU6() if float(hi) == 6.0 else nn.Hardtanh(0.0, float(hi)))
        return b.module(_scope(node, node.name), layer, (_tensor(node, _x(a)),))
    raise UsageError(f"unsupported op {node.name}: clamp({lo}, {hi}) (only clamp(min=0, max=...) converts)")


def _simple(factory: Callable[[dict], nn.Module]) -> Handler:
    def handle(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
        return b.module(_scope(node, node.name), factory(a), (_tensor(node, _x(a)),))

    return handle


def _stride(a: dict) -> Any:
    stride = a.get("stride")
    return None if stride in (None, [], ()) else tuple(stride)


def _max_pool(dims: int, indices: bool) -> Handler:
    def handle(b: _Builder, node: fx.Node, a: dict) -> Any:
        cls = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
        layer = cls(tuple(a["kernel_size"]), _stride(a), tuple(a.get("padding", 0)) if isinstance(a.get("padding", 0), (list, tuple)) else a.get("padding", 0),
                    tuple(a.get("dilation", 1)) if isinstance(a.get("dilation", 1), (list, tuple)) else a.get("dilation", 1), ceil_mode=bool(a.get("ceil_mode", False)))
        new = b.module(_scope(node, node.name), layer, (_tensor(node, _x(a)),))
        return (new, None) if indices else new

    return handle


def _avg_pool(dims: int) -> Handler:
    def handle(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
        padding = a.get("padding", 0)
        padding = tuple(padding) if isinstance(padding, (list, tuple)) else padding
        if dims == 1:
            layer: nn.Module = nn.AvgPool1d(tuple(a["kernel_size"]), _stride(a), padding, bool(a.get("ceil_mode", False)), bool(a.get("count_include_pad", True)))
        else:
            layer = nn.AvgPool2d(tuple(a["kernel_size"]), _stride(a), padding, bool(a.get("ceil_mode", False)), bool(a.get("count_include_pad", True)), a.get("divisor_override"))
        return b.module(_scope(node, node.name), layer, (_tensor(node, _x(a)),))

    return handle


def _adaptive(dims: int) -> Handler:
    def handle(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
        size = tuple(int(s) for s in a["output_size"])
        layer = nn.AdaptiveAvgPool1d(size) if dims == 1 else nn.AdaptiveAvgPool2d(size)
        return b.module(_scope(node, node.name), layer, (_tensor(node, _x(a)),))

    return handle


def _identity(b: _Builder, node: fx.Node, a: dict) -> Any:
    return _tensor(node, _x(a))


def _dropout(b: _Builder, node: fx.Node, a: dict) -> Any:
    x = _tensor(node, a["input"])
    return (x, None) if _opname(node) == "aten::native_dropout" else x  # type: ignore[union-attr]


def _flatten(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    return b.graph.call_function(torch.flatten, (_tensor(node, _x(a)), int(a.get("start_dim", 0)), int(a.get("end_dim", -1))))


def _reshape(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    """A reshape that keeps the batch dimension becomes ``reshape(x, (-1, *rest))``."""
    x = _tensor(node, _x(a))
    in_shape, out_shape = _shape(node.args[0]), _shape(node)
    size = a.get("size", a.get("shape"))
    if in_shape is None or out_shape is None:
        raise UsageError(f"unsupported op {node.name}: reshape whose shapes are unknown")
    if len(out_shape) >= 1 and len(in_shape) >= 1 and out_shape[0] == in_shape[0] and math.prod(out_shape[1:]) == math.prod(in_shape[1:]):
        if len(out_shape) == 2:
            return b.graph.call_function(torch.flatten, (x, 1))
        return b.graph.call_function(torch.reshape, (x, (-1, *out_shape[1:])))
    raise UsageError(f"unsupported op {node.name}: reshape {list(in_shape)} -> {list(size) if size is not None else list(out_shape)} mixes the batch dimension")


def _binary(fn: Callable) -> Handler:
    def handle(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
        x, y = _x(a), a["other"]
        if float(a.get("alpha", 1)) != 1:
            raise UsageError(f"unsupported op {node.name}: add with alpha")
        args = []
        for v in (x, y):
            if isinstance(v, _Stored):
                if v.tensor.numel() != 1:
                    raise UsageError(f"unsupported op {node.name}: a stored tensor used inside forward ({v.path})")
                v = float(v.tensor)
            elif isinstance(v, torch.Tensor):
                v = float(v)
            args.append(v)
        return b.graph.call_function(fn, tuple(args))

    return handle


def _mean(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    if a.get("dtype") is not None:
        raise UsageError(f"unsupported op {node.name}: mean with a dtype")
    dims = a.get("dim")
    kwargs: dict = {"keepdim": bool(a.get("keepdim", False))}
    return b.graph.call_function(torch.mean, (_tensor(node, _x(a)), tuple(int(d) for d in dims) if dims is not None else None), kwargs)


def _cat(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    return b.graph.call_function(torch.cat, ([_tensor(node, t) for t in a["tensors"]], int(a.get("dim", 0))))


def _squeeze(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    x = _tensor(node, _x(a))
    dim = a.get("dim")
    if dim is None:
        raise UsageError(f"unsupported op {node.name}: squeeze without a dimension")
    dims = [int(dim)] if isinstance(dim, int) else [int(d) for d in dim]
    for d in sorted(dims, reverse=True):
        x = b.graph.call_function(torch.squeeze, (x, d))
    return x


def _unsqueeze(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    return b.graph.call_function(torch.unsqueeze, (_tensor(node, _x(a)), int(a["dim"])))


def _pad(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    value = float(a.get("value") or 0.0)
    mode = a.get("mode", "constant")
    if mode != "constant":
        raise UsageError(f"unsupported op {node.name}: pad mode {mode!r}")
    return b.graph.call_function(F.pad, (_tensor(node, _x(a)), [int(p) for p in a["pad"]]), {"value": value} if value else {})


def _index(b: _Builder, node: fx.Node, a: dict) -> fx.Node:
    """``select`` / ``slice`` become ``x[:, ..., i]`` / ``x[:, ..., a:b:s]``."""
    x = _tensor(node, _x(a))
    rank = len(_shape(node.args[0]) or ())
    dim = int(a.get("dim", 0))
    dim = dim + rank if dim < 0 else dim
    if dim == 0:
        raise UsageError(f"unsupported op {node.name}: indexing the batch dimension")
    if _opname(node) == "aten::select":  # type: ignore[union-attr]
        item: Any = int(a["index"])
    else:
        start, end, step = a.get("start"), a.get("end"), int(a.get("step", 1))
        end = None if end is not None and int(end) >= 2**62 else end
        item = slice(None if start is None else int(start), None if end is None else int(end), step if step != 1 else None)
    index = tuple([slice(None, None, None)] * dim + [item])
    return b.graph.call_function(operator.getitem, (x, index))


def _sym_size(b: _Builder, node: fx.Node, a: dict) -> Any:
    x = _tensor(node, _x(a))
    dim = int(a["dim"])
    shape = _shape(node.args[0])
    if dim != 0 and shape is not None:
        return shape[dim]
    return b.graph.call_method("size", (x, dim))


# ATen activation -> its module; each module type is an entry of the op registry (annsnn.ops),
# which decides what conversion does with it (tests/test_architecture.py checks the names)
_ACTIVATIONS: dict[str, Callable[[dict], nn.Module]] = {
    "aten::relu": lambda a: nn.ReLU(),
    "aten::relu_": lambda a: nn.ReLU(),
    "aten::relu6": lambda a: nn.ReLU6(),
    "aten::gelu": lambda a: nn.GELU(approximate=a.get("approximate", "none")),
    "aten::silu": lambda a: nn.SiLU(),
    "aten::sigmoid": lambda a: nn.Sigmoid(),
    "aten::tanh": lambda a: nn.Tanh(),
    "aten::hardswish": lambda a: nn.Hardswish(),
    "aten::hardsigmoid": lambda a: nn.Hardsigmoid(),
    "aten::leaky_relu": lambda a: nn.LeakyReLU(float(a.get("negative_slope", 0.01))),
    "aten::elu": lambda a: nn.ELU(float(a.get("alpha", 1.0))),
}

_HANDLERS: dict[str, Handler] = {
    "aten::conv1d": _conv,
    "aten::conv2d": _conv,
    "aten::convolution": _conv,
    "aten::_convolution": _conv,
    "aten::linear": _linear,
    "aten::addmm": _addmm,
    "aten::t": _transposed,
    "aten::permute": _transposed,
    "aten::transpose": _transposed,
    "aten::batch_norm": _batch_norm,
    "aten::_native_batch_norm_legit_no_training": _batch_norm,
    "aten::hardtanh": _hardtanh,
    "aten::hardtanh_": _hardtanh,
    "aten::clamp": _clamp,
    "aten::clamp_min": lambda b, n, a: _clamp(b, n, {"self": _x(a), "min": a["min"], "max": None}),
    "aten::max_pool1d": _max_pool(1, False),
    "aten::max_pool2d": _max_pool(2, False),
    "aten::max_pool2d_with_indices": _max_pool(2, True),
    "aten::avg_pool1d": _avg_pool(1),
    "aten::avg_pool2d": _avg_pool(2),
    "aten::adaptive_avg_pool1d": _adaptive(1),
    "aten::adaptive_avg_pool2d": _adaptive(2),
    "aten::_adaptive_avg_pool2d": _adaptive(2),
    "aten::dropout": _dropout,
    "aten::native_dropout": _dropout,
    "aten::feature_dropout": _dropout,
    "aten::alias": _identity,
    "aten::clone": _identity,
    "aten::contiguous": _identity,
    "aten::detach": _identity,
    "aten::flatten": _flatten,
    "aten::view": _reshape,
    "aten::reshape": _reshape,
    "aten::_unsafe_view": _reshape,
    "aten::add": _binary(operator.add),
    "aten::add_": _binary(operator.add),
    "aten::mul": _binary(operator.mul),
    "aten::div": _binary(operator.truediv),
    "aten::mean": _mean,
    "aten::cat": _cat,
    "aten::squeeze": _squeeze,
    "aten::unsqueeze": _unsqueeze,
    "aten::pad": _pad,
    "aten::constant_pad_nd": _pad,
    "aten::select": _index,
    "aten::slice": _index,
    "aten::sym_size": _sym_size,
}
for _name, _factory in _ACTIVATIONS.items():
    _HANDLERS[_name] = _simple(_factory)


def _map_args(node: fx.Node, env: dict[fx.Node, Any]) -> dict:
    """The node's arguments by schema name, with source nodes replaced by new values."""
    target = node.target
    normalized = normalize_function(target, node.args, node.kwargs, normalize_to_only_use_kwargs=True)  # type: ignore[arg-type]
    kwargs = normalized.kwargs if normalized is not None else dict(node.kwargs)
    return fx.node.map_aggregate(kwargs, lambda v: env[v] if isinstance(v, fx.Node) else v)  # type: ignore[return-value]


def lift_aten(gm: fx.GraphModule, *, name: str = "Lifted") -> fx.GraphModule:
    """Rebuild ``gm`` (ATen ops, ``get_attr`` weights) from standard modules and functions.

    The result computes the same function as ``gm`` in eval mode; shapes are read from
    the ``val``/``tensor_meta`` metadata of ``gm``'s nodes, so run ``ShapeProp`` first
    on a graph that has none. Unsupported ops are listed in one ``UsageError``.
    """
    b = _Builder(gm)
    unsupported: list[str] = []
    output: Any = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            new = b.graph.placeholder(sanitize_path(node.name).replace(".", "_"))
            new.meta = dict(node.meta)
            b.env[node] = new
        elif node.op == "get_attr":
            value = _fetch(gm, str(node.target))
            b.env[node] = _Stored(str(node.target), value.detach()) if isinstance(value, torch.Tensor) else value
        elif node.op == "call_module":
            if not node.users:  # export's _guards_fn: a check on the example input, no output
                continue
            unsupported.append(f"{node.name} (module {node.target})")
        elif node.op == "call_function":
            if node.target is operator.getitem:
                source = b.env.get(node.args[0])  # type: ignore[arg-type]
                if isinstance(source, tuple):
                    item = source[int(node.args[1])]  # type: ignore[arg-type]
                    if item is None and node.users:
                        unsupported.append(f"{node.name} (a second output of {node.args[0]})")
                    b.env[node] = item
                    continue
                b.env[node] = b.graph.call_function(operator.getitem, (source, node.args[1]))
                continue
            if not isinstance(node.target, torch._ops.OpOverload):
                unsupported.append(f"{node.name} ({getattr(node.target, '__name__', node.target)})")
                continue
            op = _opname(node)
            if not node.users and op in ("aten::dim", "aten::sym_size", "aten::_assert_tensor_metadata", "aten::sym_constrain_range_for_size"):
                continue
            if op.startswith("aten::_assert"):
                continue
            handler = _HANDLERS.get(op)
            if handler is None:
                unsupported.append(f"{node.name} ({op.replace('::', '.')})")
                continue
            try:
                args = _map_args(node, b.env)
            except KeyError:
                unsupported.append(f"{node.name} ({op.replace('::', '.')}, after an unsupported op)")
                continue
            b.env[node] = handler(b, node, args)
            new = b.env[node]
            if isinstance(new, fx.Node):
                new.meta = {k: v for k, v in node.meta.items() if k in ("val", "tensor_meta")}
        elif node.op == "output":
            output = node.args[0]
        else:
            unsupported.append(f"{node.name} ({node.op})")
    if unsupported:
        raise UsageError("unsupported op(s) in the model graph: " + ", ".join(unsupported[:8]) + (f" and {len(unsupported) - 8} more" if len(unsupported) > 8 else ""))
    result = fx.node.map_aggregate(output, lambda v: b.env[v] if isinstance(v, fx.Node) else v)
    if isinstance(result, (tuple, list)):
        if len(result) != 1:
            raise UsageError(f"unsupported model: it returns {len(result)} outputs; annsnn needs a single tensor")
        result = result[0]
    if not isinstance(result, fx.Node):
        raise UsageError("unsupported model: its output is not a tensor computed from the input")
    b.graph.output(result)
    lifted = fx.GraphModule(b.root, b.graph, name)
    lifted.graph.eliminate_dead_code()
    lifted.graph.lint()
    lifted.delete_all_unused_submodules()
    lifted.recompile()
    return lifted.eval()


def _fetch(gm: nn.Module, path: str) -> Any:
    value: Any = gm
    for part in path.split("."):
        value = getattr(value, part)
    return value
