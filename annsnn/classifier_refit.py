"""Refit the SNN's classifier to the ANN's logits, in closed form, on calibration images.

When the network's output is a linear layer's (a classifier ``y = A x + c``), the SNN's
readout at T = N is linear in that layer's per-step inputs ``x_t``. With the readout's step
weights ``omega_t`` (1 after the readout delay and 0 before it; the fitted weights of
``--readout weighted``):

    R = sum_t omega_t (A x_t + c) = A F + c m,    F = sum_t omega_t x_t,    m = sum_t omega_t.

Each output step approximates the ANN's logits ``a``, so the ideal plain sum is ``m a``;
fitted weights were chosen so that their sum approximates ``a`` itself, so there the ideal
readout is ``a`` (below, read ``m a`` as ``a``; the bias column keeps ``m``). The
classifier is refitted by ridge least squares toward the layer as converted (A_0, c_0):

    min_{A, c}  sum_i || A F_i + c m - m a_i ||^2  +  lam || A - A_0 ||_F^2,
    lam = ridge * trace(sum_i F_i F_i^T) / features,

in float64, from the normal equations (one solve with ``features + 1`` unknowns per class).
``ridge`` is the value of :data:`RIDGE_GRID` with the least leave-one-out squared error on
the fit images (closed form for ridge regression). It matters where the classifier is
wide: a MobileNetV2's has 1,280 inputs, more unknowns per class than 1,024 fit images.
The ridge term pulls the fit toward (A_0, c_0), so a feature that never fired keeps its
converted weights. The squared error on the fit images cannot rise: the objective at the
solution is at most its value at (A_0, c_0), which is that layer's plain squared error.

Li et al. 2021 (arXiv:2106.06984) calibrate weights as well as biases, layer by layer by
gradient descent. For the classifier the least-squares fit is exact and costs one
simulation of the fit images. It helps most where the readout sums every step
(``--target nir``): the classifier learns the early steps' transient, which a readout
delay would otherwise leave out (docs/low-latency.md). The refitted layer is plain
weights, so NIR takes it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import UsageError
from .simulate import readout_start, simulate
from .snn import SpikingNetwork

__all__ = ["ClassifierRefit", "RIDGE_GRID", "classifier_name", "classifier_of", "refit_classifier", "ridge_refit", "leave_one_out_error"]

RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # ridge = lam / (sum of squared features per feature); the one with the least leave-one-out error is used
_BATCH = 128  # images per simulation while the features are read


@dataclass(frozen=True)
class ClassifierRefit:
    """What :func:`refit_classifier` did: the layer, the fit images and latency, and the
    readout's squared error against ``m a`` (mean over images of the summed square over
    classes) and agreement with the ANN's class on those images, before and after."""

    layer: str
    samples: int
    T: int
    ridge: float  # the one chosen
    leave_one_out: dict[float, float]  # ridge -> leave-one-out squared error on the fit images
    mse_before: float
    mse_after: float
    agreement_before: float
    agreement_after: float

    def to_dict(self) -> dict:
        return {"layer": self.layer, "samples": self.samples, "T": self.T, "ridge": self.ridge, "leave_one_out": {f"{k:g}": v for k, v in self.leave_one_out.items()}, "mse_before": self.mse_before, "mse_after": self.mse_after,
                "agreement_before": self.agreement_before, "agreement_after": self.agreement_after}


def classifier_name(snn: SpikingNetwork) -> str | None:
    """The name of the linear layer whose output is the network's output; None if the
    output is anything else (a neuron layer, a convolution, an op after the last linear
    layer): the readout is then not linear in one layer's input."""
    gm = snn.graph
    output = next(n for n in gm.graph.nodes if n.op == "output")
    source = output.args[0]
    if isinstance(source, torch.fx.Node) and source.op == "call_module" and isinstance(gm.get_submodule(str(source.target)), nn.Linear):
        return str(source.target)
    return None


def classifier_of(snn: SpikingNetwork) -> tuple[str, nn.Linear]:
    """:func:`classifier_name` and the layer; raises :class:`UsageError` if there is none."""
    name = classifier_name(snn)
    if name is not None:
        return name, snn.graph.get_submodule(name)  # type: ignore[return-value]
    raise UsageError("--refit-classifier refits the layer that computes the network's output, and this network's output is not a linear layer's: leave --refit-classifier out")


def ridge_refit(features: Tensor, ones: float, target: Tensor, weight: Tensor, bias: Tensor, ridge: float) -> tuple[Tensor, Tensor]:
    """The module docstring's fit for one ``ridge``: ``features`` F [n, in], ``ones`` m,
    ``target`` m a [n, out], the converted ``weight`` A_0 [out, in] and ``bias`` c_0 [out].
    Returns (A, c) in float64."""
    X, residual, penalty = _system(features, ones, target, weight, bias, ridge)
    delta = torch.linalg.solve(X.T @ X + torch.diag(penalty), X.T @ residual).T  # [out, in + 1]: the change from (A_0, c_0)
    width = X.shape[1] - 1
    return weight.double() + delta[:, :width], bias.double() + delta[:, width]


