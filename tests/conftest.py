"""Shared fixtures. Tests never touch the user's state: ANNSNN_HOME is a temp dir."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    return Path(os.environ.get("ANNSNN_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ANNSNN_HOME", str(tmp_path_factory.mktemp("annsnn_home")))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"shared data not found at {root} (set ANNSNN_SHARED)")
    return root


@pytest.fixture(scope="session")
def cifar_jpeg(shared) -> Path:
    path = shared / "data" / "CIFAR10-jpeg"
    if not (path / "test").is_dir():
        pytest.skip(f"CIFAR10-jpeg not found under {path}")
    return path


@pytest.fixture(scope="session")
def resnet20_weights(shared) -> Path:
    path = shared / "models" / "cifar10-resnet" / "resnet20-12fca82f.th"
    if not path.is_file():
        pytest.skip(f"ResNet-20 weights not found at {path}")
    return path


@pytest.fixture(scope="session")
def digits():
    from annsnn.data import load_dataset

    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    return train.tensors, test.tensors  # type: ignore[attr-defined]


def train_quick(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 30, lr: float = 3e-3) -> torch.nn.Module:
    """A few full-batch Adam steps: enough for a model that is clearly better than chance."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), 256):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 256]), y[i : i + 256])
            loss.backward()
            opt.step()
    return model.eval()
