"""Architectures from torchvision and timm, named ``torchvision:NAME`` / ``timm:NAME``.

A fine-tuned checkpoint of a library architecture then needs no code: the module is
built by the library itself (``torchvision.models.get_model``, ``timm.create_model``,
never copied here), with ``num_classes`` read from the checkpoint's classifier weight.
Defaults for the input shape and normalization come from timm's ``pretrained_cfg`` or
torchvision's weights ``transforms()``; where a library names none, they stay unset
and the caller asks for ``--input-shape``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import UsageError

__all__ = ["LIBRARIES", "LibraryArch", "is_library_arch", "build_library_arch", "torchvision_weights"]

LIBRARIES = ("torchvision", "timm")


@dataclass
class LibraryArch:
    """A library module plus what its library records about its input."""

    module: nn.Module
    num_classes: int
    input_shape: tuple[int, ...] | None = None
    normalization: tuple[list[float], list[float]] | None = None
    notes: list[str] = field(default_factory=list)


def is_library_arch(arch: str | None) -> bool:
    return bool(arch) and arch.split(":", 1)[0] in LIBRARIES and ":" in arch  # type: ignore[union-attr]


def _split(arch: str) -> tuple[str, str]:
    library, _, name = arch.partition(":")
    if library not in LIBRARIES or not name:
        raise UsageError(f"invalid --arch {arch!r}: use torchvision:NAME or timm:NAME")
    return library, name


def _classifier_key(default_state: dict[str, torch.Tensor], classes: int) -> str | None:
    """The last weight whose first dimension is the library default's class count."""
    for key in reversed(list(default_state)):
        if key.endswith("weight") and default_state[key].dim() >= 2 and default_state[key].shape[0] == classes:
            return key
    return None


def build_library_arch(arch: str, state: dict[str, torch.Tensor] | None = None, num_classes: int | None = None, weights: str | None = None) -> LibraryArch:
    """Build ``arch`` with random weights, sized to fit ``state``'s classifier. Its input
    shape and normalization are those of torchvision's ``weights`` (a name such as
    ``IMAGENET1K_V2``; default: the DEFAULT weights), or of timm's data config."""
    library, name = _split(arch)
    if library == "torchvision":
        return _torchvision(name, state, num_classes, weights)
    if weights is not None:
        raise UsageError("--weights W names torchvision weights: it needs --arch torchvision:NAME")
    return _timm(name, state, num_classes)


def _infer_classes(key: str | None, state: dict | None, given: int | None, arch: str) -> int | None:
    if given is not None:
        return given
    if state is None or key is None:
        return None
    if key not in state:
        raise UsageError(f"the checkpoint has no classifier weight {key!r}, which {arch} needs")
    return int(state[key].shape[0])


def torchvision_weights(name: str, weights: str):
    """torchvision's weights ``weights`` (a name such as ``IMAGENET1K_V2``, or ``DEFAULT``) of
    architecture ``name``; an unknown one is a one-line error listing the names."""
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT  # type: ignore[index,attr-defined]
    except (KeyError, ValueError):
        known = ", ".join(["DEFAULT", *(w.name for w in tvm.get_model_weights(name))]) if name in tvm.list_models() else "none"
        raise UsageError(f"unknown --weights {weights!r} for torchvision:{name}: use one of {known}") from None


def _torchvision(name: str, state: dict | None, num_classes: int | None, weights_name: str | None = None) -> LibraryArch:
    import torchvision.models as tvm

    if name not in tvm.list_models():
        raise UsageError(f"unknown torchvision architecture {name!r}: see torchvision.models.list_models()")
    default = tvm.get_model(name, weights=None)
    key = _classifier_key(default.state_dict(), 1000)
    classes = _infer_classes(key, state, num_classes, f"torchvision:{name}")
    module = default if classes in (None, 1000) else tvm.get_model(name, weights=None, num_classes=classes)
    shape = norm = None
    try:  # the weights the user named (their normalization, not DEFAULT's: vgg16's IMAGENET1K_FEATURES has std 1/255), else DEFAULT
        transform = torchvision_weights(name, weights_name or "DEFAULT").transforms()
        size = int(transform.crop_size[0])
        shape = (3, size, size)
        norm = (list(map(float, transform.mean)), list(map(float, transform.std)))
    except Exception:  # models without published weights carry no transform; named weights that are unknown say so
        if weights_name is not None:
            raise
    return LibraryArch(module.eval(), classes or 1000, shape, norm)


def _timm(name: str, state: dict | None, num_classes: int | None) -> LibraryArch:
    try:
        import timm
    except ImportError:  # pragma: no cover - optional dependency
        raise UsageError("--arch timm:NAME needs the timm package (pip install 'annsnn[formats]')") from None
    if not timm.is_model(name):
        raise UsageError(f"unknown timm architecture {name!r}: see timm.list_models()")
    default = timm.create_model(name, pretrained=False)
    classifier = default.pretrained_cfg.get("classifier") if hasattr(default, "pretrained_cfg") else None
    key = f"{classifier}.weight" if isinstance(classifier, str) else _classifier_key(default.state_dict(), int(getattr(default, "num_classes", 1000)))
    classes = _infer_classes(key, state, num_classes, f"timm:{name}")
    module = default if classes in (None, default.num_classes) else timm.create_model(name, pretrained=False, num_classes=classes)
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    shape = tuple(int(v) for v in cfg["input_size"]) if cfg.get("input_size") else None
    norm = (list(map(float, cfg["mean"])), list(map(float, cfg["std"]))) if cfg.get("mean") and cfg.get("std") else None
    return LibraryArch(module.eval(), classes or int(default.num_classes), shape, norm)
