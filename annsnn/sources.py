"""Where a conversion's inputs come from: the model, its data, its normalization, its shape.

:func:`load_source` reads a MODEL argument (a file, ``zoo:NAME``, or nothing: the bundled
digits CNN); :func:`resolve_inputs` decides, once and in one place, which dataset, which
input normalization and which input shape a conversion uses, with the precedence

    normalization: explicit mean/std  >  recorded in the model file  >  the architecture's
                   training normalization  >  the dataset's standard normalization
    dataset:       explicit name  >  recorded in the file  >  the architecture's
    input shape:   explicit  >  recorded in the file  >  the dataset's

and :func:`provenance` is the record of all of it that goes into the SNN file.
:func:`load_zoo_model` is the library's one-liner for a zoo model with its normalization.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

from .data import DatasetSpec
from .errors import UsageError
from .model_files import LoadedModel
from .opspec import OpRegistry

__all__ = ["load_source", "ActivationSupport", "activation_support", "ResolvedInputs", "resolve_inputs", "provenance", "default_snn_path", "model_input_shape", "ZooModel", "load_zoo_model"]


def load_source(model: str | None, arch: str | None = None, trust: bool = False, weights: str | None = None,
                input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """The model a MODEL argument names: ``None`` is the bundled digits CNN, ``zoo:NAME`` an
    untrained zoo architecture (``weights``: torchvision weights for ImageNet ones), anything
    else a file read by :func:`annsnn.model_files.load_model` (``arch`` for a bare state_dict)."""
    from .model_files import load_model
    from .torchvision_timm import is_library_arch
    from .zoo import architectures, build, embedded_checkpoint

    if arch is not None and (model is None or model.startswith("zoo:")):
        raise UsageError(f"--arch names the architecture of a state_dict file; {'the bundled digits CNN' if model is None else model} is built by name: drop --arch")
    if model is None:
        return load_model(embedded_checkpoint())
    if model.startswith("zoo:"):
        name = model[4:]
        return LoadedModel(build(name, weights=weights).eval(), model, "zoo", arch=name)
    if weights is not None and not (arch or "").startswith("torchvision:"):
        raise UsageError("--weights W names torchvision weights: it applies to zoo:NAME models and to --arch torchvision:NAME")
    if arch is not None and arch not in architectures() and not is_library_arch(arch):
        raise UsageError(f"unknown --arch {arch!r}: run 'annsnn zoo list' to see the names, or use torchvision:NAME / timm:NAME")
    loaded = load_model(model, arch, trust=trust, input_shape=input_shape, weights=weights)
    if arch is not None and loaded.kind in ("pt2", "torchscript", "onnx", "pickle"):
        raise UsageError(f"--arch names the architecture of a state_dict file; {model!r} is a {loaded.kind} file that holds its own network: drop --arch")
    return loaded


def model_input_shape(loaded: LoadedModel, input_shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The input shape C,H,W of ``loaded``: explicit, recorded in the file, or the zoo
    architecture's; a usage error when none is known."""
    from .zoo import architectures

    spec = architectures().get(loaded.arch) if loaded.arch else None
    shape = tuple(input_shape or loaded.record.get("input_shape") or (spec.input_shape if spec else ()))
    if not shape:
        raise UsageError("pass --input-shape C,H,W (this file records none)")
    return shape


@dataclass(frozen=True)
class ResolvedInputs:
    """The dataset, normalization and input shape a conversion uses, and where the
    normalization came from (in words)."""

    dataset: DatasetSpec
    mean: tuple[float, ...]
    std: tuple[float, ...]
    normalization_source: str
    input_shape: tuple[int, ...]

    @property
    def normalization(self) -> tuple[list[float], list[float]]:
        return list(self.mean), list(self.std)


def resolve_inputs(loaded: LoadedModel, data: str | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   input_shape: tuple[int, ...] | None = None, data_root: str | os.PathLike | None = None, preprocess=None) -> ResolvedInputs:
    """Dataset, normalization and input shape by the precedence in the module docstring."""
    from .data import dataset_spec
    from .zoo import architectures

    arch_spec = architectures().get(loaded.arch) if loaded.arch else None
    record = loaded.record
    name = data or record.get("dataset") or (arch_spec.dataset if arch_spec and arch_spec.dataset != "imagefolder" else None)
    if name is None:
        raise UsageError("which data? pass --data NAME (digits, mnist, cifar10, ..., imagefolder:PATH, imagenet:ROOT)")
    spec = dataset_spec(name, data_root, preprocess)
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise UsageError("--mean and --std go together")
        norm, source = (list(mean), list(std)), "--mean/--std"
    elif "normalization" in record:
        norm, source = (list(record["normalization"]["mean"]), list(record["normalization"]["std"])), "recorded in the model file"
    elif arch_spec is not None and arch_spec.normalization is not None:
        norm, source = (list(arch_spec.normalization[0]), list(arch_spec.normalization[1])), f"{arch_spec.name}'s training normalization"
    else:
        norm, source = (list(spec.mean), list(spec.std)), f"{spec.name}'s standard normalization"
    read = spec.input_shape if preprocess is not None and preprocess.crop is not None else None  # the images as preprocessed (annsnn.data.Preprocess)
    shape = tuple(input_shape or read or record.get("input_shape") or spec.input_shape)
    if len(norm[0]) not in (1, shape[0]) or len(norm[1]) != len(norm[0]):
        raise UsageError(f"normalization has {len(norm[0])} values but the input has {shape[0]} channels")
    return ResolvedInputs(spec, tuple(float(v) for v in norm[0]), tuple(float(v) for v in norm[1]), source, shape)