def leave_one_out_error(features: Tensor, ones: float, target: Tensor, weight: Tensor, bias: Tensor, ridge: float) -> float:
    """Mean over images of the squared error (summed over classes) that the fit on all the
    other images makes on image i: for a ridge fit, ``e_i = r_i / (1 - h_ii)`` with r_i the
    fit's residual and ``h_ii = x_i^T (X^T X + Lambda)^-1 x_i`` (Allen 1974), exact without refitting."""
    X, residual, penalty = _system(features, ones, target, weight, bias, ridge)
    inverse_xt = torch.linalg.solve(X.T @ X + torch.diag(penalty), X.T)  # [in + 1, n]
    fitted = X @ (inverse_xt @ residual)
    leverage = (X * inverse_xt.T).sum(1)
    loo = (residual - fitted) / (1.0 - leverage)[:, None]
    return float((loo**2).sum(1).mean())


def _system(features: Tensor, ones: float, target: Tensor, weight: Tensor, bias: Tensor, ridge: float) -> tuple[Tensor, Tensor, Tensor]:
    """The fit as a ridge regression toward zero: rows ``[F_i, m]``, the residual of the
    converted layer ``m a_i - (A_0 F_i + c_0 m)``, and the penalty per unknown (0 for the bias)."""
    F = features.double()
    n, width = F.shape
    X = torch.cat([F, torch.full((n, 1), float(ones), dtype=torch.float64, device=F.device)], 1)
    residual = target.double() - X @ torch.cat([weight.double(), bias.double()[:, None]], 1).T
    penalty = torch.full((width + 1,), ridge * float((F * F).sum()) / max(width, 1), dtype=torch.float64, device=F.device)
    penalty[width] = 0.0  # the bias is not pulled
    return X, residual, penalty


def _readout_weights(T: int, readout_delay: int, readout_weights: tuple[float, ...]) -> Tensor:
    """omega_1..omega_T: the fitted weights, or 0 for the steps before the delay and 1 after."""
    if readout_weights:
        return torch.tensor(readout_weights, dtype=torch.float64)
    start = readout_start(readout_delay, T, T)
    return torch.tensor([0.0] * start + [1.0] * (T - start), dtype=torch.float64)


@torch.no_grad()
def refit_classifier(snn: SpikingNetwork, images: Tensor, T: int, *, readout_delay: int = 0, readout_weights: tuple[float, ...] = (), ridges: tuple[float, ...] = RIDGE_GRID) -> ClassifierRefit:
    """Refit ``snn``'s classifier (:func:`classifier_of`) in place to the ANN's logits on
    ``images`` at T steps, for the readout that sums the output steps after
    ``readout_delay`` (or with ``readout_weights``, one per step). One simulation of the
    images (direct input), in batches; the ANN is ``snn.ann``. The ridge is the one of
    ``ridges`` with the least leave-one-out error."""
    if not ridges or any(r <= 0 for r in ridges):
        raise UsageError(f"ridges must be positive, got {ridges!r}")
    if readout_weights and len(readout_weights) != T:
        raise UsageError(f"{len(readout_weights)} readout weights for T={T}: one per step is needed")
    name, layer = classifier_of(snn)  # the runners share the graph's modules: simulate reads this layer
    omega = _readout_weights(T, readout_delay, readout_weights)
    ones = float(omega.sum())
    parts: list[Tensor] = []
    logits: list[Tensor] = []
    for start in range(0, int(images.shape[0]), _BATCH):
        x = images[start : start + _BATCH]
        steps: list[Tensor] = []

        def read(module: nn.Module, args: tuple) -> None:
            if args[0].dim() != 2:  # [k B, features]: a classifier applied per position is not one readout per image
                raise UsageError(f"--refit-classifier: {name} reads a {args[0].dim()}-D input, not one feature vector per image and step; leave it out with --no-refit-classifier")
            steps.append(args[0].reshape(-1, x.shape[0], args[0].shape[-1]).double())  # noqa: B023

        handle = layer.register_forward_pre_hook(read)
        try:
            simulate(snn, x, T, readout_delay=readout_delay)
        finally:
            handle.remove()
        per_step = torch.cat(steps)  # [T, B, in]
        parts.append(torch.einsum("tbf,t->bf", per_step, omega.to(per_step.device)))
        logits.append(snn.ann(x).double())
    F, ann = torch.cat(parts), torch.cat(logits)
    before = F @ layer.weight.double().T + ones * _bias(layer).double()  # the readout as converted (R = A_0 F + c_0 m)
    target = ann if readout_weights else ones * ann  # fitted weights already sum the steps to a; a plain sum of m steps is m a
    weight, bias = layer.weight.detach(), _bias(layer)
    loo = {r: leave_one_out_error(F, ones, target, weight, bias, r) for r in ridges}
    ridge = min(ridges, key=lambda r: (loo[r], r))
    A, c = ridge_refit(F, ones, target, weight, bias, ridge)
    after = F @ A.T + ones * c
    classes = ann.argmax(1)
    result = ClassifierRefit(layer=name, samples=int(F.shape[0]), T=T, ridge=ridge, leave_one_out=loo,
                             mse_before=float(((before - target) ** 2).sum(1).mean()), mse_after=float(((after - target) ** 2).sum(1).mean()),
                             agreement_before=float((before.argmax(1) == classes).double().mean()), agreement_after=float((after.argmax(1) == classes).double().mean()))
    layer.weight.copy_(A.to(layer.weight.dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(layer.out_features, dtype=layer.weight.dtype, device=layer.weight.device), requires_grad=False)
    layer.bias.copy_(c.to(layer.bias.dtype))
    return result


def _bias(layer: nn.Linear) -> Tensor:
    return layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features, dtype=layer.weight.dtype, device=layer.weight.device)
