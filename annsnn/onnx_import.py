"""Import an ONNX classifier as a torch.fx graph of standard ``torch.nn`` modules.

Each ONNX node maps to the module a PyTorch user would write (``Conv`` -> ``nn.Conv2d``,
``Gemm`` -> ``nn.Linear``, ``Clip(0, 6)`` -> ``nn.ReLU6``, ``BatchNormalization`` ->
``nn.BatchNorm1d/2d``) or to a plain function (``Flatten`` -> ``torch.flatten``,
``Add`` -> ``operator.add``), from a fixed allowlist; anything else is refused by name.
Nodes whose inputs are all constants (``Constant``, shape arithmetic on initializers)
are folded at import with onnx's own reference evaluator (``onnx.reference``), so
``Clip``'s bounds, ``Reshape``'s shape and ``Gather``'s indices may arrive as
``Constant`` nodes or initializers, at any opset the exporters emit (13 to 20 were
tested, from both ``torch.onnx.export(dynamo=False)`` and ``dynamo=True``).

Why not onnx2torch: it has no converter for ``Constant`` at opset 19+, nor for
``AveragePool`` at opset 19+, nor ``Reshape(allowzero=1)`` (which the dynamo exporter
emits), and its modules (``OnnxReshape``, names like ``11/Relu``) are not the standard
modules annsnn's conversion, counting and SNN file work on.
"""
from __future__ import annotations

import math
import operator
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import UsageError
from .aten_lift import attach_module, sanitize_path

__all__ = ["load_onnx", "import_onnx"]


@dataclass(frozen=True)
class _Shape:
    """The value of ``Shape(x)`` (or a piece of it): static sizes, ``"batch"`` for dim 0."""

    values: tuple[int | str, ...]
    scalar: bool = False


class _Graph:
    def __init__(self, proto: Any) -> None:
        import onnx

        self.onnx = onnx
        self.proto = proto
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.values: dict[str, Any] = {}  # onnx value name -> fx.Node | np.ndarray
        self.shapes: dict[str, list] = {}  # onnx value name -> dims (int or str for symbolic)
        self.linear_of: dict[str, nn.Linear] = {}  # output of a bias-free Linear -> the layer
        self.users: dict[str, int] = {}
        self.used: set[str] = set()
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)

    def add(self, base: str, layer: nn.Module, args: tuple) -> fx.Node:
        path = sanitize_path(base) or "layer"
        candidate, k = path, 1
        while candidate in self.used or any(u.startswith(candidate + ".") or candidate.startswith(u + ".") for u in self.used):
            k += 1
            candidate = f"{path}_{k}"
        self.used.add(candidate)
        attach_module(self.root, candidate, layer)
        return self.graph.call_module(candidate, args)


def _attrs(node: Any) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _layer_name(node: Any, weight: str | None) -> str:
    """``'0.weight'`` -> ``'0'``; else ``'/features/features.0/Conv'`` -> ``'features.0'``."""
    if weight and "." in weight and not weight.startswith("onnx::"):
        return weight.rsplit(".", 1)[0]
    name = node.name or node.output[0]
    parts = [p for p in name.split("/") if p]
    if len(parts) >= 2:
        return parts[-2]
    return re.sub(r"\W", "_", name).strip("_") or node.op_type.lower()


def _const(g: _Graph, node: Any, index: int, what: str) -> np.ndarray | None:
    if index >= len(node.input) or not node.input[index]:
        return None
    value = g.values[node.input[index]]
    if not isinstance(value, np.ndarray):
        raise UsageError(f"unsupported ONNX node {node.name or node.op_type} ({node.op_type}): its {what} is computed at run time")
    return value


def _tensor(g: _Graph, node: Any, index: int = 0) -> fx.Node:
    value = g.values[node.input[index]]
    if not isinstance(value, fx.Node):
        raise UsageError(f"unsupported ONNX node {node.name or node.op_type} ({node.op_type}): a constant where a computed tensor is needed")
    return value


