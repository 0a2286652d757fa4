"""TorchScript archives and ``torch.export`` ``.pt2`` files, as graphs annsnn can convert.

Both become an ``ExportedProgram`` whose ``module()`` is a torch.fx graph of ATen ops;
:func:`annsnn.aten_lift.lift_aten` then rebuilds it from standard ``torch.nn`` modules.

* TorchScript (``torch.jit.trace`` or ``torch.jit.script``, saved with ``torch.jit.save``)
  is read by ``torch.jit.load``, whose C++ unpickler restores TorchScript objects and
  tensors only, never Python classes. torch's own TorchScript -> ExportedProgram converter
  (``torch._export.converter.TS2EPConverter``) runs it once on a zero input of the given
  shape, so TorchScript needs the input shape.
* ``.pt2`` (``torch.export.save``) records its example input, so it needs nothing. Its
  loader unpickles (``weights_only=False``) weights or constants flagged ``use_pickle``,
  custom objects, and example inputs that are not plain tensors. :func:`check_pt2` reads
  the archive's JSON configs first and refuses such a file unless it is trusted.
"""
from __future__ import annotations

import io
import json
import logging
import os
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import fx

from .errors import UsageError
from .aten_lift import lift_aten
from .files import load_weights_only

__all__ = ["torchscript_to_module", "export_to_module", "load_pt2", "check_pt2", "is_pt2"]


@contextmanager
def _quiet() -> Iterator[None]:
    """torch's converters warn through ``warnings`` and ``logging``; the library never prints."""
    loggers = [logging.getLogger(name) for name in ("torch._export", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def torchscript_to_module(script: torch.jit.ScriptModule, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """A TorchScript module as standard modules, via torch's TorchScript -> ExportedProgram converter."""
    from torch._export.converter import TS2EPConverter

    example = torch.zeros(2, *input_shape)
    try:
        with _quiet(), torch.no_grad():
            program = TS2EPConverter(script.eval(), (example,)).convert()
            gm = program.module()
    except Exception as exc:  # the converter raises many kinds; name the cause in one line
        raise UsageError(f"cannot convert the TorchScript model to a graph on input shape {tuple(input_shape)} ({_first_line(exc)})") from None
    return lift_aten(gm, name=str(getattr(script, "original_name", "") or "TorchScript"))


def export_to_module(module: torch.nn.Module, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """``module`` re-expressed in standard modules through ``torch.export`` (e.g. timm's
    ``BatchNormAct2d``, which calls ``F.batch_norm`` on its own weights, becomes
    ``BatchNorm2d`` + ``ReLU``)."""
    example = torch.zeros(2, *input_shape)
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=2)},))
            gm = program.module()
    except Exception as exc:  # export raises many kinds; name the cause in one line
        raise UsageError(f"cannot export the model to a graph on input shape {tuple(input_shape)} ({_first_line(exc)})") from None
    return lift_aten(gm, name=type(module).__name__)


def is_pt2(path: str | os.PathLike) -> bool:
    """True for a ``torch.export.save`` archive (it holds ``*/models/*.json``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/models/" in n and n.endswith(".json") for n in names) and any(n.endswith("archive_format") for n in names)


def check_pt2(path: str | os.PathLike) -> None:
    """Refuse a ``.pt2`` archive whose loading would unpickle Python objects."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        risky: list[str] = []
        for name in names:
            base = name.split("/", 1)[-1]
            if base.startswith("data/weights/") and base.endswith(".pt") or base.startswith("data/constants/") and base.endswith(".pt"):
                risky.append(f"legacy pickled payload {base}")
            if base.endswith("_config.json") and ("data/weights/" in base or "data/constants/" in base):
                config = json.loads(archive.read(name))
                for fqn, meta in (config.get("config") or {}).items():
                    if meta.get("use_pickle"):
                        risky.append(f"pickled tensor {fqn}")
                    path_name = str(meta.get("path_name", ""))
                    if path_name.startswith(("custom_obj", "opaque_obj")):
                        risky.append(f"pickled object {fqn}")
            if base.startswith("data/sample_inputs/") and base.endswith(".pt"):
                try:
                    load_weights_only(io.BytesIO(archive.read(name)))
                except Exception:
                    risky.append(f"pickled example input {base}")
    if risky:
        raise UsageError(
            f"{str(path)!r} holds pickled Python objects ({risky[0]}), and unpickling can run arbitrary code; "
            "export the model without them, or pass --trust if you trust this file"
        )


def load_pt2(path: str | os.PathLike, *, trust: bool = False) -> tuple[fx.GraphModule, tuple[int, ...] | None]:
    """Load a ``torch.export`` archive as standard modules, plus its example input's sample shape."""
    file = Path(path)
    try:
        if not trust:
            check_pt2(file)
        with _quiet():
            program = torch.export.load(str(file))
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{str(file)!r} is not a valid torch.export archive (corrupt, truncated or another format; {_first_line(exc)})") from None
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user_inputs = program.graph_signature.user_inputs
    if len(user_inputs) != 1:
        raise UsageError(f"{str(file)!r}: the exported model takes {len(user_inputs)} inputs; annsnn needs one image tensor")
    shape = None
    for node in placeholders:
        if node.name == user_inputs[0] and hasattr(node.meta.get("val"), "shape"):
            try:
                shape = tuple(int(d) for d in node.meta["val"].shape[1:])
            except (TypeError, ValueError):
                shape = None
    try:
        gm = program.module()
    except Exception as exc:
        raise UsageError(f"{str(file)!r}: the exported program cannot be run ({_first_line(exc)})") from None
    return lift_aten(gm, name="Exported"), shape
