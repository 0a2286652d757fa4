"""Load a model safely.

Accepted ``MODEL`` files:

1. a checkpoint / state_dict (``.pt``, ``.pth``, ``.th``; ``{'state_dict': ...}``
   wrappers and DataParallel ``module.`` prefixes) plus ``--arch`` -- loaded with
   ``torch.load(weights_only=True)``, which never runs pickled code;
   annsnn's own checkpoints name their arch, dataset and normalization;
2. a ``.safetensors`` state_dict plus ``--arch`` (read with safetensors, no pickle);
   ``--arch`` is a zoo name, ``torchvision:NAME`` or ``timm:NAME`` (:mod:`annsnn.torchvision_timm`);
3. a TorchScript archive, traced or scripted (``torch.jit.load``), lifted to standard
   modules through torch's TorchScript -> ExportedProgram converter; it needs the input
   shape (:mod:`annsnn.exported_program`);
4. a ``torch.export`` archive (``.pt2``), lifted the same way; it records its input shape;
5. an ONNX file (``.onnx``), imported from an allowlist of ops (:mod:`annsnn.onnx_import`);
6. a whole pickled ``nn.Module`` -- only with ``trust=True`` (``--trust``).
"""
from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import UsageError
from .files import check_zip_integrity, load_weights_only

__all__ = ["LoadedModel", "load_model", "strip_prefix", "convertible_module", "sniff", "unpickle_trusted_module", "unsafe_pickle", "holds_pickled_objects"]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".th", ".ckpt", ".bin", ".pt2", ".ts", ".jit")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


@dataclass
class LoadedModel:
    """A model ready for inference, plus what its file recorded about it."""

    module: nn.Module
    path: str
    kind: str  # checkpoint | safetensors | torchscript | pt2 | onnx | pickle | zoo
    arch: str | None = None
    record: dict = field(default_factory=dict)  # dataset, normalization, input_shape from the file


def strip_prefix(state: dict, prefix: str = "module.") -> dict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def convertible_module(loaded: LoadedModel, input_shape: tuple[int, ...]) -> nn.Module:
    """``loaded.module`` in a form torch.fx can trace and annsnn can convert.

    TorchScript is lifted on ``input_shape``; a timm architecture goes through
    ``torch.export`` and the same lifting, since timm's fused layers (``BatchNormAct2d``)
    read their weights inside ``forward``.
    """
    if isinstance(loaded.module, torch.jit.ScriptModule):
        from .exported_program import torchscript_to_module

        loaded.module = torchscript_to_module(loaded.module, tuple(input_shape))
    elif loaded.arch is not None and loaded.arch.startswith("timm:") and not isinstance(loaded.module, torch.fx.GraphModule):
        from .exported_program import export_to_module

        loaded.module = export_to_module(loaded.module, tuple(input_shape))
    return loaded.module


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):  # ValueError: a damaged directory's undecodable names
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def load_model(
    path: str | os.PathLike,
    arch: str | None = None,
    *,
    trust: bool = False,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    weights: str | None = None,
) -> LoadedModel:
    """Load ``path``; every failure is a one-line :class:`UsageError`.

    ``weights``: for a state_dict of ``--arch torchvision:NAME``, the torchvision weights
    whose input shape and normalization it records (default: NAME's DEFAULT weights).

    A TorchScript file is lifted to standard modules when ``input_shape`` is given;
    otherwise :func:`convertible_module` lifts it once the shape is known.
    """
    file = Path(path)
    if not file.exists():
        raise UsageError(f"model file {str(file)!r} does not exist")
    if not file.is_file():
        raise UsageError(f"model path {str(file)!r} is not a file")
    if file.stat().st_size == 0:
        raise UsageError(f"model file {str(file)!r} is empty")
    suffix = file.suffix.lower()
    if sniff(file) == "hdf5" and suffix != ".onnx":
        raise UsageError(f"{str(file)!r} is an HDF5 file (a NIR graph?), not a PyTorch model, whatever its name: analyse a NIR SNN with 'annsnn energy --model FILE' (named .nir)")
    if suffix == ".onnx":
        return _load_onnx(file)
    if suffix == ".safetensors":
        return _from_checkpoint(_read_safetensors(file), file, arch, num_classes, kind="safetensors", weights=weights)
    if suffix not in _CHECKPOINT_SUFFIXES:
        if _holds_annsnn_snn(file):  # e.g. convert --out m.snn: a name evaluate/export read
            raise UsageError(_snn_given_as_model(file))
        raise UsageError(
            f"unknown model file type {suffix or '(none)'!r} for {str(file)!r}: "
            "use .pt/.pth/.th (checkpoint or TorchScript), .pt2 (torch.export), .onnx or .safetensors"
        )
    from .exported_program import is_pt2, load_pt2

    if suffix == ".pt2" or is_pt2(file):
        module, shape = load_pt2(file, trust=trust)
        return LoadedModel(module, str(file), "pt2", record={"input_shape": list(shape)} if shape else {})
    if _is_torchscript(file):
        try:
            check_zip_integrity(file)
        except zipfile.BadZipFile as exc:
            raise UsageError(f"TorchScript file {str(file)!r} is damaged (corrupt or truncated: {exc})") from None
        try:
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice
                warnings.simplefilter("ignore")
                script = torch.jit.load(str(file), map_location="cpu")
        except Exception as exc:
            raise UsageError(f"TorchScript file {str(file)!r} could not be loaded ({type(exc).__name__})") from None
        loaded = LoadedModel(script.eval(), str(file), "torchscript")
        if input_shape is not None:
            convertible_module(loaded, input_shape)
        return loaded
    try:
        obj = load_weights_only(str(file), map_location="cpu")
    except pickle.UnpicklingError as exc:
        holds_pickled_objects(exc, file)  # raises for a blocked (even with --trust) or a damaged file
        if not trust:
            raise UsageError(
                f"{str(file)!r} holds pickled Python objects (e.g. a whole nn.Module), and unpickling can run arbitrary code; "
                "save a state_dict and pass --arch, or pass --trust if you trust this file"
            ) from None
        return _load_trusted(file)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError, AttributeError, KeyError, IndexError, TypeError):
        raise UsageError(f"{str(file)!r} is not a valid checkpoint (corrupt, truncated or not a PyTorch file)") from None
    return _from_checkpoint(obj, file, arch, num_classes, weights=weights)


