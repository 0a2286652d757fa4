"""Canonicalization rules: the ReLU form of a call, identities in eval, functional pools as modules.

They are the ``relu``, ``when`` and ``lower`` fields of the op entries (:mod:`annsnn.ops`),
read by :mod:`annsnn.graph`.
"""
from __future__ import annotations

from typing import Any

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..errors import UsageError
from ..opspec import ReluForm

__all__ = [
    "relu", "relu6", "relu_clip", "hardtanh", "clamp", "stochastic_depth_in_eval",
    "lower_adaptive_avg_pool2d", "lower_avg_pool2d", "lower_max_pool2d", "fold_conv_batchnorm", "fold_linear_batchnorm",
]


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


# --- ReLU forms ------------------------------------------------------------------


def relu(node: fx.Node, module: nn.Module | None) -> ReluForm:
    return ReluForm(None)


def relu6(node: fx.Node, module: nn.Module | None) -> ReluForm:
    return ReluForm(6.0)


def relu_clip(node: fx.Node, module: nn.Module | None) -> ReluForm:
    return ReluForm(module.ceiling)  # type: ignore[union-attr]


def hardtanh(node: fx.Node, module: nn.Module | None) -> ReluForm | None:
    """``hardtanh(x, 0, a)`` is ``clamp(x, 0, a)``; any other lower bound is not ReLU-like."""
    if module is not None:
        lo, hi = module.min_val, module.max_val
    else:
        lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
    return (ReluForm(None if float(hi) == float("inf") else float(hi))) if float(lo) == 0.0 else None


def clamp(node: fx.Node, module: nn.Module | None) -> ReluForm | None:
    """``clamp(x, min=0[, max=a])`` with constant bounds."""
    lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
    if lo is not None and not isinstance(lo, fx.Node) and float(lo) == 0.0 and not isinstance(hi, fx.Node):
        return ReluForm(None if hi is None or float(hi) == float("inf") else float(hi))  # clamp(0, inf) is a ReLU: no ceiling
    return None


def stochastic_depth_in_eval(node: fx.Node) -> bool:
    return _arg(node, 3, "training", True) is False  # torchvision.ops.stochastic_depth is the identity in eval


# --- functional pools ---------------------------------------------------------------


def _adaptive_avg_pool2d_args(input, output_size):  # noqa: A002 - mirrors F's signature
    return locals()


def _avg_pool2d_args(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None):  # noqa: A002
    return locals()


def _max_pool2d_args(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):  # noqa: A002
    return locals()


def _lowered(node: fx.Node, a: dict, module: nn.Module) -> tuple[nn.Module, fx.Node]:
    if any(isinstance(v, fx.Node) for k, v in a.items() if k != "input"):
        raise UsageError(f"unsupported op {node.name}: pooling parameters computed at run time")
    return module, a["input"]


def lower_adaptive_avg_pool2d(node: fx.Node) -> tuple[nn.Module, fx.Node]:
    a = _adaptive_avg_pool2d_args(*node.args, **node.kwargs)
    return _lowered(node, a, nn.AdaptiveAvgPool2d(a["output_size"]))


def lower_avg_pool2d(node: fx.Node) -> tuple[nn.Module, fx.Node]:
    a = _avg_pool2d_args(*node.args, **node.kwargs)
    return _lowered(node, a, nn.AvgPool2d(a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"], a["count_include_pad"], a["divisor_override"]))


def lower_max_pool2d(node: fx.Node) -> tuple[nn.Module, fx.Node]:
    a = _max_pool2d_args(*node.args, **node.kwargs)
    if a["return_indices"]:
        raise UsageError(f"unsupported op {node.name}: max_pool2d with return_indices")
    return _lowered(node, a, nn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"], a["dilation"], ceil_mode=a["ceil_mode"]))


# --- BatchNorm folding (eval statistics; torch.nn.utils.fusion) ---------------------


def fold_conv_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """``bn(conv(x))`` as one conv: ``W' = W g / sqrt(var + eps)``, ``b' = (b - mean) g / sqrt(var + eps) + beta``."""
    return fuse_conv_bn_eval(layer.eval(), bn.eval())


def fold_linear_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """``bn(linear(x))`` as one linear layer, for a BatchNorm1d (the same equation as a conv)."""
    if not isinstance(bn, nn.BatchNorm1d):
        return None
    return fuse_linear_bn_eval(layer.eval(), bn.eval())
