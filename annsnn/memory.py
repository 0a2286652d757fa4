"""Will one forward pass fit in memory? A shape-only estimate made before the real work.

The model runs once under torch's ``FakeTensorMode``: every tensor carries a shape and a
dtype but no storage, so a 60000×60000 input costs nothing. A hook on every leaf module
records ``bytes(inputs) + bytes(output)``; the largest such sum over the layers is a
**lower bound** on the peak memory of one real forward pass of one sample (the layer's
inputs and output must coexist). Only when that lower bound times the batch exceeds the
memory available is the request refused, so a run that could fit is never refused.

When the shape-only run fails, the failure decides: an error the real run would hit as
well (a shape mismatch: the model cannot take this input) is refused at once, before
the real run allocates anything; a model that cannot run on shape-only tensors
(data-dependent code) is refused only when its input batch alone exceeds the memory.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .errors import UsageError

__all__ = ["ActivationEstimate", "EstimateUnavailable", "ModelRejectsInput", "data_dependent_failure", "estimate_activation_memory", "available_memory", "check_fits"]


class EstimateUnavailable(Exception):
    """The model cannot run on shape-only tensors (data-dependent code); no estimate."""


class ModelRejectsInput(Exception):
    """The shape-only run failed the way the real run would (e.g. a shape mismatch)."""


@dataclass(frozen=True)
class ActivationEstimate:
    """Lower bound of one sample's peak activation memory, and the layer where it occurs."""

    bytes_per_sample: int  # max over leaf layers of bytes(inputs) + bytes(output), batch 1
    layer: str


def _nbytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


def estimate_activation_memory(model: nn.Module, input_shape: Sequence[int]) -> ActivationEstimate:
    """Run ``model`` on a fake ``[1, *input_shape]`` tensor and return the largest per-layer
    ``bytes(in) + bytes(out)``. Raises :class:`EstimateUnavailable` when the model cannot run
    on fake tensors (its real run is then not checked in advance)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    best = [0, ""]
    names = {id(m): name for name, m in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        size = _nbytes(inputs) + _nbytes(output)
        if size > best[0]:
            best[0], best[1] = size, names.get(id(module), type(module).__name__)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")  # logs a traceback for a shape error
    was_disabled, fake_log.disabled = fake_log.disabled, True
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad():
            x = torch.empty((1, *map(int, input_shape)))
            best[0] = max(best[0], _nbytes(x))
            model(x)
    except Exception as exc:  # noqa: BLE001 - classified: data-dependent code, or the model rejects this input
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if data_dependent_failure(exc):
            raise EstimateUnavailable(f"{type(exc).__name__}: {text}") from None
        raise ModelRejectsInput(text[:300]) from None
    finally:
        fake_log.disabled = was_disabled
        for handle in handles:
            handle.remove()
    return ActivationEstimate(int(best[0]), str(best[1]) or "input")


def data_dependent_failure(exc: BaseException) -> bool:
    """Whether a failure on shape-only tensors says nothing about the real run."""
    from torch._subclasses import fake_tensor

    kinds = (fake_tensor.DataDependentOutputException, fake_tensor.DynamicOutputShapeException, fake_tensor.UnsupportedOperatorException, fake_tensor.UnsupportedFakeTensorException)
    text = str(exc).lower()
    return isinstance(exc, kinds) or "data-dependent" in text or "data dependent" in text or "fake" in text or "data pointer" in text or "meta tensor" in text


def available_memory() -> int:
    """Bytes of memory available now: Linux ``MemAvailable``, else physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(value: float) -> str:
    return f"{value / 2**30:,.1f} GiB"


def check_fits(model: nn.Module, input_shape: Sequence[int], batch: int = 1, *, available: int | None = None) -> ActivationEstimate | None:
    """Refuse (``UsageError``) a forward pass of ``batch`` samples whose lower-bound activation
    memory exceeds ``available`` (default: :func:`available_memory`). Returns the estimate,
    or None when the model cannot be estimated on fake tensors."""
    shape = "×".join(map(str, input_shape))
    limit = available_memory() if available is None else available
    try:
        estimate = estimate_activation_memory(model, input_shape)
    except ModelRejectsInput as exc:
        raise UsageError(f"the model cannot run on input {shape}: {exc}") from None
    except EstimateUnavailable as exc:
        need = 4 * math.prod(int(v) for v in input_shape) * max(1, int(batch))
        if need > limit:
            raise UsageError(f"input {shape} alone needs {_gib(need)} for a batch of {batch}; {_gib(limit)} is available, and the model cannot be checked in advance ({exc})") from None
        return None
    need = estimate.bytes_per_sample * max(1, int(batch))
    if need > limit:
        per = f" ({batch} × {_gib(estimate.bytes_per_sample)})" if batch > 1 else ""
        raise UsageError(
            f"input {shape} needs at least {_gib(need)}{per} of activations (at layer {estimate.layer}); "
            f"{_gib(limit)} is available: use a smaller --input-shape" + (" or --batch-size" if batch > 1 else "")
        )
    return estimate
