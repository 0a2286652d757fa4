"""The op registry (annsnn.ops): every entry round-trips convert -> simulate -> count -> save
-> load, a user-registered op works end to end, an unregistered one is a one-line error.

Closed forms of the counts (direct encoding, T steps, batch B):

* a spike-fed ``head = Linear(n, 3)``: ``ACs(t) = 3 * m * sum(head input at t)``, where ``m``
  is the number of spike copies per unit of head input: 1 for ops that move or copy spikes,
  ``k`` for an average over ``k`` values, ``1 / c`` after a multiplication by ``c``;
* a weight layer ``body`` with a 1x1 kernel (or a Linear on the last dim) on spikes:
  ``ACs(t) = C_out * spikes(t)``;
* an analog-fed ``head``: ``MACs(t) = B * n * 3`` (dense, every step);
* an analog op: one AC per spike that reaches one of its inputs, ``routes * spikes(t)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annsnn.artifact import graph_to_spec, load_snn, save_snn
from annsnn.convert import ConversionOptions
from annsnn.counting import SnnCounter
from annsnn.errors import UsageError
from annsnn.layers import IFNeurons, InputEncoder, ReLUClip, Rescale, SpikingMaxPool2d
from annsnn.analog import AnalogOp
from annsnn.ops import OpSpec, Role, constructor_io, default_registry, move_scale, run_op
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate

T = 4
SHAPE = (2, 4, 4)


class Call(nn.Module):
    """``fn(self, x)``: fx traces into it, so the functions and methods it calls are graph nodes."""

    def __init__(self, fn: Callable, **tensors: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        for name, value in tensors.items():
            if value.is_floating_point():
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def forward(self, x):
        return self.fn(self, x)


class Probe(nn.Module):
    """x -> pre (1x1 conv, analog input) -> act (IF neurons) -> body -> flatten -> head."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.pre = nn.Conv2d(2, 2, 1)
        self.act = nn.ReLU()
        self.body = body
        with torch.no_grad():
            n = body(torch.rand(1, *SHAPE)).flatten(1).shape[1]
        self.head = nn.Linear(n, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.body(self.act(self.pre(x))), 1))


@dataclass(frozen=True)
class Example:
    body: Callable[[], nn.Module]
    check: str = "spikes"  # "spikes": spike-fed head; "weight": body is a weight layer; "analog"; "rescale"
    copies: float = 1.0  # spike copies per unit of head input (spike-fed head)
    routes: int = 1  # analog: how many inputs of analog ops the act's spikes reach
    normalization: tuple[list[float], list[float]] | None = None
    contains: type[nn.Module] | None = None  # the SNN holds a module of this type


def _conv(out: int = 2) -> nn.Conv2d:
    return nn.Conv2d(2, out, 1)


