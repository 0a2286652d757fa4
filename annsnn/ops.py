"""The one op registry: every op annsnn can convert, keep analog, count and save.

Each supported op has ONE :class:`OpSpec`: the module types, functions and tensor-method
names it matches (its aliases, e.g. ``nn.ReLU``, ``F.relu`` and ``x.relu()``), its
:class:`Role`, its conversion (scale) rule, how a demanded scale travels back through it,
whether it may stay analog under ``--hybrid``, its counting rule (the structural
"fan-out" form of the op, and the dense MACs of a weight layer), and how a module of
that type is saved and rebuilt. :mod:`annsnn.graph` (canonicalization),
:mod:`annsnn.convert` (scales), :mod:`annsnn.analog` (hybrid ops), :mod:`annsnn.counting`
(SyOPs/ACs and MACs) and :mod:`annsnn.artifact` (the SNN file's allowlist) all read the
entry and keep no list of their own, so adding an op touches one place.

An op is *handled* (it has an entry), or *unsupported*: conversion stops with a one-line
error naming the node, and counting lists it in ``SnnCounter.unsupported``; it is never
converted with scale 1 or counted as 0.

The design follows torch.ao's ``BackendConfig`` (one ``BackendPatternConfig`` per op,
passed to ``prepare_fx`` rather than read from a global) and fvcore's per-instance
``set_op_handle`` with ``unsupported_ops()``. There is no mutable global:
:func:`default_registry` returns a fresh copy of the built-in entries, which a user may
extend with :meth:`OpRegistry.register` and pass to ``ann_to_snn(..., registry=)``,
``canonicalize``, ``SnnCounter`` and ``load_snn(..., registry=)``. A converted
:class:`~annsnn.snn.SpikingNetwork` keeps the registry it was built with, so counting and
saving use the same entries; an SNN file that names a user-registered module type loads
only when that registry is passed to ``load_snn`` (nothing in the file names code).

Example, a user's channel-shuffle module that only moves values::

    from annsnn.ops import OpSpec, Role, default_registry, move_scale, constructor_io

    save, load = constructor_io(ChannelShuffle, ("groups",))
    registry = default_registry().register(OpSpec(
        "ChannelShuffle", Role.MOVE, modules=(ChannelShuffle,), convert=move_scale,
        copies_spikes=True, fanout=run_op, save=save, load=load))
    snn, report = ann_to_snn(model, batches, input_shape=(3, 32, 32), registry=registry)
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from .convert import _Context

__all__ = [
    "Role",
    "AnalogUse",
    "Demand",
    "ReluForm",
    "OpSpec",
    "OpRegistry",
    "default_registry",
    "constructor_io",
    "run_op",
    "move_scale",
]


class Role(Enum):
    """What an op is to the converter."""

    WEIGHT = "weight"  # Conv/Linear: absorbs scales (W' = W s_in / s_out); ACs on spikes, MACs on analog input
    NEURON = "neuron"  # ReLU-like: becomes a ReLUClip, then IF neurons (``relu`` gives its ceiling)
    POOL = "pool"  # pooling: a per-channel scale passes through
    MOVE = "move"  # moves, copies or zero-pads values (reshape, cat, pad, flatten, ...)
    ADD = "add"  # the sum of two tensors (a residual)
    SCALE = "scale"  # multiplication or division by a constant number
    MEAN = "mean"  # mean over dimensions
    SPLIT = "split"  # chunk/split/unbind: a tuple of views
    SIZE = "size"  # reads sizes only (``x.size(1)``, ``x.dim()``, ``x.shape``)
    INPUT = "input"  # input normalization in front of the network
    ANALOG = "analog"  # no spiking form: stays analog under --hybrid, else refused
    DROP = "drop"  # the identity in eval (dropout, Identity): removed by canonicalization
    SNN = "snn"  # annsnn's own SNN layers (IF neurons, spiking max-pool, rescale, encoder, analog op)


class AnalogUse(Enum):
    """When an op stays analog in a hybrid SNN (:func:`annsnn.analog.is_analog`)."""

    NONLINEAR = "nonlinear"  # always (GELU, softmax, LayerNorm, ...)
    PRODUCT = "product"  # when two operands vary over time (x * gate, q @ k)
    LINEAR = "linear"  # when it touches a stored tensor (x + pos_embedding, cls_token.expand(...))


class Demand(Enum):
    """How a scale demanded of an op's output travels back to its inputs (conversion)."""

    STOP = "stop"  # it does not
    ABSORB = "absorb"  # a weight layer takes the demanded scale into its weights
    OPERANDS = "operands"  # a sum: both operands get it
    CHANNEL = "channel"  # a pool: its input gets it (any per-channel scale)
    SCALAR = "scalar"  # a reshape: its input gets it when it is one number