def _symmetric(pads: list[int], dims: int, node: Any) -> tuple[int, ...]:
    begin, end = pads[:dims], pads[dims:]
    if list(begin) != list(end):
        raise UsageError(f"unsupported ONNX node {node.name or node.op_type} ({node.op_type}): asymmetric padding {pads}")
    return tuple(int(p) for p in begin)


def _auto_pad(a: dict, node: Any) -> None:
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "VALID"):
        raise UsageError(f"unsupported ONNX node {node.name or node.op_type} ({node.op_type}): auto_pad {auto}")


def _conv(g: _Graph, node: Any, a: dict) -> fx.Node:
    _auto_pad(a, node)
    w = _const(g, node, 1, "weight")
    b = _const(g, node, 2, "bias")
    dims = w.ndim - 2  # type: ignore[union-attr]
    if dims not in (1, 2):
        raise UsageError(f"unsupported ONNX node {node.name} (Conv): {dims}-d convolution")
    groups = int(a.get("group", 1))
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    layer = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(a.get("strides", [1] * dims)),  # type: ignore[union-attr]
                padding=_symmetric(a.get("pads", [0] * 2 * dims), dims, node), dilation=tuple(a.get("dilations", [1] * dims)), groups=groups, bias=b is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
        if b is not None:
            layer.bias.copy_(torch.from_numpy(np.array(b, dtype=np.float32)))
    return g.add(_layer_name(node, node.input[1]), layer, (_tensor(g, node),))


def _gemm(g: _Graph, node: Any, a: dict) -> fx.Node:
    if a.get("transA", 0):
        raise UsageError(f"unsupported ONNX node {node.name} (Gemm): transA=1")
    w = _const(g, node, 1, "weight")
    w = w.T if not a.get("transB", 0) else w  # type: ignore[union-attr]
    w = w * float(a.get("alpha", 1.0))
    c = _const(g, node, 2, "bias")
    if c is not None:
        c = _row_vector(c, w.shape[0], node, "Gemm") * float(a.get("beta", 1.0))
    layer = nn.Linear(w.shape[1], w.shape[0], bias=c is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
        if c is not None:
            layer.bias.copy_(torch.from_numpy(np.array(c, dtype=np.float32)))
    return g.add(_layer_name(node, node.input[1]), layer, (_tensor(g, node),))


def _along_last(c: np.ndarray, n: int) -> bool:
    """``c`` holds n values along its last axis only (``[n]`` or ``[1, .., 1, n]``): a bias,
    not a constant that varies down the rows (``[n, 1]``)."""
    return c.ndim >= 1 and c.shape[-1] == n and c.size == n


def _row_vector(c: np.ndarray, n: int, node: Any, op: str) -> np.ndarray:
    """A constant that broadcasts along the last axis only (:func:`_along_last`, or a single
    value) as ``[n]``; one that varies along another axis is refused."""
    if c.size == 1:
        return np.full((n,), float(c.reshape(())), dtype=np.float32)
    if not _along_last(c, n):
        raise UsageError(f"unsupported ONNX node {node.name} ({op}): a bias of shape {list(c.shape)} varies along an axis other than the last")
    return np.array(c.reshape(-1), dtype=np.float32)


def _matmul(g: _Graph, node: Any, a: dict) -> fx.Node:
    w = _const(g, node, 1, "weight")
    if w is None or w.ndim != 2:
        raise UsageError(f"unsupported ONNX node {node.name} (MatMul): only a product with a stored 2-d weight")
    layer = nn.Linear(w.shape[0], w.shape[1], bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.array(w.T, dtype=np.float32)))
    new = g.add(_layer_name(node, node.input[1]), layer, (_tensor(g, node),))
    g.linear_of[node.output[0]] = layer
    return new