_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _snn_given_as_model(file: Path) -> str:
    return f"{str(file)!r} is a converted SNN (annsnn's SNN file), not an ANN model: run 'annsnn evaluate', 'annsnn energy' or 'annsnn export' on it"


def _holds_annsnn_snn(file: Path) -> bool:
    """Whether ``file`` is a ``torch.save`` archive whose pickle names annsnn's SNN format
    (read as bytes, never unpickled): it only picks the wording of a refusal."""
    from .artifact import FORMAT

    if sniff(file) != "zip":
        return False
    try:
        with zipfile.ZipFile(file) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            return len(pickles) == 1 and FORMAT.encode() in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError):
        return False


def sniff(path: Path) -> str:
    """The file's format by its first bytes, whatever its name: ``hdf5`` (NIR), ``zip``
    (torch.save, TorchScript, .pt2), ``pickle`` (a bare pickle), or ``unknown``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return "unknown"
    if head.startswith(_HDF5_MAGIC):
        return "hdf5"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def unsafe_pickle(exc: BaseException, file: Path) -> str | None:
    """The one-line refusal of a pickle that torch's weights-only loader blocks as unsafe
    (it names a global of a blocklisted module such as ``os`` or ``subprocess``), or None."""
    import re

    found = re.search(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked", str(exc))
    if found is None:
        return None
    return (f"{str(file)!r} was refused as unsafe: its pickle calls {found.group(1)}, which torch's weights-only loader blocks "
            "(a file that runs system commands when loaded); it is not loaded, even with --trust")


def holds_pickled_objects(exc: BaseException, file: Path) -> bool:
    """After torch's weights-only loader failed on ``file`` with ``exc``: True for a real
    pickle of Python objects (a whole ``nn.Module``; loading it needs ``--trust``). Otherwise
    the file's one-line error is raised: torch's blocklist refusal (:func:`unsafe_pickle`), or
    corrupt / truncated / another format, which no ``--trust`` would change."""
    refusal = unsafe_pickle(exc, file)
    if refusal is not None:
        raise UsageError(refusal) from None
    if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):  # it names Python objects; garbage fails otherwise
        return True
    raise UsageError(f"{str(file)!r} is not a valid checkpoint (corrupt, truncated or not a PyTorch file)") from None


def unpickle_trusted_module(file: Path) -> nn.Module:
    """Unpickle a whole ``nn.Module`` from ``file``. This runs code from the file: call it only
    when the user passed ``--trust`` (``trust=True``) for that file."""
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(f"{str(file)!r} could not be unpickled ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(obj, nn.Module):
        raise UsageError(f"{str(file)!r} unpickled to a {type(obj).__name__}, not an nn.Module")
    return obj


def _load_trusted(file: Path) -> LoadedModel:
    return LoadedModel(unpickle_trusted_module(file).eval(), str(file), "pickle")


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - optional dependency
        raise UsageError("reading .safetensors needs the safetensors package (pip install 'annsnn[formats]')") from None
    try:
        return load_file(str(file), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...
        raise UsageError(f"{str(file)!r} is not a valid safetensors file (corrupt, truncated or another format; {type(exc).__name__})") from None


def _from_checkpoint(obj: object, file: Path, arch: str | None, num_classes: int | None, kind: str = "checkpoint", weights: str | None = None) -> LoadedModel:
    from annsnn.zoo import build

    from .torchvision_timm import build_library_arch, is_library_arch

    record: dict = {}
    from .artifact import FORMAT as SNN_FORMAT

    if isinstance(obj, dict) and obj.get("format") == SNN_FORMAT:
        raise UsageError(_snn_given_as_model(file))
    if isinstance(obj, dict) and obj.get("format") == "annsnn-checkpoint":
        _check_checkpoint_record(obj, file)
        arch = arch or obj.get("arch")
        num_classes = num_classes or obj.get("num_classes")
        record = {k: obj[k] for k in ("dataset", "normalization", "input_shape", "test_top1") if k in obj}
        state = obj.get("state_dict")
    else:
        state = obj
        if isinstance(obj, dict):
            for key in _WRAPPER_KEYS:
                if key in obj and isinstance(obj[key], dict):
                    state = obj[key]
                    break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{str(file)!r} holds no state_dict of tensors")
    state = strip_prefix(state)
    if arch is None:
        raise UsageError(f"{str(file)!r} is a state_dict; pass --arch NAME (see 'annsnn zoo list', or torchvision:NAME, timm:NAME) to say which network it belongs to")
    if is_library_arch(arch):
        library = build_library_arch(arch, state, num_classes, weights)
        module = library.module
        if library.input_shape is not None and "input_shape" not in record:
            record["input_shape"] = list(library.input_shape)
        if library.normalization is not None and "normalization" not in record:
            record["normalization"] = {"mean": library.normalization[0], "std": library.normalization[1]}
        return _fill(module, state, file, arch, record, kind)
    if num_classes is None:
        # the architecture's last bias/weight, in its own module order, is the classifier's
        # (safetensors stores keys sorted by name, so the file's order says nothing)
        default = build(arch).state_dict()
        last = [k for k in default if k.endswith((".bias", ".weight")) and k in state and state[k].dim() >= 1]
        num_classes = int(state[last[-1]].shape[0]) if last else None
    try:
        module = build(arch, num_classes=num_classes)
    except TypeError:
        module = build(arch)
    return _fill(module, state, file, arch, record, kind)


def _check_checkpoint_record(obj: dict, file: Path) -> None:
    """The fields an annsnn checkpoint records beside its weights, each of its type: a
    damaged or hand-made one is a one-line error, not an internal one later."""
    def numbers(value: object) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)

    norm = obj.get("normalization")
    checks = {
        "arch": "arch" not in obj or isinstance(obj["arch"], str),
        "num_classes": obj.get("num_classes") is None or (isinstance(obj["num_classes"], int) and not isinstance(obj["num_classes"], bool) and obj["num_classes"] >= 1),
        "dataset": "dataset" not in obj or isinstance(obj["dataset"], str),
        "input_shape": "input_shape" not in obj or (numbers(obj["input_shape"]) and all(isinstance(v, int) and v >= 1 for v in obj["input_shape"])),
        "normalization": norm is None or (isinstance(norm, dict) and numbers(norm.get("mean")) and numbers(norm.get("std"))
                                          and len(norm["mean"]) == len(norm["std"]) and all(v > 0 for v in norm["std"])),
        "test_top1": "test_top1" not in obj or obj["test_top1"] is None or (isinstance(obj["test_top1"], (int, float)) and not isinstance(obj["test_top1"], bool)),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise UsageError(f"{str(file)!r} is a damaged annsnn checkpoint: its {', '.join(bad)} field{'s' if len(bad) > 1 else ''} cannot be read")


def _fill(module: nn.Module, state: dict, file: Path, arch: str, record: dict, kind: str) -> LoadedModel:
    """Load ``state`` into ``module`` strictly; a mismatch names the keys in one line."""
    expected = module.state_dict()
    # BatchNorm fills num_batches_tracked for checkpoints older than torch 0.4.1
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if mismatched:
        problems.append(f"shape mismatch {_short(mismatched, 3)}")
    if problems:
        raise UsageError(f"{str(file)!r} does not fit --arch {arch}: " + "; ".join(problems))
    module.load_state_dict({**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state}, strict=True)
    return LoadedModel(module.eval(), str(file), kind, arch=arch, record=record)


def _short(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _load_onnx(file: Path) -> LoadedModel:
    from .onnx_import import load_onnx

    module, shape = load_onnx(file)
    return LoadedModel(module, str(file), "onnx", record={"input_shape": list(shape)} if shape else {})