@dataclass(frozen=True)
class ReluForm:
    """A ReLU-like activation ``clamp(x, 0, ceiling)`` (ceiling None: plain ReLU)."""

    ceiling: float | None = None


Handler = Callable[["_Context", fx.Node], None]  # conversion (scale) rule, see annsnn.convert
ReluFn = Callable[[fx.Node, "nn.Module | None"], "ReluForm | None"]  # None: not ReLU-like at this call
FanoutFn = Callable[[Callable, tuple, dict], Any]  # the op's structural form on spike-count maps
MacsFn = Callable[[nn.Module, tuple], int]  # dense MACs per sample of a weight layer on an input shape
SaveFn = Callable[[nn.Module], dict]  # JSON-ready constructor arguments
LoadFn = Callable[[dict, dict, str, "OpRegistry"], nn.Module]  # (config, state, prefix, registry) -> module
LowerFn = Callable[[fx.Node], "tuple[nn.Module, fx.Node]"]  # functional call -> (module, its input)


@dataclass(frozen=True)
class OpSpec:
    """One op, all its aliases and every rule annsnn applies to it.

    ``name`` is the op's name in messages; a module type is saved under its class name.
    ``functions`` pairs each function with the name it is saved as (``"torch.flatten"``).

    * ``convert`` — the conversion (scale) rule, a handler of :mod:`annsnn.convert`
      (None: the op has no spiking form; it is refused, or kept analog under --hybrid);
    * ``demand`` — how a demanded output scale travels back (:class:`Demand`);
    * ``copies_spikes`` — it moves {0, 1} spikes without changing them (a spiking
      max-pool may follow);
    * ``relu`` — for ``Role.NEURON``: the ReLU form of a call, None if it is not ReLU-like
      there (then ``activation`` ops are analog, others unsupported);
    * ``when`` — for ``Role.DROP``: whether a call is the identity (``stochastic_depth``
      only in eval);
    * ``activation`` — an activation function with no IF form: without --hybrid a model
      with it is refused as "cannot convert activation";
    * ``analog`` — when it stays analog under --hybrid (:class:`AnalogUse`; None: never);
    * ``sink`` — counting: each spike reaching it is one synaptic event (an identity
      synapse into neurons or an analog op);
    * ``fanout`` — counting: the op's structural form, run on spike-count maps with every
      weight 1 and average pools as sum pools, ``fanout(op, args, kwargs)`` where ``op``
      is the module, the function, or a caller of the method;
    * ``macs`` — for ``Role.WEIGHT``: dense MACs per sample on an input shape;
    * ``save`` / ``load`` — a module type's JSON-ready constructor arguments and its
      rebuild from them and the state_dict (the only modules an SNN file may hold);
    * ``lower`` — a functional form canonicalization replaces by the module.
    """

    name: str
    role: Role
    modules: tuple[type[nn.Module], ...] = ()
    functions: tuple[tuple[str, Callable], ...] = ()
    methods: tuple[str, ...] = ()
    convert: Handler | None = None
    demand: Demand = Demand.STOP
    copies_spikes: bool = False
    relu: ReluFn | None = None
    when: Callable[[fx.Node], bool] | None = None
    activation: bool = False
    analog: AnalogUse | None = None
    sink: bool = False
    fanout: FanoutFn | None = None
    macs: MacsFn | None = None
    save: SaveFn | None = None
    load: LoadFn | None = None
    lower: LowerFn | None = None

    def __post_init__(self) -> None:
        if not (self.modules or self.functions or self.methods):
            raise ValueError(f"op {self.name!r} matches nothing: give modules, functions or methods")
        if self.modules and (self.save is None) != (self.load is None):
            raise ValueError(f"op {self.name!r}: give both save and load, or neither")
        if self.role is Role.NEURON and self.relu is None:
            raise ValueError(f"op {self.name!r}: a NEURON op needs its relu form")
        if self.role is Role.WEIGHT and (self.macs is None or self.convert is None):
            raise ValueError(f"op {self.name!r}: a WEIGHT op needs its convert and macs rules")