def _batch_norm(g: _Graph, node: Any, a: dict) -> fx.Node:
    if a.get("training_mode", 0) or len(node.output) > 1 and any(node.output[1:]):
        raise UsageError(f"unsupported ONNX node {node.name} (BatchNormalization): training mode")
    scale, bias, mean, var = (_const(g, node, i, w) for i, w in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    rank = len(g.shapes.get(node.input[0], []))
    if rank in (2, 3):
        cls: type[nn.Module] = nn.BatchNorm1d
    elif rank == 4:
        cls = nn.BatchNorm2d
    else:
        raise UsageError(f"unsupported ONNX node {node.name} (BatchNormalization): input of unknown or unsupported rank")
    layer = cls(mean.shape[0], eps=float(a.get("epsilon", 1e-5)))  # type: ignore[union-attr]
    with torch.no_grad():
        for target, value in ((layer.weight, scale), (layer.bias, bias), (layer.running_mean, mean), (layer.running_var, var)):
            target.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))
    return g.add(_layer_name(node, node.input[3]), layer, (_tensor(g, node),))


def _clip(g: _Graph, node: Any, a: dict) -> fx.Node:
    if g.opset < 11 or "min" in a or "max" in a:
        lo, hi = a.get("min"), a.get("max")
    else:
        lo_arr, hi_arr = _const(g, node, 1, "min"), _const(g, node, 2, "max")
        lo = None if lo_arr is None else float(lo_arr)
        hi = None if hi_arr is None else float(hi_arr)
    if lo is None or float(lo) != 0.0:
        raise UsageError(f"unsupported ONNX node {node.name} (Clip): bounds ({lo}, {hi}); only Clip(0, max) converts")
    layer: nn.Module = nn.ReLU() if hi is None else (nn.ReLU6() if float(hi) == 6.0 else nn.Hardtanh(0.0, float(hi)))
    return g.add(_layer_name(node, None), layer, (_tensor(g, node),))


def _simple(factory: Callable[[dict], nn.Module]) -> Callable[[_Graph, Any, dict], fx.Node]:
    def handle(g: _Graph, node: Any, a: dict) -> fx.Node:
        return g.add(_layer_name(node, None), factory(a), (_tensor(g, node),))

    return handle


def _hardsigmoid(a: dict) -> nn.Module:
    if abs(float(a.get("alpha", 0.2)) - 1 / 6) > 1e-6 or float(a.get("beta", 0.5)) != 0.5:
        raise UsageError("unsupported ONNX node HardSigmoid: only alpha=1/6, beta=0.5 (torch's Hardsigmoid)")
    return nn.Hardsigmoid()


def _pool(kind: str) -> Callable[[_Graph, Any, dict], fx.Node]:
    def handle(g: _Graph, node: Any, a: dict) -> fx.Node:
        _auto_pad(a, node)
        kernel = tuple(a["kernel_shape"])
        dims = len(kernel)
        if dims not in (1, 2):
            raise UsageError(f"unsupported ONNX node {node.name} ({node.op_type}): {dims}-d pooling")
        stride = tuple(a.get("strides", [1] * dims))
        padding = _symmetric(a.get("pads", [0] * 2 * dims), dims, node)
        dilation = tuple(a.get("dilations", [1] * dims))
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            if len(node.output) > 1 and node.output[1]:
                raise UsageError(f"unsupported ONNX node {node.name} (MaxPool): indices output")
            layer: nn.Module = (nn.MaxPool1d if dims == 1 else nn.MaxPool2d)(kernel, stride, padding, dilation, ceil_mode=ceil)
        else:
            if any(d != 1 for d in dilation):
                raise UsageError(f"unsupported ONNX node {node.name} (AveragePool): dilation")
            count = bool(a.get("count_include_pad", 0))
            layer = nn.AvgPool1d(kernel, stride, padding, ceil, count) if dims == 1 else nn.AvgPool2d(kernel, stride, padding, ceil, count)
        return g.add(_layer_name(node, None), layer, (_tensor(g, node),))

    return handle


