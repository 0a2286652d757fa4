"""NIR export rules: the NIR node of an op (Pedersen et al., Nature Communications 15, 8122, 2024).

Each rule is the ``nir`` field of an op entry (:mod:`annsnn.ops`), called by
:func:`annsnn.nir_io.to_nir` as ``rule(module, node, label)`` (``module`` None for a function
or method) after shape propagation at batch 1. It returns the ``nir`` node, or a reason
string when NIR cannot express this call (the exporter lists every reason in one line),
or None when the op has no NIR form at this call. The ``nir`` package is imported only
when a rule runs (it is an optional dependency).

Time: one annsnn step is one NIR time unit (``dt = 1``); see :mod:`annsnn.nir_io`.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import fx, nn

__all__ = [
    "node_shape",
    "if_neurons",
    "conv2d",
    "conv1d",
    "linear",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "flatten_module",
    "flatten_call",
    "view_as_flatten",
    "rescale",
    "analog_op",
    "refuse",
    "flatten_node",
]


def node_shape(node: fx.Node) -> tuple[int, ...]:
    """The shape of one sample of ``node``'s value (its propagated shape without the batch)."""
    return tuple(int(s) for s in node.meta["tensor_meta"].shape[1:])


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


def _in_shape(node: fx.Node) -> tuple[int, ...]:
    return node_shape(node.args[0]) if isinstance(node.args[0], fx.Node) else ()


def if_neurons(module: nn.Module, node: fx.Node, label: str) -> Any:
    """``IF`` with ``r = 1``, ``v_threshold = 1``, ``v_reset = 0``; reset by subtraction,
    firing at ``v >= 1`` and ``v_init`` in the node's metadata (NIR 1.0 has no fields for them)."""
    import nir

    extra = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
    extra += [k for k, v in vars(module).items() if isinstance(v, torch.Tensor) and k != "v"]
    if extra:
        return f"{label} (IF neurons with per-step corrections {', '.join(extra)}: NIR's IF has no time-varying bias)"
    out_shape = node_shape(node)
    ones = np.ones(out_shape, dtype=np.float32)
    return nir.IF(
        r=ones, v_threshold=ones.copy(), v_reset=np.zeros(out_shape, dtype=np.float32),
        metadata={"reset": "subtract", "fires_at": ">=", "v_init": float(module.v_init), "dt": 1.0},
    )


def conv2d(module: nn.Module, node: fx.Node, label: str) -> Any:
    import nir

    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        return f"{label} (Conv2d padding {module.padding!r}/{module.padding_mode})"
    bias = _np(module.bias) if module.bias is not None else np.zeros(module.out_channels, dtype=np.float32)
    return nir.Conv2d(input_shape=tuple(_in_shape(node)[1:]), weight=_np(module.weight), stride=tuple(module.stride), padding=tuple(module.padding),
                      dilation=tuple(module.dilation), groups=module.groups, bias=bias)


def conv1d(module: nn.Module, node: fx.Node, label: str) -> Any:
    import nir

    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        return f"{label} (Conv1d padding {module.padding!r}/{module.padding_mode})"
    bias = _np(module.bias) if module.bias is not None else np.zeros(module.out_channels, dtype=np.float32)
    return nir.Conv1d(input_shape=int(_in_shape(node)[1]), weight=_np(module.weight), stride=int(module.stride[0]), padding=int(module.padding[0]),
                      dilation=int(module.dilation[0]), groups=module.groups, bias=bias)


def linear(module: nn.Module, node: fx.Node, label: str) -> Any:
    """``Affine`` (with bias) or ``Linear``, on a 1-d sample."""
    import nir

    in_shape = _in_shape(node)
    if len(in_shape) != 1:
        return f"{label} (Linear on a {len(in_shape)}-d sample)"
    if module.bias is None:
        return nir.Linear(weight=_np(module.weight))
    return nir.Affine(weight=_np(module.weight), bias=_np(module.bias))


def avg_pool2d(module: nn.Module, node: fx.Node, label: str) -> Any:
    import nir

    k, s, p = (tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in (module.kernel_size, module.stride or module.kernel_size, module.padding))
    if module.ceil_mode or module.divisor_override or (any(p) and not module.count_include_pad):
        return f"{label} (AvgPool2d with ceil_mode/divisor_override/count_include_pad=False)"
    return nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))


def adaptive_avg_pool2d(module: nn.Module, node: fx.Node, label: str) -> Any:
    """An evenly dividing adaptive average pool is an ``AvgPool2d`` with kernel = stride = in/out."""
    import nir

    in_shape, out_shape = _in_shape(node), node_shape(node)
    if any(i % o for i, o in zip(in_shape[1:], out_shape[1:])):
        return f"{label} (adaptive average pool with uneven windows)"
    k = tuple(i // o for i, o in zip(in_shape[1:], out_shape[1:]))
    return nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(k), padding=np.array((0, 0)))


def flatten_node(in_shape: tuple[int, ...], start_dim: int, end_dim: int, label: str) -> Any:
    """NIR ``Flatten``: torch dims count the batch, NIR's shapes do not (snnTorch's exporter
    subtracts 1 too)."""
    import nir

    rank = len(in_shape) + 1
    start = start_dim % rank
    end = end_dim % rank
    if start == 0:
        return f"{label} (flatten over the batch)"
    return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start - 1, end_dim=end - 1 if end != rank - 1 else -1)


def flatten_module(module: nn.Module, node: fx.Node, label: str) -> Any:
    return flatten_node(_in_shape(node), module.start_dim, module.end_dim, label)


def flatten_call(module: None, node: fx.Node, label: str) -> Any:
    """``torch.flatten(x, start, end)`` or ``x.flatten(start, end)``."""
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return flatten_node(_in_shape(node), int(start), int(end), label)


def view_as_flatten(module: None, node: fx.Node, label: str) -> Any:
    """``x.view(B, -1)`` / ``x.reshape(B, -1)`` to a 2-d tensor is a flatten; other reshapes
    have no NIR form (None)."""
    if node.op != "call_method" or "tensor_meta" not in node.meta or len(node.meta["tensor_meta"].shape) != 2:
        return None
    return flatten_node(_in_shape(node), 1, -1, label)


def rescale(module: nn.Module, node: fx.Node, label: str) -> Any:
    """annsnn's Rescale synapse is NIR's ``Scale``."""
    import nir

    return nir.Scale(scale=np.broadcast_to(_np(module.factor), node_shape(node)).copy())


def analog_op(module: nn.Module, node: fx.Node, label: str) -> Any:
    """Hybrid: an analog op on running rates has no NIR node."""
    return f"{label} (analog {module.target})"


def refuse(words: str):
    """The rule of an op NIR cannot express: its reason reads ``label (words)``."""

    def rule(module: nn.Module | None, node: fx.Node, label: str) -> str:
        return f"{label} ({words})"

    rule.__name__ = f"refuse_{words}"
    return rule