class OpRegistry:
    """Module type / function / method name -> :class:`OpSpec` (one entry per key).

    Build one with :func:`default_registry` and extend it with :meth:`register`;
    :meth:`copy` gives an independent registry. Lookups are exact: a subclass of a
    registered module type is not that op (its ``forward`` may differ).
    """

    def __init__(self, specs: Iterable[OpSpec] = ()) -> None:
        self._specs: dict[str, OpSpec] = {}
        self._by_module: dict[type, OpSpec] = {}
        self._by_function: dict[Any, OpSpec] = {}
        self._function_names: dict[Any, str] = {}
        self._functions: dict[str, Callable] = {}
        self._by_method: dict[str, OpSpec] = {}
        self._module_names: dict[str, type[nn.Module]] = {}
        for spec in specs:
            self.register(spec)

    # --- building --------------------------------------------------------------
    def register(self, spec: OpSpec, *, replace: bool = False) -> "OpRegistry":
        """Add ``spec`` (returns the registry, so calls chain). A key already matched by
        another entry is an error unless ``replace``, which removes that entry first."""
        taken = [self._by_module.get(c) for c in spec.modules]
        taken += [self._by_function.get(_key(fn)) for _, fn in spec.functions]
        taken += [self._by_method.get(m) for m in spec.methods]
        taken += [self._specs.get(spec.name)]
        taken += [self._by_module.get(self._module_names[c.__name__]) for c in spec.modules if c.__name__ in self._module_names]
        clashes = {s.name: s for s in taken if s is not None}
        clashes.update({self._by_function[_key(self._functions[n])].name: self._by_function[_key(self._functions[n])]
                        for n, fn in spec.functions if n in self._functions and self._functions[n] is not fn})
        if clashes and not replace:
            raise ValueError(f"op {spec.name!r} overlaps the registered op(s) {', '.join(sorted(clashes))}; pass replace=True")
        for old in clashes.values():
            self.unregister(old.name)
        for cls in spec.modules:
            self._by_module[cls] = spec
            self._module_names[cls.__name__] = cls
        for name, fn in spec.functions:
            self._by_function[_key(fn)] = spec
            self._function_names.setdefault(_key(fn), name)  # an alias object keeps its first name
            self._functions[name] = fn
        for method in spec.methods:
            self._by_method[method] = spec
        self._specs[spec.name] = spec
        return self

    def unregister(self, name: str) -> OpSpec:
        """Remove the entry ``name`` (its ops become unsupported)."""
        spec = self._specs.pop(name)
        for cls in spec.modules:
            self._by_module.pop(cls, None)
            self._module_names.pop(cls.__name__, None)
        for fname, fn in spec.functions:
            self._by_function.pop(_key(fn), None)
            self._function_names.pop(_key(fn), None)
            self._functions.pop(fname, None)
        for method in spec.methods:
            self._by_method.pop(method, None)
        return spec

    def copy(self) -> "OpRegistry":
        return OpRegistry(self._specs.values())

    def specs(self) -> tuple[OpSpec, ...]:
        return tuple(self._specs.values())

    def __getitem__(self, name: str) -> OpSpec:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    # --- lookups ---------------------------------------------------------------
    def for_module(self, module: nn.Module | type) -> OpSpec | None:
        cls = module if isinstance(module, type) else type(module)
        return self._by_module.get(cls)

    def for_base(self, module: nn.Module) -> OpSpec | None:
        """The entry of the nearest registered class in ``module``'s MRO: for rebuilding a
        module whose class torch made on the fly (``ParametrizedLinear``) as its plain base."""
        for cls in type(module).__mro__:
            spec = self._by_module.get(cls)
            if spec is not None:
                return spec
        return None

    def for_function(self, fn: object) -> OpSpec | None:
        try:
            return self._by_function.get(_key(fn))
        except TypeError:  # an unhashable target
            return None

    def for_method(self, name: object) -> OpSpec | None:
        return self._by_method.get(name) if isinstance(name, str) else None

    def lookup(self, node: fx.Node, modules: dict[str, nn.Module]) -> OpSpec | None:
        """The entry for ``node`` (a call_module, call_function or call_method), or None."""
        if node.op == "call_module":
            return self.for_module(modules[str(node.target)])
        if node.op == "call_function":
            return self.for_function(node.target)
        if node.op == "call_method":
            return self.for_method(node.target)
        return None

    def has_role(self, module: nn.Module | type, *roles: Role) -> bool:
        spec = self.for_module(module)
        return spec is not None and spec.role in roles

    def function_name(self, fn: object) -> str | None:
        """The name a registered function is saved as, or None."""
        try:
            return self._function_names.get(_key(fn))
        except TypeError:
            return None

    def function(self, name: str) -> Callable | None:
        """The registered function saved as ``name``, or None."""
        return self._functions.get(name)

    def module_type(self, type_name: str) -> tuple[type[nn.Module], OpSpec] | None:
        """The registered, saveable module type saved as ``type_name``, with its entry."""
        cls = self._module_names.get(type_name)
        if cls is None:
            return None
        spec = self._by_module[cls]
        return (cls, spec) if spec.save is not None else None

    def saveable_function(self, name: str) -> bool:
        fn = self._functions.get(name)
        return fn is not None and self._by_function[_key(fn)].role is not Role.DROP

    def saveable_method(self, name: str) -> bool:
        spec = self._by_method.get(name)
        return spec is not None and spec.role is not Role.DROP

    def require(self, node: fx.Node, modules: dict[str, nn.Module]) -> OpSpec:
        """The entry for ``node``, or a one-line ``UsageError`` naming it."""
        spec = self.lookup(node, modules)
        if spec is None:
            raise UsageError(f"unsupported op {describe(node, modules)}: it is not in the op registry (annsnn.ops); register it with OpRegistry.register")
        return spec


