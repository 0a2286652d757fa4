"""Counting rules: each op's structural form on spike-count maps, and a weight layer's dense MACs.

A *fan-out* rule runs the op with every weight set to 1 and average pools read as sum pools,
so that ``F = J^T 1`` counts the synaptic operations one spike triggers (see
:mod:`annsnn.counting`). They are the ``fanout`` and ``macs`` fields of the op entries
(:mod:`annsnn.ops`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..opspec import FanoutFn

__all__ = [
    "run_op",
    "first_tensor",
    "mean_as_sum",
    "module_rule",
    "valid_taps",
    "conv_macs",
    "linear_macs",
    "dense_macs",
    "StructuralFn",
    "conv_structure",
    "linear_structure",
    "avgpool1d_structure",
    "avgpool2d_structure",
    "adaptive_avgpool_structure",
    "identity_structure",
    "pool_windows_structure",
]


def run_op(op: Callable, args: tuple, kwargs: dict) -> Any:
    """Fan-out rule of an op that moves values: the op itself on spike-count maps."""
    return op(*args, **kwargs)


def first_tensor(op: Callable, args: tuple, kwargs: dict) -> Any:
    """Fan-out rule of a multiplication by a constant: every spike still reaches its target once."""
    return next(a for a in args if isinstance(a, Tensor))


def mean_as_sum(op: Callable, args: tuple, kwargs: dict) -> Any:
    """Fan-out rule of a mean: a sum (each spike reaches the output once)."""
    return torch.sum(*args, **kwargs)


def module_rule(fn: Callable[[nn.Module, Tensor], Tensor]) -> FanoutFn:
    def rule(op: Callable, args: tuple, kwargs: dict) -> Any:
        return fn(op, args[0])  # type: ignore[arg-type]

    rule.__name__ = fn.__name__
    rule.__doc__ = fn.__doc__
    return rule


def valid_taps(spatial: tuple[int, ...], kernel: tuple[int, ...], stride, padding, dilation) -> int:
    """Kernel taps that land on real (unpadded) inputs, summed over all output positions:
    a convolution of an all-ones input with an all-ones kernel, ``sum(conv(1, 1))``."""
    dims = len(spatial)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    ones = torch.ones(1, 1, *spatial, dtype=torch.float64)
    return int(fn(ones, torch.ones(1, 1, *kernel, dtype=torch.float64), None, stride, padding, dilation).sum())


def conv_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs per sample of a Conv on an input of ``input_shape`` (no batch), padding excluded::

        C_out * C_in/groups * sum over outputs of the taps on real inputs
    """
    if module.padding_mode != "zeros":
        raise UsageError(f"cannot count {type(module).__name__} with padding_mode={module.padding_mode!r}")
    spatial = tuple(input_shape[1:])
    padding = module.padding  # 'same' / 'valid' too: valid_taps pads as torch does (more on the right when the total is odd)
    taps = valid_taps(spatial, tuple(module.kernel_size), module.stride, padding, module.dilation)
    return module.out_channels * (module.in_channels // module.groups) * taps


def linear_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs per sample of a Linear on an input of ``input_shape`` (no batch)::

        prod(input_shape[:-1]) * in_features * out_features
    """
    return math.prod(input_shape[:-1]) * module.in_features * module.out_features


def dense_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs per sample of a Conv or Linear (:func:`conv_macs`, :func:`linear_macs`), for
    callers that hold a layer but no registry; the registry's entries carry these rules
    (``OpSpec.macs``) and counting reads them there."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return conv_macs(module, input_shape)
    if isinstance(module, nn.Linear):
        return linear_macs(module, input_shape)
    raise TypeError(f"no closed form for {type(module).__name__}")


StructuralFn = Callable[[nn.Module, Tensor], Tensor]


def conv_structure(module: nn.Module, x: Tensor) -> Tensor:
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise UsageError(f"cannot count {type(module).__name__} with padding_mode={module.padding_mode!r}")
    ones = torch.ones_like(module.weight, dtype=x.dtype)
    fn = F.conv1d if isinstance(module, nn.Conv1d) else F.conv2d
    return fn(x, ones, None, module.stride, module.padding, module.dilation, module.groups)


def linear_structure(module: nn.Module, x: Tensor) -> Tensor:
    return F.linear(x, torch.ones_like(module.weight, dtype=x.dtype))


def avgpool1d_structure(module: nn.Module, x: Tensor) -> Tensor:
    """A sum pool over the 1-d windows (as a 1 x k 2-d pool: ``avg_pool1d`` has no divisor override)."""
    return F.avg_pool2d(x.unsqueeze(-2), (1, module.kernel_size[0]), (1, module.stride[0]), (0, module.padding[0]),
                        module.ceil_mode, module.count_include_pad, divisor_override=1).squeeze(-2)


def avgpool2d_structure(module: nn.Module, x: Tensor) -> Tensor:
    return F.avg_pool2d(x, module.kernel_size, module.stride, module.padding, module.ceil_mode, module.count_include_pad, divisor_override=1)


def _adaptive_windows(n_in: int, n_out: int, dtype: torch.dtype) -> Tensor:
    """``[n_out, n_in]`` 0/1 matrix: output i of an adaptive pool reads inputs
    ``floor(i * n_in / n_out) <= k < ceil((i + 1) * n_in / n_out)`` (windows may overlap)."""
    windows = torch.zeros(n_out, n_in, dtype=dtype)
    for i in range(n_out):
        windows[i, (i * n_in) // n_out : -((-(i + 1) * n_in) // n_out)] = 1
    return windows


def adaptive_avgpool_structure(module: nn.Module, x: Tensor) -> Tensor:
    """Sum over each output's window, even or uneven: ``y[i, j] = sum_{h in H_i, w in W_j} x[h, w]``."""
    out_sizes = module(x[:1]).shape[2:]
    in_sizes = x.shape[2:]
    if all(i % o == 0 for i, o in zip(in_sizes, out_sizes)):
        return module(x) * math.prod(i // o for i, o in zip(in_sizes, out_sizes))
    mats = [_adaptive_windows(i, o, x.dtype) for i, o in zip(in_sizes, out_sizes)]
    if len(mats) == 1:
        return torch.einsum("...l,ol->...o", x, mats[0])
    return torch.einsum("...hw,oh,pw->...op", x, mats[0], mats[1])


def identity_structure(module: nn.Module, x: Tensor) -> Tensor:
    return x


def pool_windows_structure(module: nn.Module, x: Tensor) -> Tensor:
    """Spiking max-pool comparisons: one per pooling window that holds the spiking input,
    so the structural map is a sum pool over the pool's windows (padding excluded)."""
    if module.ceil_mode:
        if tuple(module.dilation) != (1, 1):
            raise UsageError(f"cannot count a spiking max-pool with ceil_mode and dilation {tuple(module.dilation)}")
        return F.avg_pool2d(x, module.kernel_size, module.stride, module.padding, True, False, divisor_override=1)
    return F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride).sum()