def _global_avg(g: _Graph, node: Any, a: dict) -> fx.Node:
    rank = len(g.shapes.get(node.input[0], []))
    layer: nn.Module = nn.AdaptiveAvgPool1d(1) if rank == 3 else nn.AdaptiveAvgPool2d(1)
    return g.add(_layer_name(node, None), layer, (_tensor(g, node),))


def _flatten(g: _Graph, node: Any, a: dict) -> fx.Node:
    axis = int(a.get("axis", 1))
    if axis != 1:
        raise UsageError(f"unsupported ONNX node {node.name} (Flatten): axis {axis} (only 1 keeps the batch)")
    return g.graph.call_function(torch.flatten, (_tensor(g, node), 1))


def _reshape(g: _Graph, node: Any, a: dict) -> fx.Node:
    """A reshape that keeps the batch dimension: ``reshape(x, (-1, *rest))``."""
    x = _tensor(g, node)
    given = g.values[node.input[1]]
    if isinstance(given, _Shape):  # Shape -> Gather -> Concat chains of a dynamic batch
        shape = [-1 if v == "batch" else int(v) for v in given.values]
        if any(v == "batch" for v in given.values[1:]) or given.values[:1] != ("batch",):
            raise UsageError(f"unsupported ONNX node {node.name} (Reshape): the batch size moves to another axis")
    else:
        shape = [int(v) for v in _const(g, node, 1, "shape")]  # type: ignore[union-attr]
    in_dims = g.shapes.get(node.input[0])
    if not in_dims or any(not isinstance(d, int) for d in in_dims[1:]):
        raise UsageError(f"unsupported ONNX node {node.name} (Reshape): input shape unknown")
    per_sample = math.prod(in_dims[1:])
    rest = shape[1:]
    if not a.get("allowzero", 0):
        rest = [in_dims[i + 1] if v == 0 and i + 1 < len(in_dims) else v for i, v in enumerate(rest)]
    if rest.count(-1) == 1:
        known = math.prod(v for v in rest if v != -1)
        rest[rest.index(-1)] = per_sample // known if known else 0
    keeps_batch = (shape[0] in (-1, 0) or shape[0] == in_dims[0]) and -1 not in rest and math.prod(rest) == per_sample
    if not keeps_batch:
        raise UsageError(f"unsupported ONNX node {node.name} (Reshape): {in_dims} -> {shape} mixes the batch dimension")
    if len(rest) == 1:
        return g.graph.call_function(torch.flatten, (x, 1))
    return g.graph.call_function(torch.reshape, (x, (-1, *rest)))


def _binary(fn: Callable) -> Callable[[_Graph, Any, dict], fx.Node]:
    def handle(g: _Graph, node: Any, a: dict) -> Any:
        left, right = (g.values[name] for name in node.input[:2])
        if fn is operator.add:
            for tensor, const in ((left, right), (right, left)):
                if isinstance(tensor, fx.Node) and isinstance(const, np.ndarray) and node.input[0 if tensor is left else 1] in g.linear_of:
                    layer = g.linear_of[node.input[0 if tensor is left else 1]]
                    if layer.bias is None and g.users.get(node.input[0 if tensor is left else 1]) == 1 and _along_last(const, layer.out_features):
                        layer.bias = nn.Parameter(torch.from_numpy(np.array(const.reshape(-1), dtype=np.float32)))
                        return tensor  # MatMul + Add -> Linear with a bias
        args = []
        for value in (left, right):
            if isinstance(value, np.ndarray):
                if value.size != 1:
                    raise UsageError(f"unsupported ONNX node {node.name} ({node.op_type}): a stored tensor added to or multiplied with an activation")
                value = float(value.reshape(()))
            args.append(value)
        return g.graph.call_function(fn, tuple(args))

    return handle


