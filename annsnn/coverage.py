"""Does a model go through annsnn end to end? convert -> simulate -> count -> save -> reload.

:func:`check_model` runs every stage on random inputs and returns a :class:`CoverageResult`:
which stages passed, the first error, how many IF layers and analog ops the SNN has, and the
share of the dense work that became spike-driven (see :class:`~annsnn.counting.WorkSplit`).
A model is converted fully spiking first; only if that is refused is ``--hybrid`` tried.
"""
from __future__ import annotations

import gc
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .analog import AnalogOp
from .artifact import load_snn, save_snn
from .convert import ConversionOptions
from .counting import SnnCounter
from .errors import UsageError
from .modes import parse_mode
from .pipeline import ann_to_snn
from .simulate import simulate
from .training_mode import evaluating

__all__ = ["CoverageResult", "check_model", "STAGES"]

STAGES = ("convert", "simulate", "count", "save")


@dataclass
class CoverageResult:
    name: str
    input_shape: list[int]
    hybrid: bool = False
    status: dict[str, str] = field(default_factory=lambda: {s: "not run" for s in STAGES})  # ok | failed | not run
    error: str = ""
    spiking_error: str = ""  # why the fully spiking conversion was refused (hybrid only)
    if_layers: int = 0
    analog_ops: dict[str, int] = field(default_factory=dict)  # op -> how many
    spike_driven_share: float | None = None  # of the dense work per step
    max_abs_error: float | None = None  # |SNN/T - ANN| at T, random weights and inputs
    T: int = 0

    @property
    def ok(self) -> bool:
        return all(v == "ok" for v in self.status.values())

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


@torch.no_grad()
def check_model(name: str, model: nn.Module, input_shape: tuple[int, ...], *, T: int = 4, batch: int = 2, seed: int = 0) -> CoverageResult:
    """Run ``model`` (random weights are fine) through every stage on ``batch`` random inputs.

    Memory: the ANN's output is taken before conversion and the SNN is dropped before it is
    reloaded, so a caller that keeps no reference to ``model`` holds at most the user's
    model and the SNN (its graph and reference ANN) at a time; the largest torchvision
    classifiers (600M parameters) fit a few GB."""
    with evaluating(model):  # the user's model back in its own mode afterwards
        return _check_model(name, model, input_shape, T=T, batch=batch, seed=seed)


def _check_model(name: str, model: nn.Module, input_shape: tuple[int, ...], *, T: int, batch: int, seed: int) -> CoverageResult:
    result = CoverageResult(name=name, input_shape=list(input_shape), T=T)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *input_shape, generator=gen)
    snn = None
    ann: torch.Tensor | None = None
    try:
        ann = model(x)
    except Exception as exc:  # the ANN itself does not run on this input
        result.status["convert"] = "failed"
        result.error = "the ANN does not run: " + _one_line(exc)
        return result
    for hybrid in (False, True):
        try:
            options = ConversionOptions.plain(mode=parse_mode("99.9"), hybrid=hybrid)
            snn, _ = ann_to_snn(model, [x], input_shape=tuple(input_shape), options=options)
            result.hybrid = hybrid
            break
        except (UsageError, Exception) as exc:  # noqa: B014 - record any failure, named
            if not hybrid:
                result.spiking_error = _one_line(exc)
            else:
                result.error = _one_line(exc)
        gc.collect()  # a refused attempt's graph copy sits in reference cycles (fx graph <-> module)
    del model
    gc.collect()
    if snn is None:
        result.status["convert"] = "failed"
        return result
    result.status["convert"] = "ok"
    result.if_layers = len(snn.neuron_layers())
    result.analog_ops = dict(Counter(m.target for m in snn.graph.modules() if isinstance(m, AnalogOp)))
    stage = "simulate"
    try:
        out = simulate(snn, x, T).outputs[T]
        result.max_abs_error = float((out / T - ann).abs().max())
        result.status["simulate"] = "ok"
        stage = "count"
        counter = SnnCounter(snn, "direct", T)
        counter.attach(batch)
        try:
            simulate(snn, x, T, on_chunk=counter.on_chunk)
        finally:
            counter.detach()
        if counter.unsupported:
            raise UsageError("cannot count " + ", ".join(counter.unsupported))
        split = counter.work_split()
        result.spike_driven_share = 1.0 - split.analog_share
        result.status["count"] = "ok"
        del counter
        stage = "save"
        expected = simulate(snn, x, 2).outputs[2]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "m.snn.pt"
            save_snn(snn, path)
            snn = None
            gc.collect()
            loaded = load_snn(path)
        again = simulate(loaded, x, 2).outputs[2]
        if not torch.equal(again, expected):
            raise UsageError("the reloaded SNN's output differs")
        result.status["save"] = "ok"
    except Exception as exc:  # a stage failed: record it, named
        result.status[stage] = "failed"
        result.error = _one_line(exc)
    return result
