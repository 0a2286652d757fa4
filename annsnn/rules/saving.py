"""Saving rules: how a module type of the op registry is written to an SNN file and rebuilt.

A module is saved as its JSON-ready constructor arguments (``save``) and rebuilt from them
and the state_dict (``load``); these are the only modules an SNN file may hold
(:mod:`annsnn.artifact`), so a file never names code.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import UsageError
from ..layers import IFNeurons
from ..opspec import LoadFn, OpRegistry, SaveFn

__all__ = ["constructor_io", "config_io", "conv_config", "pool_config", "linear_config", "bias_flag", "mha_extra", "load_neurons"]


def constructor_io(
    cls: type[nn.Module],
    fields: tuple[str, ...] = (),
    extra: Callable[[nn.Module], dict] | None = None,
    extra_keys: tuple[str, ...] = (),
) -> tuple[SaveFn, LoadFn]:
    """Save/load rules of a module rebuilt as ``cls(**config)`` (then its state_dict).

    ``fields`` are constructor arguments stored as attributes of the same name; ``extra``
    reads constructor arguments that are not (LayerNorm's ``bias``). Loading accepts only
    these keys and plain values (numbers, strings, tuples, None).
    """
    allowed = set(fields) | set(extra_keys)

    def save(module: nn.Module) -> dict:
        config = {name: getattr(module, name) for name in fields}
        if extra is not None:
            config.update(extra(module))
        return {k: (list(v) if isinstance(v, (tuple, torch.Size)) else v) for k, v in config.items()}

    def load(config: dict, state: dict, prefix: str, registry: OpRegistry) -> nn.Module:
        if not set(config) <= allowed:
            raise UsageError(f"SNN file holds unknown arguments for {cls.__name__}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
        if not all(isinstance(v, (bool, int, float, str, tuple, type(None))) for v in kwargs.values()):
            raise UsageError(f"SNN file holds a bad configuration for {cls.__name__}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"SNN file holds a bad configuration for {cls.__name__} ({exc})") from None

    return save, load


def config_io(cls: type[nn.Module], save: SaveFn) -> tuple[SaveFn, LoadFn]:
    """Save with ``save``; load as ``cls(**config)``, lists as tuples (format version 1)."""

    def load(config: dict, state: dict, prefix: str, registry: OpRegistry) -> nn.Module:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()})

    return save, load


def conv_config(m: nn.Module) -> dict:
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
        "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None, "padding_mode": m.padding_mode,
    }


def pool_config(m: nn.Module) -> dict:
    keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override", "output_size")
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys if hasattr(m, k) for v in [getattr(m, k)]}


def linear_config(m: nn.Module) -> dict:
    return {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}


def bias_flag(m: nn.Module) -> dict:
    return {"bias": getattr(m, "bias", None) is not None}


def mha_extra(m: nn.Module) -> dict:
    return {"bias": m.in_proj_bias is not None, "add_bias_kv": m.bias_k is not None}


def load_neurons(config: dict, state: dict, prefix: str, registry: OpRegistry) -> nn.Module:
    if bool(config.get("bias_steps", 0)) != (prefix + "step_bias" in state):  # the per-step bias is a tensor of the state
        raise UsageError("SNN file's neuron bias does not match its graph (corrupt file)")
    return IFNeurons(float(config.get("v_init", 0.0)), step_bias=state.get(prefix + "step_bias"))