class Residual(nn.Module):
    """``x + act2(conv(x))``: two spike trains of different scales meet, so a Rescale is inserted."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.conv.weight.mul_(4.0)  # a much larger scale than the act's
        self.act2 = nn.ReLU()

    def forward(self, x):
        return x + self.act2(self.conv(x))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(4, 2, batch_first=True, bias=False)

    def forward(self, x):
        y = x.reshape(-1, 8, 4)
        return self.mha(y, y, y, need_weights=False)[0]


def _swin():
    from torchvision.models import swin_transformer as swin

    return swin


EXAMPLES: dict[str, Example] = {
    # weight layers: ACs = C_out * spikes
    "Conv1d": Example(lambda: nn.Sequential(nn.Flatten(2), nn.Conv1d(2, 3, 1)), "weight"),
    "Conv2d": Example(lambda: _conv(3), "weight"),
    "Linear": Example(lambda: nn.Linear(4, 3), "weight"),
    # ReLU-like: a second IF layer
    "ReLUClip": Example(lambda: nn.Sequential(_conv(), ReLUClip(1.5))),
    "ReLU": Example(lambda: nn.Sequential(_conv(), nn.ReLU())),
    "ReLU6": Example(lambda: nn.Sequential(_conv(), nn.ReLU6())),
    "Hardtanh": Example(lambda: nn.Sequential(_conv(), nn.Hardtanh(0.0, 2.0))),
    "clamp": Example(lambda: nn.Sequential(_conv(), Call(lambda m, x: torch.clamp(x, min=0.0, max=3.0)))),
    # identities in eval
    "Dropout": Example(lambda: nn.Dropout(0.3)),
    "Identity": Example(lambda: nn.Identity(), contains=InputEncoder),
    "stochastic_depth": Example(lambda: Call(lambda m, x: __import__("torchvision").ops.stochastic_depth(x, 0.5, "row", training=False))),
    # pooling: an average over k values is k spike copies per unit
    "AvgPool1d": Example(lambda: nn.Sequential(nn.Flatten(2), nn.AvgPool1d(2)), copies=2),
    "AvgPool2d": Example(lambda: nn.AvgPool2d(2), copies=4),
    "AdaptiveAvgPool1d": Example(lambda: nn.Sequential(nn.Flatten(2), nn.AdaptiveAvgPool1d(2)), copies=8),
    "AdaptiveAvgPool2d": Example(lambda: nn.AdaptiveAvgPool2d(1), copies=16),
    "MaxPool2d": Example(lambda: nn.MaxPool2d(2), contains=SpikingMaxPool2d),
    # ops that move or copy values
    "Flatten": Example(lambda: nn.Flatten(2)),
    "flatten": Example(lambda: Call(lambda m, x: torch.flatten(x, 2))),
    "reshape": Example(lambda: Call(lambda m, x: torch.reshape(x, (-1, 8, 4)).view(-1, 32))),
    "getitem": Example(lambda: Call(lambda m, x: x[:, :, 1:3])),
    "pad": Example(lambda: Call(lambda m, x: F.pad(x, (1, 1)))),
    "cat": Example(lambda: Call(lambda m, x: torch.cat([x, x[:, :1]], 1))),
    "squeeze": Example(lambda: Call(lambda m, x: torch.squeeze(x[:, :1], 1))),
    "unsqueeze": Example(lambda: Call(lambda m, x: torch.unsqueeze(x, 2))),
    "transpose": Example(lambda: Call(lambda m, x: torch.transpose(x, 2, 3))),
    "permute": Example(lambda: Call(lambda m, x: torch.permute(x, (0, 2, 3, 1)))),
    "swapaxes": Example(lambda: Call(lambda m, x: torch.swapaxes(x, 1, 3))),
    "movedim": Example(lambda: Call(lambda m, x: torch.movedim(x, 1, 3))),
    "contiguous": Example(lambda: Call(lambda m, x: x.transpose(2, 3).contiguous())),
    "expand": Example(lambda: Call(lambda m, x: x[:, :1].expand(-1, 3, -1, -1))),
    "clone": Example(lambda: Call(lambda m, x: x.clone())),
    "chunk": Example(lambda: Call(lambda m, x: x.chunk(2, 1)[1])),
    "split": Example(lambda: Call(lambda m, x: torch.split(x, 1, 1)[0])),
    "unbind": Example(lambda: Call(lambda m, x: torch.unbind(x, 1)[1])),
    "tensor_split": Example(lambda: Call(lambda m, x: torch.tensor_split(x, 2, dim=2)[1])),
    "size": Example(lambda: Call(lambda m, x: x.view(x.size(0), -1)[:, x.shape[1]:])),
    # arithmetic
    "add": Example(lambda: Call(lambda m, x: x + x[:, [1, 0]])),
    "mul": Example(lambda: Call(lambda m, x: 2.0 * x), copies=0.5),
    "div": Example(lambda: Call(lambda m, x: x / 4.0), copies=4),
    "mean": Example(lambda: Call(lambda m, x: x.mean(3)), copies=4),
    # annsnn's own layers
    "Normalize": Example(lambda: nn.Identity(), normalization=([0.5, 0.25], [0.5, 2.0])),
    "IFNeurons": Example(lambda: nn.Identity(), contains=IFNeurons),
    "InputEncoder": Example(lambda: nn.Identity(), contains=InputEncoder),
    "SpikingMaxPool2d": Example(lambda: nn.MaxPool2d(2, 1), contains=SpikingMaxPool2d),
    "Rescale": Example(Residual, "rescale", contains=Rescale),
    "AnalogOp": Example(lambda: nn.GELU(), "analog", contains=AnalogOp),
    # no spiking form: analog under --hybrid (non-default constructor arguments)
    "GELU": Example(lambda: nn.GELU(approximate="tanh"), "analog"),
    "SiLU": Example(lambda: nn.SiLU(), "analog"),
    "Hardswish": Example(lambda: nn.Hardswish(), "analog"),
    "Hardsigmoid": Example(lambda: nn.Hardsigmoid(), "analog"),
    "Mish": Example(lambda: nn.Mish(), "analog"),
    "LeakyReLU": Example(lambda: nn.LeakyReLU(0.3), "analog"),
    "ELU": Example(lambda: nn.ELU(0.7), "analog"),
    "CELU": Example(lambda: nn.CELU(0.8), "analog"),
    "SELU": Example(lambda: nn.SELU(), "analog"),
    "Sigmoid": Example(lambda: nn.Sigmoid(), "analog"),
    "Tanh": Example(lambda: nn.Tanh(), "analog"),
    "Softsign": Example(lambda: nn.Softsign(), "analog"),
    "LogSigmoid": Example(lambda: nn.LogSigmoid(), "analog"),
    "Tanhshrink": Example(lambda: nn.Tanhshrink(), "analog"),
    "Softplus": Example(lambda: nn.Softplus(2.0, 10.0), "analog"),
    "PReLU": Example(lambda: nn.PReLU(2, 0.1), "analog"),
    "RReLU": Example(lambda: nn.RReLU(0.1, 0.2), "analog"),
    "GLU": Example(lambda: nn.GLU(1), "analog"),
    "Hardshrink": Example(lambda: nn.Hardshrink(0.3), "analog"),
    "Softshrink": Example(lambda: nn.Softshrink(0.3), "analog"),
    "Threshold": Example(lambda: nn.Threshold(0.1, 0.5), "analog"),
    "Softmax": Example(lambda: nn.Softmax(1), "analog"),
    "LogSoftmax": Example(lambda: nn.LogSoftmax(2), "analog"),
    "Softmax2d": Example(lambda: nn.Softmax2d(), "analog"),
    "GroupNorm": Example(lambda: nn.GroupNorm(1, 2, eps=1e-3), "analog"),
    "LocalResponseNorm": Example(lambda: nn.LocalResponseNorm(2, alpha=1e-3), "analog"),
    "LayerNorm": Example(lambda: nn.LayerNorm(4, eps=1e-3, bias=False), "analog"),
    "MultiheadAttention": Example(Attention, "analog"),  # y, y, y: one input of the op
    "normalize": Example(lambda: Call(lambda m, x: F.normalize(x, dim=1)), "analog"),
    "scaled_dot_product_attention": Example(lambda: Call(lambda m, x: F.scaled_dot_product_attention(x, x, x)), "analog"),
    "exp": Example(lambda: Call(lambda m, x: torch.exp(x)), "analog"),
    "sqrt": Example(lambda: Call(lambda m, x: torch.sqrt(x)), "analog"),
    "rsqrt": Example(lambda: Call(lambda m, x: torch.rsqrt(x.exp())), "analog"),
    "erf": Example(lambda: Call(lambda m, x: torch.erf(x)), "analog"),
    "pow": Example(lambda: Call(lambda m, x: x ** 2), "analog"),
    "matmul": Example(lambda: Call(lambda m, x: x @ x.transpose(2, 3)), "analog", routes=2),
    "bmm": Example(lambda: Call(lambda m, x: torch.bmm(x.reshape(-1, 4, 4), x.reshape(-1, 4, 4).transpose(1, 2)).reshape(x.shape[0], -1)), "analog", routes=2),
    "mm": Example(lambda: Call(lambda m, x: torch.mm(x.reshape(-1, 4), m.w).reshape(x.shape[0], -1), w=torch.randn(4, 3)), "analog"),
    "einsum": Example(lambda: Call(lambda m, x: torch.einsum("bchw,bcwk->bchk", x, x.transpose(2, 3))), "analog", routes=2),
    "sub": Example(lambda: Call(lambda m, x: x - m.p, p=torch.rand(2, 4, 4)), "analog"),
    "neg": Example(lambda: Call(lambda m, x: x * (-m.p), p=torch.rand(2, 4, 4)), "analog"),
    "stack": Example(lambda: Call(lambda m, x: x * torch.stack([m.p, m.p]), p=torch.rand(4, 4)), "analog"),
    "roll": Example(lambda: Call(lambda m, x: x * torch.roll(m.p, 1, 0), p=torch.rand(2, 4, 4)), "analog"),
    "interpolate": Example(lambda: Call(lambda m, x: x * F.interpolate(m.p, size=(4, 4)), p=torch.rand(1, 2, 2, 2)), "analog"),
    "linear": Example(lambda: Call(lambda m, x: F.linear(x, m.w), w=torch.randn(3, 4)), "analog"),
    "conv2d": Example(lambda: Call(lambda m, x: F.conv2d(x, m.w), w=torch.randn(3, 2, 1, 1)), "analog"),
    "expand_as": Example(lambda: Call(lambda m, x: x * m.p.expand_as(x), p=torch.rand(1, 4, 4)), "analog", routes=2),  # x is an input of both
    "repeat": Example(lambda: Call(lambda m, x: x * m.p.repeat(2, 1, 1), p=torch.rand(1, 4, 4)), "analog"),
    "swin._patch_merging_pad": Example(lambda: Call(lambda m, x: _swin()._patch_merging_pad(x.permute(0, 2, 3, 1))), "analog"),
    "swin._get_relative_position_bias": Example(
        lambda: Call(lambda m, x: x * _swin()._get_relative_position_bias(m.table, m.index, [2, 2])[0, 0],
                     table=torch.rand(9, 1), index=torch.randint(0, 9, (16,))), "analog"),
    "swin.shifted_window_attention": Example(
        lambda: Call(lambda m, x: _swin().shifted_window_attention(x.permute(0, 2, 3, 1), m.qkv, m.proj, m.bias, [2, 2], 1, [0, 0], training=False),
                     qkv=torch.randn(6, 2) * 0.3, proj=torch.randn(2, 2) * 0.3, bias=torch.zeros(1, 1, 4, 4)), "analog"),
}


def _run(example: Example, tmp_path, registry=None):
    torch.manual_seed(0)
    model = Probe(example.body()).eval()
    x = torch.rand(3, *SHAPE)
    hybrid = example.check == "analog"
    options = ConversionOptions(hybrid=hybrid)
    kwargs = {} if registry is None else {"registry": registry}
    snn, report = ann_to_snn(model, [x], input_shape=SHAPE, options=options, normalization=example.normalization, **kwargs)
    counter = SnnCounter(snn, "direct", T)  # (its shape pass runs the graph once: hook after it)
    head_inputs: list[torch.Tensor] = []
    handle = snn.graph.get_submodule(_path(snn, "head")).register_forward_pre_hook(lambda mod, args: head_inputs.append(args[0].detach().clone()))
    counter.attach(x.shape[0])
    result = simulate(snn, x, [T], chunk=1, on_chunk=counter.on_chunk)
    counter.detach()
    handle.remove()
    path = tmp_path / "net.snn"
    save_snn(snn, path)
    loaded = load_snn(path, **kwargs)
    again = simulate(loaded, x, [T], chunk=1)
    return model, snn, counter, result, again, torch.stack(head_inputs), x


def _path(snn, name: str) -> str:
    """The SNN's module path of the probe's ``name`` (``model.`` in front with a normalization)."""
    return next(path for path, _ in snn.graph.named_modules() if path == name or path.endswith("." + name))


def _check_counts(name: str, example: Example, model: Probe, snn, counter: SnnCounter, head_inputs: torch.Tensor, batch: int) -> None:
    assert counter.unsupported == [], counter.unsupported
    spikes = counter.layers[_path(snn, "act")].spikes  # per step, batch total
    head = model.head
    if example.check == "spikes":
        per_step = head_inputs.reshape(T, -1).sum(1).double()
        expected = head.out_features * example.copies * per_step
        assert torch.allclose(counter.layers[_path(snn, "head")].synaptic_acs, expected, rtol=1e-9, atol=1e-6), name
        if example.contains is SpikingMaxPool2d:
            (pool,) = [n for n, m in snn.graph.named_modules() if isinstance(m, SpikingMaxPool2d)]
            windows = 1 if tuple(snn.graph.get_submodule(pool).stride) == (2, 2) else None
            if windows is not None:  # non-overlapping windows: one comparison per input spike
                assert torch.equal(counter.layers[pool].comparisons, spikes)
    elif example.check == "weight":
        layer = next(name for name, m in snn.graph.named_modules() if name.startswith("body") and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)))
        out = snn.graph.get_submodule(layer)
        c_out = out.out_channels if isinstance(out, (nn.Conv1d, nn.Conv2d)) else out.out_features
        assert torch.equal(counter.layers[layer].synaptic_acs, c_out * spikes)
        assert counter.layers["head"].macs.tolist() == [batch * head.in_features * head.out_features] * T
    elif example.check == "analog":
        into_analog = sum(layer.synaptic_acs for n, layer in counter.layers.items() if n.endswith("(analog input)"))
        assert torch.equal(into_analog, example.routes * spikes), name
        assert counter.layers["head"].macs.tolist() == [batch * head.in_features * head.out_features] * T
    elif example.check == "rescale":
        both = spikes + counter.layers["body.act2"].spikes
        assert torch.equal(counter.layers["head"].synaptic_acs, head.out_features * both)
        assert torch.equal(counter.layers["body.conv"].synaptic_acs, 2 * spikes)


def test_every_entry_has_an_example():
    assert set(EXAMPLES) >= {spec.name for spec in default_registry().specs()}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_registry_entry_round_trips(name, tmp_path):
    """convert -> simulate -> count -> save -> load for a tiny model holding the op: the
    reloaded SNN's output is bit-identical and the counts match their closed forms."""
    example = EXAMPLES[name]
    spec = default_registry()[name]
    model, snn, counter, result, again, head_inputs, x = _run(example, tmp_path)
    if example.contains is not None:
        assert any(isinstance(m, example.contains) for m in snn.graph.modules())
    if spec.modules and spec.role not in (Role.NEURON, Role.DROP, Role.SPIKING, Role.INPUT):
        # the op itself survives canonicalization, in the SNN or (analog) inside an AnalogOp
        held = [m for m in snn.graph.modules() if type(m) in spec.modules] + [m.op for m in snn.graph.modules() if isinstance(m, AnalogOp) and m.kind == "module"]
        assert any(type(m) in spec.modules for m in held) or spec.role is Role.POOL, name
    assert torch.equal(result.outputs[T], again.outputs[T])
    loaded = load_snn(tmp_path / "net.snn")
    for built, reloaded in ((snn.graph, loaded.graph), (snn.ann, loaded.ann)):  # every module's arguments survive
        assert graph_to_spec(reloaded, loaded.registry) == graph_to_spec(built, snn.registry)
    _check_counts(name, example, model, snn, counter, head_inputs, x.shape[0])
    assert not torch.isnan(result.outputs[T]).any()


