"""Fine-tuning a converted SNN to its ANN's outputs (``convert --finetune-epochs E``).

After the calibration passes, the SNN's synaptic weights and biases are trained by
backpropagation through time on the calibration images, with the ANN as the teacher:

    min_W  mean_i || R(x_i; W) - a_i ||^2

where ``R`` is the SNN's readout at T = N (:class:`~annsnn.robustness.SurrogateSNN`: the
mean output over the steps after the readout delay, or the weighted sum) and ``a_i`` the
ANN's output (logits) on image ``x_i``. The spike's derivative is a surrogate (arctan,
Fang et al. 2021, as SpikingJelly's ``surrogate.ATan``); its forward is the exact step, so
the trained network runs as the twin computed it. Adam (Kingma & Ba 2015), mini-batches
in a fixed, seeded order; the calibrated per-step biases, thresholds (1) and initial
potentials stay as they are. The trained weights are copied back into the SNN's own
modules.

Only training images are used: every calibration image (``convert`` holds them all in
memory for it). One epoch costs about 3 N network evaluations per image (forward and
backward over N steps): at N = 8, about 24 ANN passes over the calibration set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .errors import UsageError
from .robustness import SurrogateSNN
from .snn import SpikingNetwork

__all__ = ["FinetuneResult", "finetune_to_ann", "TRAINED_MODULES"]

TRAINED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # whose weight and bias are trained
_ANN_BATCH = 256


@dataclass
class FinetuneResult:
    """What :func:`finetune_to_ann` did: ``loss[e]`` is epoch e's mean squared error over its
    mini-batches (as trained); ``final_loss`` the error of the trained SNN on all the images,
    measured after the last step."""

    epochs: int
    lr: float
    samples: int
    parameters: int
    loss: list[float] = field(default_factory=list)
    initial_loss: float = math.nan
    final_loss: float = math.nan
    kept: bool = True  # False: training did not lower the error, and the weights before it were restored

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "lr": self.lr, "samples": self.samples, "parameters": self.parameters,
                "loss": [x if math.isfinite(x) else None for x in self.loss], "initial_loss": self.initial_loss,
                "final_loss": self.final_loss if math.isfinite(self.final_loss) else None, "kept": self.kept}


def _readout_error(twin: SurrogateSNN, images: Tensor, targets: Tensor, batch: int) -> float:
    with torch.no_grad():
        total = sum(float(((twin(images[i : i + batch]) - targets[i : i + batch]) ** 2).sum()) for i in range(0, int(images.shape[0]), batch))
    return total / targets.numel()


def finetune_to_ann(snn: SpikingNetwork, images: Tensor, steps: int, epochs: int, lr: float = 1e-4, *, batch: int = 64, seed: int = 0) -> FinetuneResult:
    """Train the weights and biases of ``snn``'s convolutions and linear layers for
    ``epochs`` passes over ``images`` (training images, as the ANN takes them) so that its
    readout at T = ``steps`` matches the ANN's output (module docstring); in place.
    ``epochs = 0`` changes nothing. Where the trained weights do not lower the readout
    error on ``images`` (a learning rate too large, a diverged loss), the weights from
    before are restored and ``kept`` is False."""
    if epochs < 0 or not math.isfinite(lr) or lr < 0:
        raise UsageError(f"invalid fine-tuning: {epochs} epochs at learning rate {lr}: use epochs >= 0 and a learning rate >= 0")
    count = int(images.shape[0])
    with torch.no_grad():
        targets = torch.cat([snn.ann(images[i : i + _ANN_BATCH]) for i in range(0, count, _ANN_BATCH)]).detach()
    twin = SurrogateSNN(snn, steps).to(images.device).train()
    trained = {name: module for name, module in twin.runner.named_modules() if isinstance(module, TRAINED_MODULES)}
    params = [p for module in trained.values() for p in module.parameters(recurse=False)]
    result = FinetuneResult(epochs, float(lr), count, sum(p.numel() for p in params))
    result.initial_loss = _readout_error(twin, images, targets, batch)
    if epochs == 0:
        result.final_loss = result.initial_loss
        return result
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        total = 0.0
        for chunk in torch.randperm(count, generator=order).split(batch):
            x = images[chunk.to(images.device)]
            loss = ((twin(x) - targets[chunk.to(targets.device)]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * int(chunk.numel())
        result.loss.append(total / count)
    for p in params:
        p.requires_grad_(False)
    own = dict(snn.runner("direct").named_modules())  # shares its modules with the SNN's graph (and every runner)
    before = {(name, key): value.detach().clone() for name in trained for key, value in own[name].named_parameters(recurse=False)}
    with torch.no_grad():
        for name, module in trained.items():
            for key, value in module.named_parameters(recurse=False):
                getattr(own[name], key).copy_(value)
    result.final_loss = _readout_error(SurrogateSNN(snn, steps).to(images.device), images, targets, batch)
    if not result.final_loss < result.initial_loss:  # also NaN: keep the calibrated weights
        with torch.no_grad():
            for (name, key), value in before.items():
                getattr(own[name], key).copy_(value)
        result.kept = False
    return result
