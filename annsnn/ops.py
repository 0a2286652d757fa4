"""The built-in op registry: every op annsnn can convert, keep analog, count and save.

Each supported op has ONE :class:`~annsnn.opspec.OpSpec` here: the module types, functions
and tensor-method names it matches (its aliases, e.g. ``nn.ReLU``, ``F.relu`` and
``x.relu()``), its :class:`~annsnn.opspec.Role`, and the rules annsnn applies to it, taken
from the rule modules: canonicalization (:mod:`annsnn.rules.forms`), conversion
(:mod:`annsnn.rules.scale`), counting (:mod:`annsnn.rules.fanout`), the SNN file
(:mod:`annsnn.rules.saving`) and ``--hybrid`` (:mod:`annsnn.analog`). The schema
(:class:`OpSpec`, :class:`OpRegistry`, :class:`Role`) is :mod:`annsnn.opspec`; this module
re-exports it, so ``from annsnn.ops import OpSpec, Role, default_registry`` works.

The modules below this table (graph, convert, counting, snn, artifact, analog) take the
registry as an argument and keep no list of their own, so adding an op touches one place.
There is no mutable global: :func:`default_registry` returns a fresh copy of the built-in
entries, which a user may extend with :meth:`OpRegistry.register` and pass to
``ann_to_snn(..., registry=)``, ``canonicalize``, ``SnnCounter`` and ``load_snn(..., registry=)``.
A converted :class:`~annsnn.snn.SpikingNetwork` keeps the registry it was built with, so
counting and saving use the same entries; an SNN file that names a user-registered module
type loads only when that registry is passed to ``load_snn`` (nothing in the file names code).

Example, a user's channel-shuffle module that only moves values::

    from annsnn.ops import OpSpec, Role, default_registry, move_scale, constructor_io, run_op

    save, load = constructor_io(ChannelShuffle, ("groups",))
    registry = default_registry().register(OpSpec(
        "ChannelShuffle", Role.LAYOUT, modules=(ChannelShuffle,), convert=move_scale,
        copies_spikes=True, fanout=run_op, save=save, load=load))
    snn, report = ann_to_snn(model, batches, input_shape=(3, 32, 32), registry=registry)
"""
from __future__ import annotations

import operator
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .analog import AnalogOp
from .layers import IFNeurons, InputEncoder, Normalize, ReLUClip, Rescale, SpikingMaxPool2d
from .opspec import AnalogUse, Demand, OpRegistry, OpSpec, ReluForm, Role, describe
from .rules.fanout import (
    adaptive_avgpool_structure,
    avgpool1d_structure,
    avgpool2d_structure,
    conv_structure,
    conv_macs,
    first_tensor,
    identity_structure,
    linear_macs,
    linear_structure,
    mean_as_sum,
    module_rule,
    pool_windows_structure,
    run_op,
)
from .rules.forms import (
    clamp,
    fold_conv_batchnorm,
    fold_linear_batchnorm,
    hardtanh,
    lower_adaptive_avg_pool2d,
    lower_avg_pool2d,
    lower_max_pool2d,
    relu,
    relu6,
    relu_clip,
    stochastic_depth_in_eval,
)
from .rules import nir_export
from .rules.saving import bias_flag, config_io, constructor_io, conv_config, linear_config, load_neurons, mha_extra, pool_config
from .rules.scale import (
    move_scale,
    scale_add,
    scale_maxpool,
    scale_mean,
    scale_neuron,
    scale_normalize,
    scale_pad,
    scale_pool,
    scale_scalar_div,
    scale_scalar_mul,
    scale_size,
    scale_split,
    scale_weight,
)

__all__ = [
    "Role",
    "AnalogUse",
    "Demand",
    "ReluForm",
    "OpSpec",
    "OpRegistry",
    "describe",
    "default_registry",
    "constructor_io",
    "run_op",
    "move_scale",
]