def test_analog_module_keeps_its_constructor_arguments(tmp_path):
    """A hybrid LeakyReLU(0.3) reloads as 0.3 (not the default 0.01): its entry saves its arguments."""
    _, snn, *_ = _run(EXAMPLES["LeakyReLU"], tmp_path)
    loaded = load_snn(tmp_path / "net.snn")
    (op,) = [m for m in loaded.graph.modules() if isinstance(m, AnalogOp)]
    assert op.op.negative_slope == 0.3


# ---------------------------------------------------------------------------
# a user's op


class ChannelShuffle(nn.Module):
    """A user's module that only permutes channels (ShuffleNet); annsnn does not know it."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.shape
        return x.reshape(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _shuffle_registry():
    save, load = constructor_io(ChannelShuffle, ("groups",))
    spec = OpSpec("ChannelShuffle", Role.LAYOUT, modules=(ChannelShuffle,), convert=move_scale, copies_spikes=True,
                  fanout=run_op, save=save, load=load)
    return default_registry().register(spec)


def _shuffle_model():
    torch.manual_seed(1)
    body = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), ChannelShuffle(2), nn.Conv2d(4, 3, 1))
    return Probe(body).eval()


def test_a_user_registered_op_converts_counts_saves_and_loads(tmp_path):
    registry = _shuffle_registry()
    model = _shuffle_model()
    x = torch.rand(3, *SHAPE)
    snn, _ = ann_to_snn(model, [x], input_shape=SHAPE, registry=registry)
    shuffles = [m for m in snn.graph.modules() if isinstance(m, ChannelShuffle)]
    assert len(shuffles) == 1 and shuffles[0].groups == 2  # a leaf of the trace, kept as the user's module
    counter = SnnCounter(snn, "direct", T)
    counter.attach(x.shape[0])
    result = simulate(snn, x, [T], chunk=1, on_chunk=counter.on_chunk)
    counter.detach()
    assert counter.unsupported == []
    # a permutation: every spike of body.1 reaches body.3 once, with fan-out C_out = 3
    assert torch.equal(counter.layers["body.3"].synaptic_acs, 3 * counter.layers["body.1"].spikes)
    save_snn(snn, tmp_path / "net.snn")
    with pytest.raises(UsageError, match="unknown layer type"):
        load_snn(tmp_path / "net.snn")  # without the user's registry the file is refused
    loaded = load_snn(tmp_path / "net.snn", registry=registry)
    assert torch.equal(simulate(loaded, x, [T], chunk=1).outputs[T], result.outputs[T])
    # the ANN reference equals the user's model
    assert torch.allclose(snn.ann(x), model(x), atol=1e-6)


def test_default_registry_is_a_fresh_copy_each_time():
    registry = _shuffle_registry()
    assert "ChannelShuffle" in registry and "ChannelShuffle" not in default_registry()
    copy = registry.copy()
    copy.unregister("ChannelShuffle")
    assert "ChannelShuffle" in registry


def test_registering_an_op_twice_is_refused_unless_replaced():
    registry = default_registry()
    spec = OpSpec("MyReLU", Role.NEURON, modules=(nn.ReLU,), relu=lambda node, module: None)
    with pytest.raises(ValueError, match="ReLU"):
        registry.register(spec)
    registry.register(spec, replace=True)
    assert registry.for_module(nn.ReLU) is spec and "ReLU" not in registry


def test_an_unregistered_op_is_a_one_line_error_naming_it():
    model = Probe(nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.ChannelShuffle(2))).eval()
    x = torch.rand(2, *SHAPE)
    with pytest.raises(UsageError) as info:
        ann_to_snn(model, [x], input_shape=SHAPE)
    message = str(info.value)
    assert "\n" not in message and "ChannelShuffle" in message and "body.2" in message


def test_an_unregistered_op_is_reported_by_the_counter_not_counted_as_zero():
    """Counting reads the same registry: with the fan-out rule of AvgPool2d removed, the pool
    is listed as unsupported (the Linear after it would otherwise get 0 ACs)."""
    model = Probe(nn.AvgPool2d(2)).eval()
    x = torch.rand(2, *SHAPE)
    snn, _ = ann_to_snn(model, [x], input_shape=SHAPE)
    registry = default_registry()
    spec = registry.unregister("AvgPool2d")
    registry.register(OpSpec(spec.name, spec.role, modules=spec.modules, convert=spec.convert, demand=spec.demand, save=spec.save, load=spec.load))
    counter = SnnCounter(snn, "direct", T, registry=registry)
    assert any("AvgPool2d" in item for item in counter.unsupported)
