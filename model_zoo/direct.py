"""Directly trained SNN baselines: a zoo architecture with SpikingJelly LIF neurons in
place of its ReLUs, trained with surrogate gradients (backpropagation through time).

SpikingJelly 2.0 (Fang et al., Science Advances 2023) provides everything a trainer
needs here: the multi-step ``LIFNode``, the ``ATan`` surrogate gradient (Fang et al.,
ICCV 2021, "Incorporating learnable membrane time constant...", arXiv:2007.05785) and
``functional.reset_net``; this module only wires them into the architecture and loops.

* Same architecture as the ANN: every ``nn.ReLU`` module becomes a ``LIFNode``
  (``tau``, ``v_threshold = 1``, hard reset to 0, ``decay_input=True``). BatchNorm and
  dropout stay; they run on the merged ``[T*B, ...]`` batch, as SpikingJelly's
  ``SeqToANNContainer`` does.
* Direct encoding: the normalized image is the input current of the first layer at every
  one of the T steps. The class score is the last layer's output averaged over T.
* The checkpoint is a plain dict of tensors and JSON-able values (``format
  "annsnn-direct-snn"``): it loads with ``torch.load(weights_only=True)``, no pickle, and
  annsnn rebuilds the network from its arch and neuron config.
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from annsnn.data import dataset_spec, load_dataset, make_loader
from annsnn.errors import UsageError
from annsnn.graph import WithInputNormalization

from . import architectures, build

__all__ = ["DirectConfig", "DirectResult", "DirectSNN", "EpochEvent", "train_direct", "direct_checkpoint", "load_direct_checkpoint", "DIRECT_FORMAT"]

DIRECT_FORMAT = "annsnn-direct-snn"


@dataclass(frozen=True)
class DirectConfig:
    arch: str
    dataset: str = "digits"
    T: int = 5
    tau: float = 2.0
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    data_root: str | None = None
    download: bool = False
    train_samples: int | None = None
    test_samples: int | None = None  # evenly spaced test images scored after each epoch (None: all)


@dataclass(frozen=True)
class EpochEvent:
    """Progress: one per training step (``epoch_done`` False) and one per finished epoch."""

    epoch: int
    step: int
    total_steps: int
    loss: float
    train_top1: float
    test_top1: float | None = None
    epoch_done: bool = False


@dataclass
class DirectResult:
    model: "DirectSNN"
    history: list[dict] = field(default_factory=list)
    test_top1: float = 0.0
    train_time_s: float = 0.0


class _MultiStep(nn.Module):
    """A multi-step SpikingJelly neuron on the merged ``[T*B, ...]`` layout."""

    def __init__(self, node: nn.Module, T: int) -> None:
        super().__init__()
        self.node = node
        self.T = T

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(self.T, -1, *x.shape[1:])
        return self.node(seq).reshape(x.shape)


class DirectSNN(nn.Module):
    """``net`` (an ANN with LIF nodes for ReLUs) run for T steps on a direct-encoded input."""

    def __init__(self, arch: str, num_classes: int, T: int, tau: float, mean: list[float], std: list[float]) -> None:
        super().__init__()
        from spikingjelly.activation_based import neuron, surrogate

        if T < 1:
            raise UsageError("--T must be at least 1")
        if tau < 1:
            raise UsageError("--tau must be at least 1 (one time step)")
        self.T = int(T)
        self.tau = float(tau)
        net = build(arch, num_classes=num_classes)
        replaced = _replace_relus(net, lambda: _MultiStep(neuron.LIFNode(tau=tau, v_threshold=1.0, v_reset=0.0, decay_input=True, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m"), T))
        if replaced == 0 or _functional_relus(build(arch, num_classes=num_classes)):
            raise UsageError(f"{arch} applies ReLU as a function; --snn needs an architecture whose ReLUs are nn.ReLU modules (e.g. lenet5, mlp_s, digits_cnn)")
        self.model = WithInputNormalization(net, mean, std)

    def forward(self, x: Tensor) -> Tensor:
        from spikingjelly.activation_based import functional

        functional.reset_net(self)
        merged = x.unsqueeze(0).expand(self.T, *x.shape).reshape(-1, *x.shape[1:])
        out = self.model(merged)
        return out.reshape(self.T, x.shape[0], *out.shape[1:]).mean(0)

    def neuron_config(self) -> dict:
        return {"type": "LIFNode", "tau": self.tau, "v_threshold": 1.0, "v_reset": 0.0, "decay_input": True}


def _replace_relus(module: nn.Module, make: Callable[[], nn.Module]) -> int:
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.ReLU:
            setattr(module, name, make())
            count += 1
        else:
            count += _replace_relus(child, make)
    return count


def _functional_relus(model: nn.Module) -> bool:
    from torch import fx

    graph = fx.symbolic_trace(model).graph
    return any(n.op in ("call_function", "call_method") and "relu" in str(getattr(n.target, "__name__", n.target)) for n in graph.nodes)


def train_direct(config: DirectConfig, on_event: Callable[[EpochEvent], None] | None = None) -> DirectResult:
    """Surrogate-gradient training (Adam, cross-entropy on the T-averaged output); seeded."""
    specs = architectures()
    if config.arch not in specs:
        raise UsageError(f"unknown architecture {config.arch!r}: run 'annsnn zoo list'")
    if config.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    ds = dataset_spec(config.dataset, config.data_root)
    spec = specs[config.arch]
    if tuple(spec.input_shape) != tuple(ds.input_shape):
        raise UsageError(f"{config.arch} expects input {spec.input_shape}, dataset {config.dataset} gives {ds.input_shape}")
    mean, std = (list(spec.normalization[0]), list(spec.normalization[1])) if spec.normalization else (list(ds.mean), list(ds.std))
    model = DirectSNN(config.arch, ds.num_classes, config.T, config.tau, mean, std)
    train_loader = make_loader(load_dataset(config.dataset, "train", config.data_root, config.download), config.batch_size, config.train_samples, shuffle=True, seed=config.seed)
    test_loader = make_loader(load_dataset(config.dataset, "test", config.data_root, config.download), 256, config.test_samples)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.CrossEntropyLoss()
    result = DirectResult(model=model)
    total = config.epochs * len(train_loader)
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        loss_sum = correct = seen = 0.0
        for step, (x, y) in enumerate(train_loader):
            opt.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += float((out.argmax(1) == y).sum())
            seen += len(y)
            if on_event is not None:
                on_event(EpochEvent(epoch + 1, epoch * len(train_loader) + step + 1, total, loss_sum / seen, correct / seen))
        result.train_time_s = time.perf_counter() - started
        test_top1 = _accuracy(model, test_loader)
        row = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_top1": correct / seen, "test_top1": test_top1}
        result.history.append(row)
        if on_event is not None:
            on_event(EpochEvent(epoch + 1, (epoch + 1) * len(train_loader), total, row["loss"], row["train_top1"], test_top1, True))
    model.eval()
    result.test_top1 = result.history[-1]["test_top1"]
    return result


@torch.no_grad()
def _accuracy(model: nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    return correct / max(total, 1)


def direct_checkpoint(config: DirectConfig, result: DirectResult) -> dict:
    """A weights-only checkpoint: tensors plus JSON-able config."""
    ds = dataset_spec(config.dataset, config.data_root)
    model = result.model
    mean = model.model.normalize.mean.tolist()
    std = model.model.normalize.std.tolist()
    return {
        "format": DIRECT_FORMAT,
        "version": 1,
        "arch": config.arch,
        "num_classes": ds.num_classes,
        "T": config.T,
        "neuron": model.neuron_config(),
        "state_dict": {k: v.detach().clone() for k, v in model.model.model.state_dict().items()},
        "dataset": config.dataset,
        "normalization": {"mean": mean, "std": std},
        "input_shape": list(ds.input_shape),
        "test_top1": result.test_top1,
        "train_time_s": result.train_time_s,
        "history": result.history,
        "config": {k: v for k, v in asdict(config).items() if k not in ("data_root",)},
    }


def load_direct_checkpoint(payload: dict) -> DirectSNN:
    """Rebuild a :class:`DirectSNN` from :func:`direct_checkpoint` output (already loaded weights_only)."""
    try:
        neuron_cfg = payload["neuron"]
        if neuron_cfg.get("type") != "LIFNode":
            raise UsageError(f"direct SNN checkpoint names an unknown neuron type {neuron_cfg.get('type')!r}")
        model = DirectSNN(payload["arch"], int(payload["num_classes"]), int(payload["T"]), float(neuron_cfg["tau"]), payload["normalization"]["mean"], payload["normalization"]["std"])
        model.model.model.load_state_dict(payload["state_dict"])
    except UsageError:
        raise
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UsageError(f"damaged direct SNN checkpoint ({type(exc).__name__})") from None
    return model.eval()