def _key(fn: object) -> object:
    return fn


def describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """``name (Type)`` of a node, as error messages name it."""
    if node.op == "call_module":
        return f"{node.target} ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_function":
        return f"{node.name} ({getattr(node.target, '__name__', str(node.target))})"
    return f"{node.name} (.{node.target}())"


# ---------------------------------------------------------------------------
# rule helpers


def run_op(op: Callable, args: tuple, kwargs: dict) -> Any:
    """Fan-out rule of an op that moves values: the op itself on spike-count maps."""
    return op(*args, **kwargs)


def _first_tensor(op: Callable, args: tuple, kwargs: dict) -> Any:
    """Fan-out rule of a multiplication by a constant: every spike still reaches its target once."""
    return next(a for a in args if isinstance(a, Tensor))


def _mean_as_sum(op: Callable, args: tuple, kwargs: dict) -> Any:
    """Fan-out rule of a mean: a sum (each spike reaches the output once)."""
    return torch.sum(*args, **kwargs)


def _module_rule(fn: Callable[[nn.Module, Tensor], Tensor]) -> FanoutFn:
    def rule(op: Callable, args: tuple, kwargs: dict) -> Any:
        return fn(op, args[0])  # type: ignore[arg-type]

    rule.__name__ = fn.__name__
    rule.__doc__ = fn.__doc__
    return rule


def move_scale(ctx: "_Context", node: fx.Node) -> None:
    """Conversion rule of an op that moves values: its scale is the op run on the scales."""
    from .convert import _h_commute

    _h_commute(ctx, node)


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

    def load(config: dict, state: dict, prefix: str, registry: "OpRegistry") -> nn.Module:
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


def _config_io(cls: type[nn.Module], save: SaveFn) -> tuple[SaveFn, LoadFn]:
    """Save with ``save``; load as ``cls(**config)``, lists as tuples (format version 1)."""

    def load(config: dict, state: dict, prefix: str, registry: "OpRegistry") -> nn.Module:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()})

    return save, load


def _conv_config(m: nn.Module) -> dict:
    return {
        "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": list(m.kernel_size),
        "stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None, "padding_mode": m.padding_mode,
    }


def _pool_config(m: nn.Module) -> dict:
    keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "divisor_override", "output_size")
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys if hasattr(m, k) for v in [getattr(m, k)]}


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


# --- ReLU forms ------------------------------------------------------------------


def _relu(node: fx.Node, module: nn.Module | None) -> ReluForm:
    return ReluForm(None)


def _relu6(node: fx.Node, module: nn.Module | None) -> ReluForm:
    return ReluForm(6.0)


def _relu_clip(node: fx.Node, module: nn.Module | None) -> ReluForm:
    return ReluForm(module.ceiling)  # type: ignore[union-attr]


def _hardtanh(node: fx.Node, module: nn.Module | None) -> ReluForm | None:
    """``hardtanh(x, 0, a)`` is ``clamp(x, 0, a)``; any other lower bound is not ReLU-like."""
    if module is not None:
        lo, hi = module.min_val, module.max_val
    else:
        lo, hi = _arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)
    return ReluForm(float(hi)) if float(lo) == 0.0 else None


def _clamp(node: fx.Node, module: nn.Module | None) -> ReluForm | None:
    """``clamp(x, min=0[, max=a])`` with constant bounds."""
    lo, hi = _arg(node, 1, "min", None), _arg(node, 2, "max", None)
    if lo is not None and not isinstance(lo, fx.Node) and float(lo) == 0.0 and not isinstance(hi, fx.Node):
        return ReluForm(None if hi is None else float(hi))
    return None


def _stochastic_depth_in_eval(node: fx.Node) -> bool:
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


def _lower_adaptive_avg_pool2d(node: fx.Node) -> tuple[nn.Module, fx.Node]:
    a = _adaptive_avg_pool2d_args(*node.args, **node.kwargs)
    return _lowered(node, a, nn.AdaptiveAvgPool2d(a["output_size"]))