def _axes(g: _Graph, node: Any, a: dict) -> list[int] | None:
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    value = _const(g, node, 1, "axes")
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _squeeze(g: _Graph, node: Any, a: dict) -> fx.Node:
    axes = _axes(g, node, a)
    if not axes:
        raise UsageError(f"unsupported ONNX node {node.name} (Squeeze): no axes")
    x = _tensor(g, node)
    for d in sorted(_nonnegative(axes, _rank(g, node), node), reverse=True):  # the last first: the earlier ones keep their place
        x = g.graph.call_function(torch.squeeze, (x, d))
    return x


def _unsqueeze(g: _Graph, node: Any, a: dict) -> fx.Node:
    x = _tensor(g, node)
    axes = _axes(g, node, a) or []
    rank = _rank(g, node)
    for d in sorted(_nonnegative(axes, None if rank is None else rank + len(axes), node)):  # ONNX counts them in the output's rank
        x = g.graph.call_function(torch.unsqueeze, (x, d))
    return x


def _rank(g: _Graph, node: Any) -> int | None:
    dims = g.shapes.get(node.input[0])
    return None if dims is None else len(dims)


def _nonnegative(axes: list[int], rank: int | None, node: Any) -> list[int]:
    """ONNX axes counted from the front (``a + rank`` for a < 0), so that applying them one at
    a time does not shift the ones not yet applied."""
    if any(d < 0 for d in axes) and rank is None:
        raise UsageError(f"unsupported ONNX node {node.name} ({node.op_type}): negative axes on a tensor of unknown rank")
    out = [d + rank if d < 0 else d for d in axes]  # type: ignore[operator]
    if rank is not None and any(not 0 <= d < rank for d in out):
        raise UsageError(f"invalid ONNX node {node.name} ({node.op_type}): axes {axes} for rank {rank}")
    return out


def _reduce_mean(g: _Graph, node: Any, a: dict) -> fx.Node:
    axes = _axes(g, node, a)
    if not axes:
        raise UsageError(f"unsupported ONNX node {node.name} (ReduceMean): over every axis, batch included")
    return g.graph.call_function(torch.mean, (_tensor(g, node), tuple(axes)), {"keepdim": bool(a.get("keepdims", 1))})


def _concat(g: _Graph, node: Any, a: dict) -> fx.Node:
    return g.graph.call_function(torch.cat, ([_tensor(g, node, i) for i in range(len(node.input))], int(a["axis"])))


def _transpose(g: _Graph, node: Any, a: dict) -> fx.Node:
    perm = tuple(int(v) for v in a["perm"])
    if perm[0] != 0:
        raise UsageError(f"unsupported ONNX node {node.name} (Transpose): moves the batch dimension")
    return g.graph.call_function(torch.permute, (_tensor(g, node), perm))


def _pad(g: _Graph, node: Any, a: dict) -> fx.Node:
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = a.get("pads") if "pads" in a else _const(g, node, 1, "pads")
    value = a.get("value", 0.0) if "pads" in a else _const(g, node, 2, "value")
    value = 0.0 if value is None else float(np.asarray(value).reshape(()))
    if mode != "constant" or value != 0.0 or len(node.input) > 3 and node.input[3]:
        raise UsageError(f"unsupported ONNX node {node.name} (Pad): only zero padding of every axis")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    n = len(pads) // 2
    if pads[0] or pads[n]:
        raise UsageError(f"unsupported ONNX node {node.name} (Pad): pads the batch dimension")
    torch_pads: list[int] = []
    for d in reversed(range(1, n)):
        torch_pads += [pads[d], pads[d + n]]
    return g.graph.call_function(F.pad, (_tensor(g, node), torch_pads))


