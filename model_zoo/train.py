"""Train a zoo architecture and write a checkpoint that ``annsnn convert`` accepts.

The checkpoint is a plain dict (loads with ``torch.load(weights_only=True)``)::

    {"format": "annsnn-checkpoint", "version": 1, "arch": ..., "num_classes": ...,
     "state_dict": ..., "dataset": ..., "normalization": {"mean": [...], "std": [...]},
     "input_shape": [...], "test_top1": ..., "epochs": ..., "seed": ...}
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from annsnn.data import dataset_spec, load_dataset, make_loader
from annsnn.errors import UsageError
from annsnn.graph import WithInputNormalization

from . import build, architectures

__all__ = ["TrainConfig", "TrainResult", "train", "checkpoint_dict", "accuracy"]


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    dataset: str = "digits"
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    optimizer: Literal["adam", "sgd"] = "adam"
    data_root: str | None = None
    download: bool = False
    train_samples: int | None = None
    device: str = "cpu"  # where training runs (cpu, cuda, cuda:N); the model comes back on the CPU


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)  # per epoch: loss, train_top1, test_top1
    test_top1: float = 0.0
    normalization: tuple[list[float], list[float]] = ((), ())  # type: ignore[assignment]


def accuracy(model: nn.Module, loader, device: torch.device | str = "cpu") -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += int(y.numel())
    return correct / max(total, 1)


def train(config: TrainConfig, on_step: Callable[[int, int, float, float], None] | None = None) -> TrainResult:
    """Deterministic training (seeded torch, numpy, random; single-threaded data order)."""
    if config.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    specs = architectures()
    if config.arch not in specs:
        raise UsageError(f"unknown architecture {config.arch!r}: run 'annsnn zoo list'")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    ds_spec = dataset_spec(config.dataset, config.data_root)
    arch_spec = specs[config.arch]
    if tuple(arch_spec.input_shape) != tuple(ds_spec.input_shape):
        raise UsageError(f"{config.arch} expects input {arch_spec.input_shape}, dataset {config.dataset} gives {ds_spec.input_shape}")
    mean, std = (list(arch_spec.normalization[0]), list(arch_spec.normalization[1])) if arch_spec.normalization else (list(ds_spec.mean), list(ds_spec.std))
    net = build(config.arch, num_classes=ds_spec.num_classes)
    device = torch.device(config.device)
    model = WithInputNormalization(net, mean, std).to(device)
    train_set = load_dataset(config.dataset, "train", config.data_root, config.download)
    test_set = load_dataset(config.dataset, "test", config.data_root, config.download)
    train_loader = make_loader(train_set, config.batch_size, config.train_samples, shuffle=True, seed=config.seed)
    test_loader = make_loader(test_set, 256)
    if config.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    elif config.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, weight_decay=5e-4)
    else:
        raise UsageError(f"unknown optimizer {config.optimizer!r}: use adam or sgd")
    loss_fn = nn.CrossEntropyLoss()
    result = TrainResult(model=net, normalization=(mean, std))
    steps_per_epoch = len(train_loader)
    for epoch in range(config.epochs):
        model.train()
        total_loss = correct = seen = 0.0
        for step, (x, y) in enumerate(train_loader):
            opt.zero_grad()
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(y)
            correct += float((out.argmax(1) == y).sum())
            seen += len(y)
            if on_step is not None:
                on_step(epoch * steps_per_epoch + step + 1, config.epochs * steps_per_epoch, total_loss / seen, correct / seen)
        test_top1 = accuracy(model, test_loader, device)
        result.history.append({"epoch": epoch + 1, "loss": total_loss / seen, "train_top1": correct / seen, "test_top1": test_top1})
    model.eval().to("cpu")
    result.test_top1 = result.history[-1]["test_top1"]
    return result


def checkpoint_dict(config: TrainConfig, result: TrainResult) -> dict:
    spec = dataset_spec(config.dataset, config.data_root)
    return {
        "format": "annsnn-checkpoint",
        "version": 1,
        "arch": config.arch,
        "num_classes": spec.num_classes,
        "state_dict": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
        "dataset": config.dataset,
        "normalization": {"mean": list(result.normalization[0]), "std": list(result.normalization[1])},
        "input_shape": list(spec.input_shape),
        "test_top1": result.test_top1,
        "epochs": config.epochs,
        "seed": config.seed,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "batch_size": config.batch_size,
    }