def provenance(loaded: LoadedModel, inputs: ResolvedInputs) -> dict:
    """What the SNN file records about its source: the model file (absolute path; the bundled one as ``bundled:digits_cnn.pt``), its kind
    and architecture, the dataset, the normalization and where it came from, the version."""
    from .version import __version__

    path = _recorded_path(loaded.path)
    return {
        "source": {"path": path, "kind": loaded.kind, "arch": loaded.arch},
        "dataset": inputs.dataset.to_dict(),
        "normalization": {"mean": list(inputs.mean), "std": list(inputs.std), "source": inputs.normalization_source},
        "annsnn_version": __version__,
    }


BUNDLED = "bundled:digits_cnn.pt"  # how an SNN file names the bundled checkpoint, wherever annsnn is installed


def _recorded_path(path: str) -> str:
    """``zoo:NAME`` as is; the bundled checkpoint as :data:`BUNDLED` (so its SNN's bytes and
    SHA-256 are the same in every clone); any other file by its absolute path."""
    from .zoo import embedded_checkpoint

    if path.startswith("zoo:"):
        return path
    resolved = Path(path).resolve()
    return BUNDLED if resolved == embedded_checkpoint().resolve() else str(resolved)


def default_snn_path(model: str | None, arch: str | None) -> Path:
    """``NAME.snn.pt`` next to MODEL (in the working directory for the bundled or a zoo model)."""
    if model is None or model.startswith("zoo:"):
        return Path(f"{arch or 'model'}.snn.pt")
    path = Path(model)
    return path.with_name(path.name.split(".")[0] + ".snn.pt")


@dataclass(frozen=True)
class ZooModel:
    """A trained zoo model, ready to convert: the network (eval mode), the input
    normalization it was trained with, its input shape and its dataset's name."""

    module: nn.Module
    normalization: tuple[list[float], list[float]]
    input_shape: tuple[int, ...]
    dataset: str


def load_zoo_model(name: str = "digits_cnn") -> ZooModel:
    """The bundled, trained ``digits_cnn`` (the only zoo model shipped with weights) with
    the normalization, input shape and dataset its checkpoint records::

        model = annsnn.load_zoo_model()
        snn, report = annsnn.ann_to_snn(model.module, calibration_batches,
                                        input_shape=model.input_shape, normalization=model.normalization)
    """
    if name != "digits_cnn":
        raise UsageError(f"no trained weights ship for {name!r}: only digits_cnn does; train one with 'annsnn zoo train {name}'")
    loaded = load_source(None)
    inputs = resolve_inputs(loaded)
    return ZooModel(loaded.module.eval(), inputs.normalization, inputs.input_shape, inputs.dataset.name)


@dataclass(frozen=True)
class ActivationSupport:
    """Which activations of a model convert: ``modules[name]`` is ``"yes"`` (with its clip
    ceiling, if any) or ``"no: --hybrid keeps it analog"``; functional activations in
    ``forward()`` are counted in ``functional_relu`` / ``functional_analog``; ``error`` is
    why the model does not trace (None when it does)."""

    modules: dict[str, str]
    functional_relu: int
    functional_analog: int
    error: str | None = None

    def notes(self) -> list[str]:
        notes = []
        if self.functional_relu:
            notes.append(f"{self.functional_relu} functional ReLU-like activation(s) in forward(): convertible")
        if self.functional_analog:
            notes.append(f"{self.functional_analog} functional activation(s) that need --hybrid")
        if self.error is not None:
            notes.append(f"not convertible as written: {self.error}")
        return notes


def activation_support(module: nn.Module, registry: OpRegistry) -> ActivationSupport:
    """Trace ``module`` and classify every activation by its entry in ``registry``."""
    from .graph import classify_activation, trace

    support: dict[str, str] = {}
    functional = {"relu": 0, "analog": 0}
    try:
        traced = trace(module, registry)
    except UsageError as exc:
        return ActivationSupport({}, 0, 0, str(exc))
    modules = dict(traced.named_modules())
    for node in traced.graph.nodes:
        kind, ceiling = classify_activation(node, modules, registry)
        label = "yes" if kind == "relu" else ("no: --hybrid keeps it analog" if kind == "analog" else "")
        if node.op == "call_module" and label:
            support[str(node.target)] = label + (f" (clip {ceiling:g})" if ceiling else "")
        elif label and kind in functional:
            functional[kind] += 1
    return ActivationSupport(support, functional["relu"], functional["analog"])