def _gather(g: _Graph, node: Any, a: dict) -> fx.Node:
    index = _const(g, node, 1, "indices")
    axis = int(a.get("axis", 0))
    rank = len(g.shapes.get(node.input[0], []))
    axis = axis + rank if axis < 0 else axis
    if index is None or index.ndim != 0 or axis == 0:
        raise UsageError(f"unsupported ONNX node {node.name} (Gather): only one constant index along a non-batch axis")
    return g.graph.call_function(operator.getitem, (_tensor(g, node), tuple([slice(None)] * axis + [int(index)])))


def _identity(g: _Graph, node: Any, a: dict) -> Any:
    return g.values[node.input[0]]


# ONNX activation -> its module; each module type is an entry of the op registry (annsnn.ops),
# which decides what conversion does with it (tests/test_architecture.py checks the names)
_ACTIVATIONS: dict[str, Callable[[dict], nn.Module]] = {
    "Relu": lambda a: nn.ReLU(),
    "LeakyRelu": lambda a: nn.LeakyReLU(float(a.get("alpha", 0.01))),
    "Sigmoid": lambda a: nn.Sigmoid(),
    "Tanh": lambda a: nn.Tanh(),
    "Elu": lambda a: nn.ELU(float(a.get("alpha", 1.0))),
    "HardSwish": lambda a: nn.Hardswish(),
    "HardSigmoid": _hardsigmoid,
    "Gelu": lambda a: nn.GELU(approximate=(a.get("approximate", b"none").decode() if isinstance(a.get("approximate"), bytes) else a.get("approximate", "none"))),
}

_HANDLERS: dict[str, Callable[[_Graph, Any, dict], Any]] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "Clip": _clip,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_avg,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Add": _binary(operator.add),
    "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "ReduceMean": _reduce_mean,
    "Concat": _concat,
    "Transpose": _transpose,
    "Pad": _pad,
    "Gather": _gather,
    "Identity": _identity,
    "Dropout": _identity,
}
for _name, _factory in _ACTIVATIONS.items():
    _HANDLERS[_name] = _simple(_factory)


def _fold(g: _Graph, node: Any) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    inputs = {name: g.values[name] for name in node.input if name}
    try:
        evaluator = ReferenceEvaluator(node, opsets={"": g.opset})
        return [np.asarray(v) for v in evaluator.run(None, inputs)]
    except Exception as exc:
        raise UsageError(f"cannot fold constant ONNX node {node.name or node.op_type} ({node.op_type}: {type(exc).__name__})") from None


def _shape_arith(g: _Graph, node: Any, a: dict) -> bool:
    """Shape arithmetic on ``Shape(x)``: the batch stays symbolic, other sizes are static.

    Returns True when ``node`` was such an op and its value is stored.
    """
    inputs = [g.values.get(name) for name in node.input if name]
    if node.op_type == "Shape":
        dims = g.shapes.get(node.input[0])
        if not dims or any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
            return False
        values: tuple[int | str, ...] = ("batch", *dims[1:])
        start, end = int(a.get("start", 0)), a.get("end")
        g.values[node.output[0]] = _Shape(values[start: None if end is None else int(end)])
        return True
    if not inputs or not any(isinstance(v, _Shape) for v in inputs):
        return False
    first = inputs[0]
    if node.op_type == "Cast" and isinstance(first, _Shape):
        g.values[node.output[0]] = first
    elif node.op_type == "Gather" and isinstance(first, _Shape) and isinstance(inputs[1], np.ndarray) and inputs[1].ndim == 0:
        g.values[node.output[0]] = _Shape((first.values[int(inputs[1])],), scalar=True)
    elif node.op_type == "Unsqueeze" and isinstance(first, _Shape) and first.scalar:
        g.values[node.output[0]] = _Shape(first.values)
    elif node.op_type == "Squeeze" and isinstance(first, _Shape) and len(first.values) == 1:
        g.values[node.output[0]] = _Shape(first.values, scalar=True)
    elif node.op_type == "Slice" and isinstance(first, _Shape) and all(isinstance(v, np.ndarray) for v in inputs[1:]):
        start, end = int(inputs[1].reshape(-1)[0]), int(inputs[2].reshape(-1)[0])
        step = int(inputs[4].reshape(-1)[0]) if len(inputs) > 4 else 1
        g.values[node.output[0]] = _Shape(first.values[start: end if end < 2**62 else None: step])
    elif node.op_type == "Concat":
        parts: list[int | str] = []
        for value in inputs:
            if isinstance(value, _Shape) and not value.scalar:
                parts.extend(value.values)
            elif isinstance(value, np.ndarray) and value.ndim == 1:
                parts.extend(int(v) for v in value)
            else:
                return False
        g.values[node.output[0]] = _Shape(tuple(parts))
    else:
        return False
    return True


