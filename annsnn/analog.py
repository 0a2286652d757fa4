"""Analog ops of a hybrid SNN, and the one registry of the ops that may stay analog.

An op with no spiking form (GELU, SiLU, Tanh, a squeeze-excitation multiply ``x * gate``,
LayerNorm, attention's matmul and softmax, ...) stays *analog* under ``--hybrid``. It must
not be applied to each step's input current: ``f`` of a per-step current is not ``f`` of the
rate, and a Tanh net would never converge. :class:`AnalogOp` instead computes on the running
rate estimate of each input ``i``,

    r_t^i = s_i * (x_1^i + ... + x_t^i) / t          (s_i: the input's scale, ANN units)

and emits per step the increment that makes its cumulative output ``t * f(r_t)``:

    y_t = t * f(r_t) - (t - 1) * f(r_{t-1}).

Downstream layers are linear in their input and accumulate ``y``, so the network's rate is
``f(r_t)``; with IF rates converging like O(1/t) (Rueckauer et al. 2017, Front. Neurosci.,
doi:10.3389/fnins.2017.00682), an L-Lipschitz ``f`` converges like ``L * O(1/t)``. This is
close to the accumulate-then-difference operators of converted spiking transformers
(SpikeZIP-TF, You et al., ICML 2024, arXiv:2406.03470). The output's scale is 1 (ANN units).

Sums and the previous cumulative output are kept in float64 so that the differences stay
exact to float32 precision at large t. An op whose inputs are all constant over time (static
under ``direct`` encoding) is evaluated once per batch by :class:`StaticAnalog` instead.

**Registry.** :data:`ANALOG_MODULES` (module type -> :class:`AnalogModuleSpec`: how its
constructor arguments are read from an instance and rebuilt), :data:`ANALOG_FUNCTIONS` and
:data:`ANALOG_METHODS` (allowlisted names) are the only place an analog op is declared; the
converter, the counter and the SNN file all read them. :func:`register_analog_module` and
:func:`register_analog_function` extend them.

**Cost.** Per sample and step an analog op costs the multiply-accumulates torch's
``FlopCounterMode`` finds in ``f`` (matmul, bmm, linear, attention: flops / 2) plus one op per
output element (the elementwise evaluation), see :func:`analog_macs`.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .errors import UsageError
from .layers import TemporalModule

__all__ = [
    "AnalogOp",
    "StaticAnalog",
    "AnalogModuleSpec",
    "ANALOG_MODULES",
    "ANALOG_FUNCTIONS",
    "ANALOG_METHODS",
    "NONLINEAR_FUNCTIONS",
    "NONLINEAR_METHODS",
    "PRODUCT_FUNCTIONS",
    "PRODUCT_METHODS",
    "register_analog_module",
    "register_analog_function",
    "module_config",
    "build_module",
    "function_name",
    "analog_macs",
    "is_analog",
    "analog_call",
    "AnalogCall",
    "LINEAR_FUNCTIONS",
]


# ---------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class AnalogModuleSpec:
    """How an analog module type is saved and rebuilt: ``cls(**config)``, then its state_dict.

    ``fields`` are constructor arguments stored as attributes of the same name; ``extra``
    reads constructor arguments that are not (e.g. LayerNorm's ``bias``).
    """

    cls: type[nn.Module]
    fields: tuple[str, ...] = ()
    extra: Callable[[nn.Module], dict] | None = None
    extra_keys: tuple[str, ...] = ()


def _bias_flag(m: nn.Module) -> dict:
    return {"bias": getattr(m, "bias", None) is not None}


def _mha_extra(m: nn.Module) -> dict:
    return {"bias": m.in_proj_bias is not None, "add_bias_kv": m.bias_k is not None}


ANALOG_MODULES: dict[type[nn.Module], AnalogModuleSpec] = {}


def register_analog_module(spec: AnalogModuleSpec) -> None:
    """Declare a module type that may stay analog (and can be saved) in a hybrid SNN."""
    ANALOG_MODULES[spec.cls] = spec


for _spec in (
    AnalogModuleSpec(nn.GELU, ("approximate",)),
    AnalogModuleSpec(nn.SiLU, ("inplace",)),
    AnalogModuleSpec(nn.Hardswish, ("inplace",)),
    AnalogModuleSpec(nn.Hardsigmoid, ("inplace",)),
    AnalogModuleSpec(nn.Mish, ("inplace",)),
    AnalogModuleSpec(nn.LeakyReLU, ("negative_slope", "inplace")),
    AnalogModuleSpec(nn.ELU, ("alpha", "inplace")),
    AnalogModuleSpec(nn.CELU, ("alpha", "inplace")),
    AnalogModuleSpec(nn.SELU, ("inplace",)),
    AnalogModuleSpec(nn.Sigmoid),
    AnalogModuleSpec(nn.Tanh),
    AnalogModuleSpec(nn.Softsign),
    AnalogModuleSpec(nn.LogSigmoid),
    AnalogModuleSpec(nn.Tanhshrink),
    AnalogModuleSpec(nn.Softplus, ("beta", "threshold")),
    AnalogModuleSpec(nn.PReLU, ("num_parameters",)),
    AnalogModuleSpec(nn.RReLU, ("lower", "upper", "inplace")),
    AnalogModuleSpec(nn.GLU, ("dim",)),
    AnalogModuleSpec(nn.Hardshrink, ("lambd",)),
    AnalogModuleSpec(nn.Softshrink, ("lambd",)),
    AnalogModuleSpec(nn.Threshold, ("threshold", "value", "inplace")),
    AnalogModuleSpec(nn.Hardtanh, ("min_val", "max_val", "inplace")),
    AnalogModuleSpec(nn.Softmax, ("dim",)),
    AnalogModuleSpec(nn.LogSoftmax, ("dim",)),
    AnalogModuleSpec(nn.Softmax2d),
    AnalogModuleSpec(nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine"), _bias_flag, ("bias",)),
    AnalogModuleSpec(nn.GroupNorm, ("num_groups", "num_channels", "eps", "affine")),
    AnalogModuleSpec(nn.LocalResponseNorm, ("size", "alpha", "beta", "k")),
    AnalogModuleSpec(
        nn.MultiheadAttention,
        ("embed_dim", "num_heads", "dropout", "add_zero_attn", "kdim", "vdim", "batch_first"),
        _mha_extra,
        ("bias", "add_bias_kv"),
    ),
):
    register_analog_module(_spec)


def module_config(module: nn.Module) -> dict:
    """The JSON-ready constructor arguments of a registered analog module."""
    spec = ANALOG_MODULES.get(type(module))
    if spec is None:
        raise UsageError(f"cannot save layer type {type(module).__name__}: it is not a registered analog op")
    config = {name: getattr(module, name) for name in spec.fields}
    if spec.extra is not None:
        config.update(spec.extra(module))
    return {k: (list(v) if isinstance(v, (tuple, torch.Size)) else v) for k, v in config.items()}


def build_module(type_name: str, config: dict) -> nn.Module:
    """Rebuild a registered analog module from :func:`module_config` output (no code from the file)."""
    spec = next((s for cls, s in ANALOG_MODULES.items() if cls.__name__ == type_name), None)
    if spec is None:
        raise UsageError(f"SNN file names an unknown analog layer type {type_name!r}")
    if not set(config) <= set(spec.fields) | set(spec.extra_keys):
        raise UsageError(f"SNN file holds unknown arguments for {type_name}")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    if not all(isinstance(v, (bool, int, float, str, tuple, type(None))) for v in kwargs.values()):
        raise UsageError(f"SNN file holds a bad configuration for {type_name}")
    try:
        return spec.cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"SNN file holds a bad configuration for {type_name} ({exc})") from None


# Functions (by their saved name). NONLINEAR ones are analog wherever they appear in --hybrid;
# PRODUCT ones are analog when two of their operands vary over time (x * gate, q @ k);
# the rest are linear ops that become analog only when they touch a stored tensor
# (``x + pos_embedding``, ``class_token.expand(n, -1, -1)``, ``layer_scale * x``).
NONLINEAR_FUNCTIONS: dict[str, Callable] = {
    "F.gelu": F.gelu, "F.silu": F.silu, "F.hardswish": F.hardswish, "F.hardsigmoid": F.hardsigmoid,
    "F.leaky_relu": F.leaky_relu, "F.elu": F.elu, "F.selu": F.selu, "F.celu": F.celu,
    "F.softplus": F.softplus, "F.mish": F.mish, "F.prelu": F.prelu, "F.softsign": F.softsign,
    "F.glu": F.glu, "F.logsigmoid": F.logsigmoid, "F.sigmoid": F.sigmoid, "F.tanh": F.tanh,
    "torch.sigmoid": torch.sigmoid, "torch.tanh": torch.tanh, "F.hardtanh": F.hardtanh,
    "F.softmax": F.softmax, "F.log_softmax": F.log_softmax, "torch.softmax": torch.softmax,
    "torch.log_softmax": torch.log_softmax, "F.layer_norm": F.layer_norm, "F.group_norm": F.group_norm,
    "F.normalize": F.normalize, "F.scaled_dot_product_attention": F.scaled_dot_product_attention,
    "torch.exp": torch.exp, "torch.sqrt": torch.sqrt, "torch.rsqrt": torch.rsqrt, "torch.erf": torch.erf,
    "operator.pow": operator.pow, "torch.pow": torch.pow,
}
PRODUCT_FUNCTIONS: dict[str, Callable] = {
    "operator.mul": operator.mul, "operator.imul": operator.imul, "torch.mul": torch.mul,
    "operator.truediv": operator.truediv, "torch.div": torch.div, "operator.matmul": operator.matmul,
    "torch.matmul": torch.matmul, "torch.bmm": torch.bmm, "torch.mm": torch.mm, "torch.einsum": torch.einsum,
}
LINEAR_FUNCTIONS: dict[str, Callable] = {
    "operator.add": operator.add, "operator.iadd": operator.iadd, "torch.add": torch.add,
    "operator.sub": operator.sub, "torch.sub": torch.sub, "operator.neg": operator.neg,
    "torch.cat": torch.cat, "torch.stack": torch.stack, "torch.flatten": torch.flatten,
    "torch.reshape": torch.reshape, "torch.permute": torch.permute, "torch.transpose": torch.transpose,
    "torch.squeeze": torch.squeeze, "torch.unsqueeze": torch.unsqueeze, "operator.getitem": operator.getitem,
    "F.pad": F.pad, "F.linear": F.linear, "F.conv2d": F.conv2d, "torch.roll": torch.roll,
    "F.interpolate": F.interpolate, "torch.swapaxes": torch.swapaxes, "torch.movedim": torch.movedim,
}
ANALOG_FUNCTIONS: dict[str, Callable] = {**NONLINEAR_FUNCTIONS, **PRODUCT_FUNCTIONS, **LINEAR_FUNCTIONS}

NONLINEAR_METHODS = frozenset({"sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "log_softmax", "exp", "sqrt", "rsqrt", "pow"})
PRODUCT_METHODS = frozenset({"mul", "mul_", "div", "div_", "matmul", "bmm"})
ANALOG_METHODS = NONLINEAR_METHODS | PRODUCT_METHODS | frozenset({
    "add", "add_", "sub", "sub_", "expand", "expand_as", "repeat", "view", "reshape", "flatten", "permute",
    "transpose", "contiguous", "squeeze", "unsqueeze", "clone", "neg", "roll", "swapaxes", "movedim",
})


def register_analog_function(name: str, fn: Callable, *, nonlinear: bool = True) -> None:
    """Declare a function that may stay analog under ``name`` (the name it is saved as)."""
    ANALOG_FUNCTIONS[name] = fn
    if nonlinear:
        NONLINEAR_FUNCTIONS[name] = fn


def _register_torchvision() -> None:
    """torchvision's fx-wrapped helpers (Swin's window attention and patch-merging pad)."""
    try:
        from torchvision.models import swin_transformer as swin
    except Exception:  # pragma: no cover - torchvision is optional here
        return
    for attr in ("shifted_window_attention", "_get_relative_position_bias", "_patch_merging_pad"):
        fn = getattr(swin, attr, None)
        if fn is not None:
            register_analog_function(f"torchvision.swin.{attr}", fn)


_register_torchvision()


def function_name(fn: object) -> str | None:
    """The registry name of an analog function, or None."""
    for name, candidate in ANALOG_FUNCTIONS.items():
        if candidate is fn:
            return name
    return None


# ---------------------------------------------------------------------------
# the temporal module


def _encode(value: Any) -> Any:
    if isinstance(value, _Slot):
        return {"slot": [value.kind, value.index]}
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v) for k, v in value.items()}}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UsageError(f"cannot save an analog op argument of type {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if "slot" in value:
            kind, index = value["slot"]
            if kind not in ("input", "const") or not isinstance(index, int):
                raise UsageError("SNN file holds a bad analog op argument")
            return _Slot(kind, index)
        if "slice" in value:
            return slice(*[_decode(v) for v in value["slice"]])
        if "tuple" in value:
            return tuple(_decode(v) for v in value["tuple"])
        if "dict" in value:
            return {k: _decode(v) for k, v in value["dict"].items()}
        if "ellipsis" in value:
            return Ellipsis
        if "dtype" in value:
            dtype = getattr(torch, str(value["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise UsageError("SNN file names an unknown dtype")
            return dtype
        raise UsageError("SNN file holds an analog op argument annsnn cannot read")
    return value


@dataclass(frozen=True)
class _Slot:
    kind: str  # "input" (the forward's i-th argument) or "const" (the i-th stored tensor)
    index: int


class AnalogOp(TemporalModule):
    """An op kept analog, computed on the running rates of its time-varying inputs.

    ``op`` is a registered module (``nn.GELU``, ``nn.LayerNorm``, ...), or the registry name
    of a function or of a tensor method. ``template`` is ``(args, kwargs)`` of the original
    call with ``_Slot("input", i)`` for the forward's i-th argument and ``_Slot("const", j)``
    for stored tensors (a parameter used in ``forward``). ``streams[i]`` tells whether input i
    is a time-varying tensor (rate-estimated, multiplied by ``scale_i``) or a plain value such
    as a size. ``select`` picks an element of a tuple output.
    """

    def __init__(
        self,
        op: nn.Module | str,
        kind: str,
        template: tuple[tuple, dict],
        streams: list[bool],
        scales: list[Tensor | None],
        consts: list[Tensor],
        select: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("module", "function", "method"):
            raise ValueError(f"unknown analog op kind {kind!r}")
        if kind == "module":
            assert isinstance(op, nn.Module)
            if type(op) not in ANALOG_MODULES:
                raise UsageError(f"{type(op).__name__} is not a registered analog op")
            self.op = op
            self.target = type(op).__name__
        else:
            assert isinstance(op, str)
            if kind == "function" and op not in ANALOG_FUNCTIONS:
                raise UsageError(f"function {op!r} is not a registered analog op")
            if kind == "method" and op not in ANALOG_METHODS:
                raise UsageError(f"method {op!r} is not a registered analog op")
            self.target = op
        self.kind = kind
        self.template = template
        self.streams = [bool(s) for s in streams]
        self.unit = [s is None for s in scales]
        for i, s in enumerate(scales):
            self.register_buffer(f"scale_{i}", (s if s is not None else torch.ones(())).detach().to(torch.float32).clone())
        for j, c in enumerate(consts):
            self.register_buffer(f"const_{j}", c.detach().clone())
        self.n_consts = len(consts)
        self.select = select
        self._sums: list[Tensor | None] | None = None
        self._cum: Tensor | None = None
        self._t = 0

    # --- evaluation ------------------------------------------------------------
    def function(self) -> Callable:
        if self.kind == "module":
            return self.op
        if self.kind == "function":
            return ANALOG_FUNCTIONS[self.target]
        name = self.target
        return lambda obj, *a, **k: getattr(obj, name)(*a, **k)

    def evaluate(self, *values: Any) -> Tensor:
        """``f`` on values in the SNN's units (streams are multiplied by their scale)."""
        inputs = []
        for i, v in enumerate(values):
            if self.streams[i] and not self.unit[i]:
                v = v * getattr(self, f"scale_{i}")
            inputs.append(v)
        consts = [getattr(self, f"const_{j}") for j in range(self.n_consts)]

        def fill(a: Any) -> Any:
            if isinstance(a, _Slot):
                return inputs[a.index] if a.kind == "input" else consts[a.index]
            if isinstance(a, tuple):
                return tuple(fill(v) for v in a)
            if isinstance(a, list):
                return [fill(v) for v in a]
            if isinstance(a, dict):
                return {k: fill(v) for k, v in a.items()}
            if isinstance(a, slice):
                return slice(fill(a.start), fill(a.stop), fill(a.step))
            return a

        args, kwargs = fill(self.template[0]), fill(self.template[1])
        out = self.function()(*args, **kwargs)
        if self.select is not None:
            out = out[self.select]
        if not isinstance(out, Tensor):
            raise UsageError(f"analog op {self.target} did not return a tensor")
        return out

    # --- time ------------------------------------------------------------------
    def reset_state(self) -> None:
        self._sums = None
        self._cum = None
        self._t = 0

    def forward(self, *values: Any) -> Tensor:
        stream_ids = [i for i, s in enumerate(self.streams) if s]
        if not stream_ids:
            return self.evaluate(*values)  # constant per step: increments are f itself
        k = self.steps
        t = torch.arange(self._t + 1, self._t + k + 1, dtype=torch.float64, device=values[stream_ids[0]].device)
        if self._sums is None:
            self._sums = [None] * len(values)
        rates = list(values)
        for i in stream_ids:
            x = values[i]
            seq = x.reshape(k, -1, *x.shape[1:]).to(torch.float64)
            total = torch.cumsum(seq, 0)
            if self._sums[i] is not None:
                total = total + self._sums[i]
            self._sums[i] = total[-1]
            rates[i] = (total / t.view(-1, *([1] * (seq.dim() - 1)))).to(x.dtype).reshape(x.shape)
        out = self.evaluate(*rates)
        seq_out = out.reshape(k, -1, *out.shape[1:]).to(torch.float64)
        cum = seq_out * t.view(-1, *([1] * (seq_out.dim() - 1)))
        prev = self._cum if self._cum is not None else torch.zeros_like(cum[0])
        inc = torch.diff(cum, dim=0, prepend=prev.unsqueeze(0))
        self._cum = cum[-1]
        self._t += k
        return inc.to(out.dtype).reshape(out.shape)

    # --- saving ----------------------------------------------------------------
    def config(self) -> dict:
        config = {
            "kind": self.kind,
            "target": self.target,
            "template": _encode(self.template),
            "streams": self.streams,
            "unit": self.unit,
            "scale_shapes": [list(getattr(self, f"scale_{i}").shape) for i in range(len(self.streams))],
            "n_consts": self.n_consts,
            "select": self.select,
        }
        if self.kind == "module":
            config["module"] = module_config(self.op)
        return config

    @classmethod
    def from_config(cls, config: dict, state: dict[str, Tensor], prefix: str) -> "AnalogOp":
        """Rebuild from :meth:`config` and the state_dict (allowlisted ops only)."""
        kind, target = config.get("kind"), config.get("target")
        if kind == "module":
            op: nn.Module | str = build_module(str(target), config.get("module", {}))
        elif kind in ("function", "method"):
            op = str(target)
        else:
            raise UsageError("SNN file holds an analog op of unknown kind")
        template = _decode(config["template"])
        if not (isinstance(template, tuple) and len(template) == 2):
            raise UsageError("SNN file holds a bad analog op")
        streams = [bool(s) for s in config["streams"]]
        scales = [None if unit else state[f"{prefix}scale_{i}"] for i, unit in enumerate(config["unit"])]
        consts = [state[f"{prefix}const_{j}"] for j in range(int(config["n_consts"]))]
        select = config.get("select")
        if select is not None and not isinstance(select, int):
            raise UsageError("SNN file holds a bad analog op")
        return cls(op, str(kind), (tuple(template[0]), dict(template[1])), streams, scales, consts, select)

    def extra_repr(self) -> str:
        return f"{self.kind} {self.target}, rate-estimated inputs {sum(self.streams)}"


