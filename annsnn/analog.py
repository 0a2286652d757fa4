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

**Registry.** Which ops may stay analog, and when, is the ``analog`` field
(:class:`~annsnn.ops.AnalogUse`) of their entry in the op registry (:mod:`annsnn.ops`);
a module's constructor arguments are saved and rebuilt by the same entry. To keep a new op
analog, register an :class:`~annsnn.ops.OpSpec` with ``analog=AnalogUse.NONLINEAR``.

**Cost.** Per sample and step an analog op costs the multiply-accumulates torch's
``FlopCounterMode`` finds in ``f`` (matmul, bmm, linear, attention: flops / 2) plus one op per
output element (the elementwise evaluation), see :func:`analog_macs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, fx, nn

from .errors import UsageError
from .layers import TemporalModule
from .opspec import AnalogUse, OpRegistry

__all__ = [
    "AnalogOp",
    "StaticAnalog",
    "analog_macs",
    "is_analog",
    "analog_call",
    "AnalogCall",
]


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

    ``op`` is a module whose registry entry may stay analog (``nn.GELU``, ``nn.LayerNorm``,
    ...), or the saved name of such a function, or such a tensor method's name; ``registry``
    resolves and allowlists it. ``template`` is ``(args, kwargs)`` of the original
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
        *,
        registry: OpRegistry,
    ) -> None:
        super().__init__()
        if kind not in ("module", "function", "method"):
            raise ValueError(f"unknown analog op kind {kind!r}")
        self._fn: Callable | None = None
        self._save: Callable[[nn.Module], dict] | None = None
        if kind == "module":
            assert isinstance(op, nn.Module)
            spec = registry.for_module(op)
            if spec is None or spec.analog is None or spec.save is None:
                raise UsageError(f"{type(op).__name__} is not a registered analog op")
            self.op = op
            self.target = type(op).__name__
            self._save = spec.save
        else:
            assert isinstance(op, str)
            if kind == "function":
                self._fn = registry.function(op)
                spec = registry.for_function(self._fn) if self._fn is not None else None
                if spec is None or spec.analog is None:
                    raise UsageError(f"function {op!r} is not a registered analog op")
            else:
                spec = registry.for_method(op)
                if spec is None or spec.analog is None:
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
            assert self._fn is not None
            return self._fn
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
            assert self._save is not None
            config["module"] = self._save(self.op)
        return config

    @classmethod
    def from_config(cls, config: dict, state: dict[str, Tensor], prefix: str, *, registry: OpRegistry) -> "AnalogOp":
        """Rebuild from :meth:`config` and the state_dict: only ops whose entry in ``registry``
        may stay analog."""
        kind, target = config.get("kind"), config.get("target")
        if kind == "module":
            found = registry.module_type(str(target))
            if found is None or found[1].analog is None:
                raise UsageError(f"SNN file names an unknown analog layer type {target!r}")
            module_config = config.get("module", {})
            if not isinstance(module_config, dict):
                raise UsageError("SNN file holds a bad analog op")
            op: nn.Module | str = found[1].load(module_config, {}, prefix + "op.", registry)  # type: ignore[misc]
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
        return cls(op, str(kind), (tuple(template[0]), dict(template[1])), streams, scales, consts, select, registry=registry)

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


def is_analog(
    node: fx.Node, modules: dict[str, nn.Module], streams: set[fx.Node], constants: set[fx.Node], registry: OpRegistry
) -> bool:
    """Whether ``node`` stays analog in a hybrid SNN, by its entry's ``analog`` field:
    NONLINEAR always; PRODUCT when two operands vary over time (a stored tensor counts as
    one); LINEAR when it touches a stored tensor. A module is analog when its entry allows it.

    ``streams``: nodes carrying time-varying tensors; ``constants``: stored tensors (get_attr).
    """
    if node.op not in ("call_module", "call_function", "call_method"):
        return False
    spec = registry.lookup(node, modules)
    if spec is None or spec.analog is None:
        return False
    if node.op == "call_module":
        return spec.save is not None
    inputs = node.all_input_nodes
    n_streams = sum(1 for a in inputs if a in streams)
    touches_const = any(a in constants for a in inputs)
    if spec.analog is AnalogUse.NONLINEAR:
        return True
    if spec.analog is AnalogUse.PRODUCT and n_streams + (1 if touches_const else 0) >= 2:
        return True
    return touches_const


@dataclass
class AnalogCall:
    """What :func:`analog_call` extracts from a node: the module's node args and its op."""

    inputs: list[fx.Node] = field(default_factory=list)
    consts: list[fx.Node] = field(default_factory=list)
    template: tuple[tuple, dict] = ((), {})
    op: nn.Module | str = ""
    kind: str = "function"


def analog_call(node: fx.Node, modules: dict[str, nn.Module], constants: set[fx.Node], registry: OpRegistry) -> AnalogCall:
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
        name = registry.function_name(node.target)
        if name is None:
            raise UsageError(f"unsupported op {node.name}: no analog form")
        call.op, call.kind = name, "function"
    else:
        call.op, call.kind = str(node.target), "method"
    return call