def import_onnx(proto: Any) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    """Build standard modules from ``proto``; also return the input's per-sample shape."""
    import onnx
    import onnx.inliner
    import onnx.shape_inference
    from onnx import numpy_helper

    try:
        proto = onnx.inliner.inline_local_functions(proto)
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:
        raise UsageError(f"the ONNX model fails shape inference ({type(exc).__name__})") from None
    g = _Graph(proto)
    graph = proto.graph
    for tensor in graph.initializer:
        g.values[tensor.name] = numpy_helper.to_array(tensor)
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in info.type.tensor_type.shape.dim]
        g.shapes[info.name] = dims
    for node in graph.node:
        for name in node.input:
            g.users[name] = g.users.get(name, 0) + 1
    inputs = [i for i in graph.input if i.name not in g.values]
    if len(inputs) != 1:
        raise UsageError(f"the ONNX model takes {len(inputs)} inputs; annsnn needs one image tensor")
    placeholder = g.graph.placeholder(re.sub(r"\W", "_", inputs[0].name) or "x")
    g.values[inputs[0].name] = placeholder
    dims = g.shapes.get(inputs[0].name, [])
    sample_shape = tuple(int(d) for d in dims[1:]) if dims and all(isinstance(d, int) and d > 0 for d in dims[1:]) else None
    unsupported: list[str] = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            unsupported.append(f"{node.name or node.op_type} ({node.domain}.{node.op_type})")
            continue
        if any(name and name not in g.values for name in node.input):
            unsupported.append(f"{node.name or node.op_type} ({node.op_type}, after an unsupported node)")
            continue
        a = _attrs(node)
        if node.op_type == "Constant" or (node.input and all(isinstance(g.values[n], np.ndarray) for n in node.input if n)):
            for name, value in zip(node.output, _fold(g, node)):
                g.values[name] = value
            continue
        if node.op_type in ("Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Squeeze", "Cast") and _shape_arith(g, node, a):
            continue
        if node.op_type == "Shape":
            unsupported.append(f"{node.name} (Shape of a tensor whose non-batch sizes are not static)")
            continue
        handler = _HANDLERS.get(node.op_type)
        if handler is None:
            unsupported.append(f"{node.name or node.op_type} ({node.op_type})")
            continue
        g.values[node.output[0]] = handler(g, node, a)
    if unsupported:
        raise UsageError("unsupported ONNX node(s): " + ", ".join(unsupported[:8]) + (f" and {len(unsupported) - 8} more" if len(unsupported) > 8 else ""))
    if len(graph.output) != 1:
        raise UsageError(f"the ONNX model has {len(graph.output)} outputs; annsnn needs a single tensor")
    result = g.values[graph.output[0].name]
    if not isinstance(result, fx.Node):
        raise UsageError("the ONNX model's output does not depend on its input")
    g.graph.output(result)
    gm = fx.GraphModule(g.root, g.graph, "OnnxModel")
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval(), sample_shape


def load_onnx(path: str | os.PathLike) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    """Read, check and import an ``.onnx`` file; any failure is one :class:`UsageError` line."""
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise UsageError(f"{str(path)!r} is not a valid ONNX model ({type(exc).__name__})") from None
    return import_onnx(proto)