class StaticAnalog(nn.Module):
    """An :class:`AnalogOp` whose inputs are constant over time: ``f`` once per batch."""

    def __init__(self, analog: AnalogOp) -> None:
        super().__init__()
        self.analog = analog

    def forward(self, *values: Any) -> Tensor:
        return self.analog.evaluate(*values)


def analog_macs(module: AnalogOp, values: tuple) -> int:
    """Ops per sample and step of ``module`` on batch-1 ``values``:
    ``FlopCounterMode`` flops / 2 (matmul, bmm, linear, conv, attention) + output elements."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = module.evaluate(*values)
    return int(counter.get_total_flops()) // 2 + int(out[0].numel() if out.dim() > 0 else 1)


# ---------------------------------------------------------------------------
# classification and building from an fx node


def is_analog(node: fx.Node, modules: dict[str, nn.Module], streams: set[fx.Node], constants: set[fx.Node]) -> bool:
    """Whether ``node`` stays analog in a hybrid SNN.

    ``streams``: nodes carrying time-varying tensors; ``constants``: stored tensors (get_attr).
    """
    inputs = node.all_input_nodes
    n_streams = sum(1 for a in inputs if a in streams)
    touches_const = any(a in constants for a in inputs)
    if node.op == "call_module":
        return type(modules[str(node.target)]) in ANALOG_MODULES
    if node.op == "call_function":
        name = function_name(node.target)
        if name is None:
            return False
        if name in NONLINEAR_FUNCTIONS:
            return True
        if name in PRODUCT_FUNCTIONS and n_streams + (1 if touches_const else 0) >= 2:
            return True
        return touches_const
    if node.op == "call_method":
        target = str(node.target)
        if target not in ANALOG_METHODS:
            return False
        if target in NONLINEAR_METHODS:
            return True
        if target in PRODUCT_METHODS and n_streams + (1 if touches_const else 0) >= 2:
            return True
        return touches_const
    return False


@dataclass
class AnalogCall:
    """What :func:`analog_call` extracts from a node: the module's node args and its op."""

    inputs: list[fx.Node] = field(default_factory=list)
    consts: list[fx.Node] = field(default_factory=list)
    template: tuple[tuple, dict] = ((), {})
    op: nn.Module | str = ""
    kind: str = "function"


def analog_call(node: fx.Node, modules: dict[str, nn.Module], constants: set[fx.Node]) -> AnalogCall:
    """Split ``node``'s arguments into module inputs (each node once), stored tensors and a template."""
    call = AnalogCall()
    index: dict[fx.Node, _Slot] = {}

    def slot(a: fx.Node) -> _Slot:
        if a not in index:
            if a in constants:
                index[a] = _Slot("const", len(call.consts))
                call.consts.append(a)
            else:
                index[a] = _Slot("input", len(call.inputs))
                call.inputs.append(a)
        return index[a]

    args = fx.node.map_arg(node.args, slot)
    kwargs = fx.node.map_arg(node.kwargs, slot)
    call.template = (tuple(args), dict(kwargs))
    if node.op == "call_module":
        call.op, call.kind = modules[str(node.target)], "module"
    elif node.op == "call_function":
        name = function_name(node.target)
        if name is None:
            raise UsageError(f"unsupported op {node.name}: no analog form")
        call.op, call.kind = name, "function"
    else:
        call.op, call.kind = str(node.target), "method"
    return call