def _lower_avg_pool2d(node: fx.Node) -> tuple[nn.Module, fx.Node]:
    a = _avg_pool2d_args(*node.args, **node.kwargs)
    return _lowered(node, a, nn.AvgPool2d(a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"], a["count_include_pad"], a["divisor_override"]))


def _lower_max_pool2d(node: fx.Node) -> tuple[nn.Module, fx.Node]:
    a = _max_pool2d_args(*node.args, **node.kwargs)
    if a["return_indices"]:
        raise UsageError(f"unsupported op {node.name}: max_pool2d with return_indices")
    return _lowered(node, a, nn.MaxPool2d(a["kernel_size"], a["stride"], a["padding"], a["dilation"], ceil_mode=a["ceil_mode"]))


# ---------------------------------------------------------------------------
# the built-in entries


def _bias_flag(m: nn.Module) -> dict:
    return {"bias": getattr(m, "bias", None) is not None}


def _mha_extra(m: nn.Module) -> dict:
    return {"bias": m.in_proj_bias is not None, "add_bias_kv": m.bias_k is not None}


def _builtin_specs() -> list[OpSpec]:
    import importlib

    cv = importlib.import_module(".convert", __package__)  # the package re-exports a function named convert
    ct = importlib.import_module(".counting", __package__)
    from .analog import AnalogOp
    from .layers import IFNeurons, InputEncoder, Normalize, ReLUClip, Rescale, SpikingMaxPool2d

    specs: list[OpSpec] = []
    add = specs.append

    # --- weight layers: W' = W s_in / s_out, b' = b / s_out (Rueckauer et al. 2017)
    for cls, save, fanout in (
        (nn.Conv1d, _conv_config, ct._conv_structure),
        (nn.Conv2d, _conv_config, ct._conv_structure),
        (nn.Linear, lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None}, ct._linear_structure),
    ):
        s, lo = _config_io(cls, save)
        add(OpSpec(cls.__name__, Role.WEIGHT, modules=(cls,), convert=cv._h_weight, demand=Demand.ABSORB,
                   fanout=_module_rule(fanout), macs=ct.dense_macs, save=s, load=lo))

    # --- ReLU-like activations: canonicalization makes each a ReLUClip, conversion IF neurons
    s, lo = _config_io(ReLUClip, lambda m: m.config())
    add(OpSpec("ReLUClip", Role.NEURON, modules=(ReLUClip,), relu=_relu_clip, convert=cv._h_neuron, sink=True, save=s, load=lo))
    add(OpSpec("ReLU", Role.NEURON, modules=(nn.ReLU,),
               functions=(("torch.relu", torch.relu), ("F.relu", F.relu), ("torch.relu_", torch.relu_), ("F.relu_", F.relu_)),
               methods=("relu", "relu_"), relu=_relu))
    add(OpSpec("ReLU6", Role.NEURON, modules=(nn.ReLU6,), functions=(("F.relu6", F.relu6),), relu=_relu6))
    s, lo = constructor_io(nn.Hardtanh, ("min_val", "max_val", "inplace"))
    add(OpSpec("Hardtanh", Role.NEURON, modules=(nn.Hardtanh,), functions=(("F.hardtanh", F.hardtanh),), relu=_hardtanh,
               activation=True, analog=AnalogUse.NONLINEAR, save=s, load=lo))
    add(OpSpec("clamp", Role.NEURON, functions=(("torch.clamp", torch.clamp), ("torch.clip", torch.clip)),
               methods=("clamp", "clamp_", "clip", "clip_"), relu=_clamp))

    # --- identities in eval
    add(OpSpec("Dropout", Role.DROP, modules=(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout),
               functions=(("F.dropout", F.dropout), ("F.dropout1d", F.dropout1d), ("F.dropout2d", F.dropout2d),
                          ("F.dropout3d", F.dropout3d), ("F.alpha_dropout", F.alpha_dropout), ("torch.dropout", torch.dropout))))
    add(OpSpec("Identity", Role.DROP, modules=(nn.Identity,)))
    try:
        from torchvision.ops import stochastic_depth
    except Exception:  # pragma: no cover - torchvision is optional here
        stochastic_depth = None
    if stochastic_depth is not None:
        add(OpSpec("stochastic_depth", Role.DROP, functions=(("torchvision.ops.stochastic_depth", stochastic_depth),), when=_stochastic_depth_in_eval))

    # --- pooling: pool(s * x) = s * pool(x) for a per-channel s
    s, lo = _config_io(nn.AvgPool1d, _pool_config)
    add(OpSpec("AvgPool1d", Role.POOL, modules=(nn.AvgPool1d,), convert=cv._h_commute, demand=Demand.CHANNEL,
               fanout=_module_rule(ct._avgpool1d_structure), save=s, load=lo))
    s, lo = _config_io(nn.AvgPool2d, _pool_config)
    add(OpSpec("AvgPool2d", Role.POOL, modules=(nn.AvgPool2d,), functions=(("F.avg_pool2d", F.avg_pool2d),), convert=cv._h_commute,
               demand=Demand.CHANNEL, fanout=_module_rule(ct._avgpool2d_structure), save=s, load=lo, lower=_lower_avg_pool2d))
    s, lo = _config_io(nn.AdaptiveAvgPool1d, _pool_config)
    add(OpSpec("AdaptiveAvgPool1d", Role.POOL, modules=(nn.AdaptiveAvgPool1d,), convert=cv._h_commute, demand=Demand.CHANNEL,
               fanout=_module_rule(ct._adaptive_avgpool_structure), save=s, load=lo))
    s, lo = _config_io(nn.AdaptiveAvgPool2d, _pool_config)
    add(OpSpec("AdaptiveAvgPool2d", Role.POOL, modules=(nn.AdaptiveAvgPool2d,), functions=(("F.adaptive_avg_pool2d", F.adaptive_avg_pool2d),),
               convert=cv._h_commute, demand=Demand.CHANNEL, fanout=_module_rule(ct._adaptive_avgpool_structure), save=s, load=lo,
               lower=_lower_adaptive_avg_pool2d))
    s, lo = _config_io(nn.MaxPool2d, _pool_config)
    add(OpSpec("MaxPool2d", Role.POOL, modules=(nn.MaxPool2d,), functions=(("F.max_pool2d", F.max_pool2d),), convert=cv._h_maxpool,
               demand=Demand.CHANNEL, save=s, load=lo, lower=_lower_max_pool2d))

    # --- ops that move, copy or zero-pad values: the scale is the op run on the scales
    s, lo = _config_io(nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim})
    add(OpSpec("Flatten", Role.MOVE, modules=(nn.Flatten,), convert=cv._h_commute, demand=Demand.SCALAR, copies_spikes=True,
               fanout=run_op, save=s, load=lo))
    moves: list[tuple[str, tuple[tuple[str, Callable], ...], tuple[str, ...], Demand]] = [
        ("flatten", (("torch.flatten", torch.flatten),), ("flatten",), Demand.SCALAR),
        ("reshape", (("torch.reshape", torch.reshape),), ("reshape", "view"), Demand.SCALAR),
        ("getitem", (("operator.getitem", operator.getitem),), (), Demand.STOP),
        ("pad", (("F.pad", F.pad),), (), Demand.STOP),
        ("cat", (("torch.cat", torch.cat),), (), Demand.STOP),
        ("squeeze", (("torch.squeeze", torch.squeeze),), ("squeeze",), Demand.STOP),
        ("unsqueeze", (("torch.unsqueeze", torch.unsqueeze),), ("unsqueeze",), Demand.STOP),
        ("transpose", (("torch.transpose", torch.transpose),), ("transpose",), Demand.STOP),
        ("permute", (("torch.permute", torch.permute),), ("permute",), Demand.STOP),
        ("swapaxes", (("torch.swapaxes", torch.swapaxes),), ("swapaxes",), Demand.STOP),
        ("movedim", (("torch.movedim", torch.movedim),), ("movedim",), Demand.STOP),
        ("contiguous", (), ("contiguous",), Demand.STOP),
        ("expand", (), ("expand",), Demand.STOP),
        ("clone", (), ("clone",), Demand.STOP),
    ]
    for name, functions, methods, demand in moves:
        add(OpSpec(name, Role.MOVE, functions=functions, methods=methods, convert=cv._h_commute, demand=demand,
                   copies_spikes=True, analog=AnalogUse.LINEAR, fanout=run_op))
    for name in ("chunk", "split", "unbind", "tensor_split"):
        add(OpSpec(name, Role.SPLIT, functions=((f"torch.{name}", getattr(torch, name)),), methods=(name,), convert=cv._h_split, fanout=run_op))

    # --- arithmetic
    add(OpSpec("add", Role.ADD, functions=(("operator.add", operator.add), ("operator.iadd", operator.iadd), ("torch.add", torch.add)),
               methods=("add", "add_"), convert=cv._h_add, demand=Demand.OPERANDS, analog=AnalogUse.LINEAR, fanout=run_op))
    add(OpSpec("mul", Role.SCALE, functions=(("operator.mul", operator.mul), ("operator.imul", operator.imul), ("torch.mul", torch.mul)),
               methods=("mul", "mul_"), convert=cv._h_scalar_mul, analog=AnalogUse.PRODUCT, fanout=_first_tensor))
    add(OpSpec("div", Role.SCALE, functions=(("operator.truediv", operator.truediv), ("torch.div", torch.div)),
               methods=("div", "div_"), convert=cv._h_scalar_div, analog=AnalogUse.PRODUCT, fanout=_first_tensor))
    add(OpSpec("mean", Role.MEAN, functions=(("torch.mean", torch.mean),), methods=("mean",), convert=cv._h_mean, fanout=_mean_as_sum))
    add(OpSpec("size", Role.SIZE, functions=(("builtins.getattr", getattr),), methods=("size", "dim"), convert=cv._h_size, fanout=run_op))

    # --- annsnn's own layers
    add(OpSpec("Normalize", Role.INPUT, modules=(Normalize,), convert=cv._h_normalize,
               fanout=_module_rule(ct._identity_structure),  # Poisson spikes into (s - mean)/std: one event per spike
               save=lambda m: {}, load=lambda c, st, p, r: Normalize(st[p + "mean"], st[p + "std"])))
    add(OpSpec("IFNeurons", Role.SNN, modules=(IFNeurons,), sink=True, save=lambda m: m.config(), load=_load_neurons))
    s, lo = _config_io(SpikingMaxPool2d, lambda m: m.config())
    add(OpSpec("SpikingMaxPool2d", Role.SNN, modules=(SpikingMaxPool2d,), copies_spikes=True,
               fanout=_module_rule(ct._pool_windows_structure), save=s, load=lo))
    add(OpSpec("Rescale", Role.SNN, modules=(Rescale,), fanout=_module_rule(ct._identity_structure),
               save=lambda m: {}, load=lambda c, st, p, r: Rescale(st[p + "factor"])))
    add(OpSpec("InputEncoder", Role.SNN, modules=(InputEncoder,), save=lambda m: {}, load=lambda c, st, p, r: InputEncoder()))
    add(OpSpec("AnalogOp", Role.SNN, modules=(AnalogOp,), sink=True, save=lambda m: m.config(),
               load=lambda c, st, p, r: AnalogOp.from_config(c, st, p, registry=r)))

    # --- ops with no spiking form: analog under --hybrid (annsnn.analog)
    nonlinear: list[tuple[type[nn.Module] | None, str, tuple[str, ...], tuple[tuple[str, Callable], ...], tuple[str, ...], bool]] = [
        # (module, entry name, constructor fields, functions, methods, activation)
        (nn.GELU, "GELU", ("approximate",), (("F.gelu", F.gelu),), (), True),
        (nn.SiLU, "SiLU", ("inplace",), (("F.silu", F.silu),), (), True),
        (nn.Hardswish, "Hardswish", ("inplace",), (("F.hardswish", F.hardswish),), (), True),
        (nn.Hardsigmoid, "Hardsigmoid", ("inplace",), (("F.hardsigmoid", F.hardsigmoid),), (), True),
        (nn.Mish, "Mish", ("inplace",), (("F.mish", F.mish),), (), True),
        (nn.LeakyReLU, "LeakyReLU", ("negative_slope", "inplace"), (("F.leaky_relu", F.leaky_relu),), (), True),
        (nn.ELU, "ELU", ("alpha", "inplace"), (("F.elu", F.elu),), (), True),
        (nn.CELU, "CELU", ("alpha", "inplace"), (("F.celu", F.celu),), (), True),
        (nn.SELU, "SELU", ("inplace",), (("F.selu", F.selu),), (), True),
        (nn.Sigmoid, "Sigmoid", (), (("F.sigmoid", F.sigmoid), ("torch.sigmoid", torch.sigmoid)), ("sigmoid", "sigmoid_"), True),
        (nn.Tanh, "Tanh", (), (("F.tanh", F.tanh), ("torch.tanh", torch.tanh)), ("tanh", "tanh_"), True),
        (nn.Softsign, "Softsign", (), (("F.softsign", F.softsign),), (), True),
        (nn.LogSigmoid, "LogSigmoid", (), (("F.logsigmoid", F.logsigmoid),), (), True),
        (nn.Tanhshrink, "Tanhshrink", (), (), (), True),
        (nn.Softplus, "Softplus", ("beta", "threshold"), (("F.softplus", F.softplus),), (), True),
        (nn.PReLU, "PReLU", ("num_parameters",), (("F.prelu", F.prelu),), (), True),
        (nn.RReLU, "RReLU", ("lower", "upper", "inplace"), (), (), True),
        (nn.GLU, "GLU", ("dim",), (("F.glu", F.glu),), (), True),
        (nn.Hardshrink, "Hardshrink", ("lambd",), (), (), True),
        (nn.Softshrink, "Softshrink", ("lambd",), (), (), True),
        (nn.Threshold, "Threshold", ("threshold", "value", "inplace"), (), (), True),
        (nn.Softmax, "Softmax", ("dim",), (("F.softmax", F.softmax), ("torch.softmax", torch.softmax)), ("softmax",), False),
        (nn.LogSoftmax, "LogSoftmax", ("dim",), (("F.log_softmax", F.log_softmax), ("torch.log_softmax", torch.log_softmax)), ("log_softmax",), False),
        (nn.Softmax2d, "Softmax2d", (), (), (), False),
        (nn.GroupNorm, "GroupNorm", ("num_groups", "num_channels", "eps", "affine"), (("F.group_norm", F.group_norm),), (), False),
        (nn.LocalResponseNorm, "LocalResponseNorm", ("size", "alpha", "beta", "k"), (), (), False),
        (None, "normalize", (), (("F.normalize", F.normalize),), (), False),
        (None, "scaled_dot_product_attention", (), (("F.scaled_dot_product_attention", F.scaled_dot_product_attention),), (), False),
        (None, "exp", (), (("torch.exp", torch.exp),), ("exp",), False),
        (None, "sqrt", (), (("torch.sqrt", torch.sqrt),), ("sqrt",), False),
        (None, "rsqrt", (), (("torch.rsqrt", torch.rsqrt),), ("rsqrt",), False),
        (None, "erf", (), (("torch.erf", torch.erf),), (), False),
        (None, "pow", (), (("operator.pow", operator.pow), ("torch.pow", torch.pow)), ("pow",), False),
    ]
    for cls, name, fields, functions, methods, activation in nonlinear:
        s, lo = constructor_io(cls, fields) if cls is not None else (None, None)  # type: ignore[assignment]
        add(OpSpec(name, Role.ANALOG, modules=(cls,) if cls is not None else (), functions=functions, methods=methods,
                   activation=activation, analog=AnalogUse.NONLINEAR, sink=cls is not None and activation, save=s, load=lo))
    s, lo = constructor_io(nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine"), _bias_flag, ("bias",))
    add(OpSpec("LayerNorm", Role.ANALOG, modules=(nn.LayerNorm,), functions=(("F.layer_norm", F.layer_norm),),
               analog=AnalogUse.NONLINEAR, save=s, load=lo))
    s, lo = constructor_io(nn.MultiheadAttention, ("embed_dim", "num_heads", "dropout", "add_zero_attn", "kdim", "vdim", "batch_first"),
                           _mha_extra, ("bias", "add_bias_kv"))
    add(OpSpec("MultiheadAttention", Role.ANALOG, modules=(nn.MultiheadAttention,), analog=AnalogUse.NONLINEAR, save=s, load=lo))
    for name, functions, methods in (
        ("matmul", (("operator.matmul", operator.matmul), ("torch.matmul", torch.matmul)), ("matmul",)),
        ("bmm", (("torch.bmm", torch.bmm),), ("bmm",)),
        ("mm", (("torch.mm", torch.mm),), ()),
        ("einsum", (("torch.einsum", torch.einsum),), ()),
    ):
        add(OpSpec(name, Role.ANALOG, functions=functions, methods=methods, analog=AnalogUse.PRODUCT))
    for name, functions, methods in (
        ("sub", (("operator.sub", operator.sub), ("torch.sub", torch.sub)), ("sub", "sub_")),
        ("neg", (("operator.neg", operator.neg),), ("neg",)),
        ("stack", (("torch.stack", torch.stack),), ()),
        ("roll", (("torch.roll", torch.roll),), ("roll",)),
        ("interpolate", (("F.interpolate", F.interpolate),), ()),
        ("linear", (("F.linear", F.linear),), ()),
        ("conv2d", (("F.conv2d", F.conv2d),), ()),
        ("expand_as", (), ("expand_as",)),
        ("repeat", (), ("repeat",)),
    ):
        add(OpSpec(name, Role.ANALOG, functions=functions, methods=methods, analog=AnalogUse.LINEAR))
    try:  # torchvision's fx-wrapped helpers (Swin's window attention and patch-merging pad)
        from torchvision.models import swin_transformer as swin
    except Exception:  # pragma: no cover - torchvision is optional here
        swin = None
    for attr in ("shifted_window_attention", "_get_relative_position_bias", "_patch_merging_pad"):
        fn = getattr(swin, attr, None) if swin is not None else None
        if fn is not None:
            add(OpSpec(f"swin.{attr}", Role.ANALOG, functions=((f"torchvision.swin.{attr}", fn),), analog=AnalogUse.NONLINEAR))
    return specs


def _load_neurons(config: dict, state: dict, prefix: str, registry: OpRegistry) -> nn.Module:
    from .layers import IFNeurons

    if bool(config.get("bias_steps", 0)) != (prefix + "step_bias" in state):  # the per-step bias is a tensor of the state
        raise UsageError("SNN file's neuron bias does not match its graph (corrupt file)")
    return IFNeurons(float(config.get("v_init", 0.0)), step_bias=state.get(prefix + "step_bias"), max_spikes=int(config.get("max_spikes", 1)))


_BUILTIN: list[OpRegistry] = []  # built once on first use (its rules live in convert/counting), never handed out


def default_registry() -> OpRegistry:
    """A fresh copy of annsnn's built-in entries; extend it with :meth:`OpRegistry.register`."""
    if not _BUILTIN:
        _BUILTIN.append(OpRegistry(_builtin_specs()))
    return _BUILTIN[0].copy()
