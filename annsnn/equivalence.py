"""Check that annsnn's canonical ANN computes what the user's model computes.

Conversion works from the canonical graph (:func:`annsnn.graph.canonicalize`): BatchNorm
folded, activations made modules, modules copied per call site ... Any bug there would
make the SNN, and the "ANN" it is scored against, differ from the user's model. So the
first calibration batch runs through both, and

    max |canonical(x) - model(x)|  <=  rtol * max |model(x)|

must hold (float tolerance, relative to the output's scale). Otherwise conversion stops
with one line naming the first canonical node (in graph order) whose value differs from
the traced node it stands for (``node.meta["annsnn_origin"]``) by more than ``rtol`` of
that node's own scale; if no intermediate node differs, the output is named.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx

from .errors import UsageError
from .graph import ORIGIN, CanonicalGraph
from .training_mode import evaluating

__all__ = ["Equivalence", "check_equivalence", "DEFAULT_RTOL"]

DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class Equivalence:
    """The canonical ANN was verified equal to the user's model on ``samples`` inputs."""

    samples: int
    max_abs_deviation: float
    output_scale: float  # max |model(x)|
    rtol: float

    @property
    def relative_deviation(self) -> float:
        return self.max_abs_deviation / self.output_scale if self.output_scale > 0 else 0.0


class _Recorder(fx.Interpreter):
    """Runs a graph and keeps a copy of every tensor value, by node name."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if isinstance(out, Tensor):
            self.values[n.name] = out.detach().clone()
        return out


def _deviation(a: Tensor, b: Tensor) -> tuple[float, float]:
    if a.shape != b.shape:
        return float("inf"), 0.0
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0, float(b.double().abs().max()) if b.numel() else 0.0


@torch.no_grad()
def check_equivalence(canonical: CanonicalGraph, batch: Tensor, rtol: float = DEFAULT_RTOL) -> Equivalence:
    """Run ``batch`` through the user's model and the canonical graph; raise a one-line
    :class:`UsageError` naming the first diverging node if they differ beyond ``rtol``."""
    if canonical.reference is None:
        raise ValueError("the canonical graph does not keep its reference model")
    with evaluating(canonical.reference):  # the user's model back in its own mode afterwards
        return _check_equivalence(canonical, batch, rtol)


def _check_equivalence(canonical: CanonicalGraph, batch: Tensor, rtol: float) -> Equivalence:
    assert canonical.reference is not None
    reference = canonical.reference(batch)
    ours = canonical.module.eval()(batch)
    if not isinstance(reference, Tensor) or not isinstance(ours, Tensor):
        raise UsageError("unsupported model: it must return a single tensor")
    deviation, scale = _deviation(ours, reference)
    if deviation <= rtol * scale:
        return Equivalence(int(batch.shape[0]), deviation, scale, rtol)
    where = _first_divergence(canonical, batch, rtol)
    raise UsageError(
        f"annsnn's canonical form of the model differs from the model at {where} "
        f"(output off by {deviation:.3g}, {deviation / max(scale, 1e-30):.2g} of its scale, tolerance {rtol:g}); "
        "conversion stopped, please report this model"
    )


def _first_divergence(canonical: CanonicalGraph, batch: Tensor, rtol: float) -> str:
    assert canonical.traced is not None
    original = _Recorder(canonical.traced)
    original.run(batch)
    ours = _Recorder(canonical.module)
    ours.run(batch)
    for node in canonical.module.graph.nodes:
        origin = node.meta.get(ORIGIN)
        if origin is None or node.name not in ours.values or origin not in original.values:
            continue
        deviation, scale = _deviation(ours.values[node.name], original.values[origin])
        if deviation > rtol * scale:
            label = f"node {node.name!r}" + ("" if origin == node.name else f" (the model's {origin!r})")
            return label
    return "the output"
