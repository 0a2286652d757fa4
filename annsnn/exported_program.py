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
import re
import tokenize
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import fx

from .errors import UsageError
from .aten_lift import lift_aten
from .files import check_zip_integrity, load_weights_only

__all__ = ["torchscript_to_module", "export_to_module", "load_pt2", "check_pt2", "is_pt2", "plain_size_expression"]


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
    except (zipfile.BadZipFile, OSError, ValueError):  # ValueError: a damaged directory's undecodable names
        return False
    return any("/models/" in n and n.endswith(".json") for n in names) and any(n.endswith("archive_format") for n in names)


# What a size expression of torch.export may name: sympy's constructors (srepr form) and the
# functions torch's shape environment defines, their keyword flags, and symbols like s0 / u3.
_SYMPY_NAMES = frozenset({
    "Symbol", "Dummy", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Mod", "FloorDiv", "PythonMod", "CleanDiv",
    "CeilToInt", "FloorToInt", "TruncToInt", "RoundToInt", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "Identity", "Eq", "Ne", "Ge", "Gt", "Le", "Lt",
    "And", "Or", "Not", "Piecewise", "ExprCondPair", "True", "False", "oo", "zoo", "nan", "true", "false", "S", "Half", "One", "Zero", "NegativeOne",
    "Infinity", "NegativeInfinity", "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "zero", "nonzero", "even", "odd",
    "precision",
})
_SYMBOL = re.compile(r"[a-z]{1,3}\d+")
_SYMBOL_TEXT = re.compile(r"'[a-z]{1,3}\d+'|\"[a-z]{1,3}\d+\"")
_SYMPY_OPS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "//", "%", "**", "<", ">", "<=", ">=", "==", "!=", "&", "|", "~"})


def plain_size_expression(text: str) -> bool:
    """Whether ``text`` (a symbolic size in a ``.pt2``'s graph, which ``torch.export.load``
    hands to ``sympy.sympify``, i.e. Python ``eval``) is made only of sympy constructors,
    symbols, numbers and arithmetic: no attribute access, no other name, no other string."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    for token in tokens:
        if token.type == tokenize.NAME:
            if token.string not in _SYMPY_NAMES and not _SYMBOL.fullmatch(token.string):
                return False
        elif token.type == tokenize.STRING:
            if not _SYMBOL_TEXT.fullmatch(token.string):
                return False
        elif token.type == tokenize.OP:
            if token.string not in _SYMPY_OPS:
                return False
        elif token.type not in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            return False
    return True


def _size_expressions(value: object) -> Iterator[str]:
    """Every ``expr_str`` in a ``.pt2`` graph's JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "expr_str":
                yield item if isinstance(item, str) else repr(item)
            else:
                yield from _size_expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _size_expressions(item)


def check_pt2(path: str | os.PathLike) -> None:
    """Refuse a ``.pt2`` archive whose loading would unpickle Python objects, or evaluate a
    size expression that is not plain sympy (:func:`plain_size_expression`)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        risky: list[str] = []
        for name in names:
            base = name.split("/", 1)[-1]
            if base.startswith("models/") and base.endswith(".json"):
                try:
                    program = json.loads(archive.read(name))
                except ValueError:
                    continue  # torch.export.load fails on it: 'not a valid torch.export archive'
                odd = next((text for text in _size_expressions(program) if not plain_size_expression(text)), None)
                if odd is not None:
                    raise UsageError(f"{str(path)!r} holds a size expression that loading would evaluate as Python code ({odd[:60]!r}), "
                                     "which torch.export never writes; pass --trust only if you trust this file")
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
        check_zip_integrity(file)  # torch.export.load reads weights without checking their CRC
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