def _builtin_specs() -> list[OpSpec]:
    specs: list[OpSpec] = []
    add = specs.append

    # --- weight layers: W' = W s_in / s_out, b' = b / s_out (Rueckauer et al. 2017)
    for cls, config, fanout, macs, fold, to_nir in (
        (nn.Conv1d, conv_config, conv_structure, conv_macs, fold_conv_batchnorm, nir_export.conv1d),
        (nn.Conv2d, conv_config, conv_structure, conv_macs, fold_conv_batchnorm, nir_export.conv2d),
        (nn.Linear, linear_config, linear_structure, linear_macs, fold_linear_batchnorm, nir_export.linear),
    ):
        save, load = config_io(cls, config)
        add(OpSpec(cls.__name__, Role.WEIGHT, modules=(cls,), convert=scale_weight, demand=Demand.ABSORB,
                   fanout=module_rule(fanout), macs=macs, save=save, load=load, fold_batchnorm=fold, nir=to_nir))

    # --- ReLU-like activations: canonicalization makes each a ReLUClip, conversion IF neurons
    save, load = config_io(ReLUClip, lambda m: m.config())
    add(OpSpec("ReLUClip", Role.NEURON, modules=(ReLUClip,), relu=relu_clip, convert=scale_neuron, sink=True, save=save, load=load))
    add(OpSpec("ReLU", Role.NEURON, modules=(nn.ReLU,),
               functions=(("torch.relu", torch.relu), ("F.relu", F.relu), ("torch.relu_", torch.relu_), ("F.relu_", F.relu_)),
               methods=("relu", "relu_"), relu=relu))
    add(OpSpec("ReLU6", Role.NEURON, modules=(nn.ReLU6,), functions=(("F.relu6", F.relu6),), relu=relu6))
    save, load = constructor_io(nn.Hardtanh, ("min_val", "max_val", "inplace"))
    add(OpSpec("Hardtanh", Role.NEURON, modules=(nn.Hardtanh,), functions=(("F.hardtanh", F.hardtanh),), relu=hardtanh,
               activation=True, analog=AnalogUse.NONLINEAR, save=save, load=load))
    add(OpSpec("clamp", Role.NEURON, functions=(("torch.clamp", torch.clamp), ("torch.clip", torch.clip)),
               methods=("clamp", "clamp_", "clip", "clip_"), relu=clamp))

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
        add(OpSpec("stochastic_depth", Role.DROP, functions=(("torchvision.ops.stochastic_depth", stochastic_depth),), when=stochastic_depth_in_eval))

    # --- pooling: pool(s * x) = s * pool(x) for a per-channel s
    save, load = config_io(nn.AvgPool1d, pool_config)
    add(OpSpec("AvgPool1d", Role.POOL, modules=(nn.AvgPool1d,), convert=scale_pool, demand=Demand.CHANNEL,
               fanout=module_rule(avgpool1d_structure), save=save, load=load))
    save, load = config_io(nn.AvgPool2d, pool_config)
    add(OpSpec("AvgPool2d", Role.POOL, modules=(nn.AvgPool2d,), functions=(("F.avg_pool2d", F.avg_pool2d),), convert=scale_pool,
               demand=Demand.CHANNEL, fanout=module_rule(avgpool2d_structure), save=save, load=load, lower=lower_avg_pool2d, nir=nir_export.avg_pool2d))
    save, load = config_io(nn.AdaptiveAvgPool1d, pool_config)
    add(OpSpec("AdaptiveAvgPool1d", Role.POOL, modules=(nn.AdaptiveAvgPool1d,), convert=scale_pool, demand=Demand.CHANNEL,
               fanout=module_rule(adaptive_avgpool_structure), save=save, load=load))
    save, load = config_io(nn.AdaptiveAvgPool2d, pool_config)
    add(OpSpec("AdaptiveAvgPool2d", Role.POOL, modules=(nn.AdaptiveAvgPool2d,), functions=(("F.adaptive_avg_pool2d", F.adaptive_avg_pool2d),),
               convert=scale_pool, demand=Demand.CHANNEL, fanout=module_rule(adaptive_avgpool_structure), save=save, load=load,
               lower=lower_adaptive_avg_pool2d, nir=nir_export.adaptive_avg_pool2d))
    save, load = config_io(nn.MaxPool2d, pool_config)
    add(OpSpec("MaxPool2d", Role.POOL, modules=(nn.MaxPool2d,), functions=(("F.max_pool2d", F.max_pool2d),), convert=scale_maxpool,
               demand=Demand.CHANNEL, save=save, load=load, lower=lower_max_pool2d))

    # --- ops that move, copy or zero-pad values: the scale is the op run on the scales
    save, load = config_io(nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim})
    add(OpSpec("Flatten", Role.LAYOUT, modules=(nn.Flatten,), convert=move_scale, demand=Demand.SCALAR, copies_spikes=True,
               fanout=run_op, save=save, load=load, nir=nir_export.flatten_module))
    moves: list[tuple[str, tuple[tuple[str, Callable], ...], tuple[str, ...], Demand]] = [
        ("flatten", (("torch.flatten", torch.flatten),), ("flatten",), Demand.SCALAR),
        ("reshape", (("torch.reshape", torch.reshape),), ("reshape", "view"), Demand.SCALAR),
        ("getitem", (("operator.getitem", operator.getitem),), (), Demand.STOP),
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
    nir_forms = {"flatten": nir_export.flatten_call, "reshape": nir_export.view_as_flatten,
                 "getitem": nir_export.refuse("slicing x[...]"), "cat": nir_export.refuse("torch.cat")}
    for name, functions, methods, demand in moves:
        add(OpSpec(name, Role.LAYOUT, functions=functions, methods=methods, convert=move_scale, demand=demand,
                   copies_spikes=True, analog=AnalogUse.LINEAR, fanout=run_op, nir=nir_forms.get(name)))
    add(OpSpec("pad", Role.LAYOUT, functions=(("F.pad", F.pad),), convert=scale_pad, copies_spikes=True, analog=AnalogUse.LINEAR, fanout=run_op,
               nir=nir_export.refuse("F.pad")))
    for name in ("chunk", "split", "unbind", "tensor_split"):
        add(OpSpec(name, Role.SPLIT, functions=((f"torch.{name}", getattr(torch, name)),), methods=(name,), convert=scale_split, fanout=run_op))

    # --- arithmetic
    add(OpSpec("add", Role.ADD, functions=(("operator.add", operator.add), ("operator.iadd", operator.iadd), ("torch.add", torch.add)),
               methods=("add", "add_"), convert=scale_add, demand=Demand.OPERANDS, analog=AnalogUse.LINEAR, fanout=run_op))
    add(OpSpec("mul", Role.CONSTANT_FACTOR, functions=(("operator.mul", operator.mul), ("operator.imul", operator.imul), ("torch.mul", torch.mul)),
               methods=("mul", "mul_"), convert=scale_scalar_mul, analog=AnalogUse.PRODUCT, fanout=first_tensor,
               nir=nir_export.refuse("multiplication by a tensor")))
    add(OpSpec("div", Role.CONSTANT_FACTOR, functions=(("operator.truediv", operator.truediv), ("torch.div", torch.div)),
               methods=("div", "div_"), convert=scale_scalar_div, analog=AnalogUse.PRODUCT, fanout=first_tensor))
    add(OpSpec("mean", Role.MEAN, functions=(("torch.mean", torch.mean),), methods=("mean",), convert=scale_mean, fanout=mean_as_sum))
    add(OpSpec("size", Role.SIZE, functions=(("builtins.getattr", getattr),), methods=("size", "dim"), convert=scale_size, fanout=run_op))

    # --- annsnn's own layers
    add(OpSpec("Normalize", Role.INPUT, modules=(Normalize,), convert=scale_normalize,
               fanout=module_rule(identity_structure),  # Poisson spikes into (s - mean)/std: one event per spike
               save=lambda m: {}, load=lambda c, st, p, r: Normalize(st[p + "mean"], st[p + "std"])))
    add(OpSpec("IFNeurons", Role.SPIKING, modules=(IFNeurons,), sink=True, save=lambda m: m.config(), load=load_neurons, nir=nir_export.if_neurons))
    save, load = config_io(SpikingMaxPool2d, lambda m: m.config())
    add(OpSpec("SpikingMaxPool2d", Role.SPIKING, modules=(SpikingMaxPool2d,), copies_spikes=True,
               fanout=module_rule(pool_windows_structure), save=save, load=load))
    add(OpSpec("Rescale", Role.SPIKING, modules=(Rescale,), fanout=module_rule(identity_structure),
               save=lambda m: {}, load=lambda c, st, p, r: Rescale(st[p + "factor"]), nir=nir_export.rescale))
    add(OpSpec("InputEncoder", Role.SPIKING, modules=(InputEncoder,), save=lambda m: {}, load=lambda c, st, p, r: InputEncoder()))
    add(OpSpec("AnalogOp", Role.SPIKING, modules=(AnalogOp,), sink=True, save=lambda m: m.config(),
               load=lambda c, st, p, r: AnalogOp.from_config(c, st, p, registry=r), nir=nir_export.analog_op))

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
        save, load = constructor_io(cls, fields) if cls is not None else (None, None)  # type: ignore[assignment]
        add(OpSpec(name, Role.ANALOG, modules=(cls,) if cls is not None else (), functions=functions, methods=methods,
                   activation=activation, analog=AnalogUse.NONLINEAR, sink=cls is not None and activation, save=save, load=load))
    save, load = constructor_io(nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine"), bias_flag, ("bias",))
    add(OpSpec("LayerNorm", Role.ANALOG, modules=(nn.LayerNorm,), functions=(("F.layer_norm", F.layer_norm),),
               analog=AnalogUse.NONLINEAR, save=save, load=load))
    save, load = constructor_io(nn.MultiheadAttention, ("embed_dim", "num_heads", "dropout", "add_zero_attn", "kdim", "vdim", "batch_first"),
                           mha_extra, ("bias", "add_bias_kv"))
    add(OpSpec("MultiheadAttention", Role.ANALOG, modules=(nn.MultiheadAttention,), analog=AnalogUse.NONLINEAR, save=save, load=load))
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


_BUILTIN: list[OpRegistry] = []  # built once on first use , never handed out


def default_registry() -> OpRegistry:
    """A fresh copy of annsnn's built-in entries; extend it with :meth:`OpRegistry.register`."""
    if not _BUILTIN:
        _BUILTIN.append(OpRegistry(_builtin_specs()))
    return _BUILTIN[0].copy()
