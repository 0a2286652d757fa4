"""The op registry's schema: what an entry says about an op, and the registry that holds entries.

This module holds no rules and no built-in entries (those are :mod:`annsnn.ops`, built from
the rule modules of :mod:`annsnn.rules`). Every other module reads an op's behaviour from
its :class:`OpSpec`, found in an :class:`OpRegistry` it is given.

An op is *handled* (it has an entry), or *unsupported*: conversion stops with a one-line
error naming the node, and counting lists it in ``SnnCounter.unsupported``; it is never
converted with scale 1 or counted as 0.

The design follows torch.ao's ``BackendConfig`` (one ``BackendPatternConfig`` per op,
passed to ``prepare_fx`` rather than read from a global) and fvcore's per-instance
``set_op_handle`` with ``unsupported_ops()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterable

from torch import fx, nn

from .errors import UsageError

__all__ = [
    "Role",
    "AnalogUse",
    "Demand",
    "ReluForm",
    "OpSpec",
    "OpRegistry",
    "Handler",
    "ReluFn",
    "FanoutFn",
    "MacsFn",
    "SaveFn",
    "LoadFn",
    "LowerFn",
    "FoldFn",
    "NirFn",
    "describe",
]


class Role(Enum):
    """What an op is to the converter."""

    WEIGHT = "weight"  # Conv/Linear: absorbs scales (W' = W s_in / s_out); ACs on spikes, MACs on analog input
    NEURON = "neuron"  # ReLU-like: becomes a ReLUClip, then IF neurons (``relu`` gives its ceiling)
    POOL = "pool"  # pooling: a per-channel scale passes through
    LAYOUT = "layout"  # moves, copies or zero-pads values (reshape, cat, pad, flatten, ...)
    ADD = "add"  # the sum of two tensors (a residual)
    CONSTANT_FACTOR = "constant_factor"  # multiplication or division by a constant number
    MEAN = "mean"  # mean over dimensions
    SPLIT = "split"  # chunk/split/unbind: a tuple of views
    SIZE = "size"  # reads sizes only (``x.size(1)``, ``x.dim()``, ``x.shape``)
    INPUT = "input"  # input normalization in front of the network
    ANALOG = "analog"  # no spiking form: stays analog under --hybrid, else refused
    DROP = "drop"  # the identity in eval (dropout, Identity): removed by canonicalization
    SPIKING = "spiking"  # annsnn's own SNN layers (IF neurons, spiking max-pool, rescale, encoder, analog op)
    # the names before issue 27, kept as aliases of the same members
    MOVE = "layout"
    SCALE = "constant_factor"
    SNN = "spiking"


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


Handler = Callable[[Any, fx.Node], None]  # conversion (scale) rule: (annsnn.rules.scale.ScaleContext, node) -> None
ReluFn = Callable[[fx.Node, "nn.Module | None"], "ReluForm | None"]  # None: not ReLU-like at this call
FanoutFn = Callable[[Callable, tuple, dict], Any]  # the op's structural form on spike-count maps
MacsFn = Callable[[nn.Module, tuple], int]  # dense MACs per sample of a weight layer on an input shape
SaveFn = Callable[[nn.Module], dict]  # JSON-ready constructor arguments
LoadFn = Callable[[dict, dict, str, "OpRegistry"], nn.Module]  # (config, state, prefix, registry) -> module
LowerFn = Callable[[fx.Node], "tuple[nn.Module, fx.Node]"]  # functional call -> (module, its input)
NirFn = Callable[["nn.Module | None", fx.Node, str], Any]  # (module, node, label) -> NIR node | reason | None
FoldFn = Callable[[nn.Module, nn.Module], "nn.Module | None"]  # (layer, BatchNorm after it) -> fused layer, None: cannot fold


@dataclass(frozen=True)
class OpSpec:
    """One op, all its aliases and every rule annsnn applies to it.

    ``name`` is the op's name in messages; a module type is saved under its class name.
    ``functions`` pairs each function with the name it is saved as (``"torch.flatten"``).

    * ``convert`` — the conversion (scale) rule, a handler of :mod:`annsnn.rules.scale`
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
    * ``lower`` — a functional form canonicalization replaces by the module;
    * ``nir`` — NIR export (:mod:`annsnn.rules.nir_export`): the op's NIR node, or the
      reason NIR cannot express it (None: the op has no NIR form);
    * ``fold_batchnorm`` — for ``Role.WEIGHT``: the layer with a BatchNorm that follows it
      folded in (eval statistics), or None where that BatchNorm cannot fold into it.
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
    fold_batchnorm: FoldFn | None = None
    nir: NirFn | None = None

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

    Build one with :func:`annsnn.ops.default_registry` and extend it with :meth:`register`;
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
        taken += [self._by_function.get(fn) for _, fn in spec.functions]
        taken += [self._by_method.get(m) for m in spec.methods]
        taken += [self._specs.get(spec.name)]
        taken += [self._by_module.get(self._module_names[c.__name__]) for c in spec.modules if c.__name__ in self._module_names]
        clashes = {s.name: s for s in taken if s is not None}
        clashes.update({self._by_function[self._functions[n]].name: self._by_function[self._functions[n]]
                        for n, fn in spec.functions if n in self._functions and self._functions[n] is not fn})
        if clashes and not replace:
            raise ValueError(f"op {spec.name!r} overlaps the registered op(s) {', '.join(sorted(clashes))}; pass replace=True")
        for old in clashes.values():
            self.unregister(old.name)
        for cls in spec.modules:
            self._by_module[cls] = spec
            self._module_names[cls.__name__] = cls
        for name, fn in spec.functions:
            self._by_function[fn] = spec
            self._function_names.setdefault(fn, name)  # an alias object keeps its first name
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
            self._by_function.pop(fn, None)
            self._function_names.pop(fn, None)
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
            return self._by_function.get(fn)
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
            return self._function_names.get(fn)
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
        return fn is not None and self._by_function[fn].role is not Role.DROP

    def saveable_method(self, name: str) -> bool:
        spec = self._by_method.get(name)
        return spec is not None and spec.role is not Role.DROP

    def require(self, node: fx.Node, modules: dict[str, nn.Module]) -> OpSpec:
        """The entry for ``node``, or a one-line ``UsageError`` naming it."""
        spec = self.lookup(node, modules)
        if spec is None:
            raise UsageError(f"unsupported op {describe(node, modules)}: it is not in the op registry (annsnn.ops); register it with OpRegistry.register")
        return spec


def describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """``name (Type)`` of a node, as error messages name it."""
    if node.op == "call_module":
        return f"{node.target} ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_function":
        return f"{node.name} ({getattr(node.target, '__name__', str(node.target))})"
    return f"{node.name} (.{node.target}())"

