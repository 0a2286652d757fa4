"""Shared fixtures. Tests never touch the user's state: ANNSNN_HOME is a temp dir.

Real data: with ``ANNSNN_SHARED`` set (CI, ``make test``), a missing or incomplete folder
fails the tests that need it; unset and without ``../shared``, they skip with a reason.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SharedLookup:
    """Where a part of the shared data is; else why not, and whether that must fail the test."""

    path: Path | None
    problem: str = ""
    strict: bool = False  # True: the data was promised (ANNSNN_SHARED set, or ../shared exists)


def locate_shared(relative: str, *, env: Mapping[str, str] = os.environ, default: Path = REPO.parent / "shared") -> SharedLookup:
    """Find ``relative`` (a folder if it ends in '/') under the shared data root.

    ``ANNSNN_SHARED`` set (non-empty): the root is promised, so a missing root or part is a
    failure. Unset: ``../shared`` is used when it exists (and is then held to the same rule);
    when it does not exist the test is skipped with a reason.
    """
    explicit = env.get("ANNSNN_SHARED", "")
    root = Path(explicit) if explicit else default
    want_dir = relative.endswith("/")
    target = root / relative.rstrip("/")
    if (target.is_dir() if want_dir else target.is_file()):
        return SharedLookup(target)
    source = f"ANNSNN_SHARED={explicit}" if explicit else f"the default {root}"
    if not explicit and not root.is_dir():
        return SharedLookup(None, f"shared data not found at {root} (set ANNSNN_SHARED to run these tests)")
    if not root.is_dir():
        return SharedLookup(None, f"{source}: the folder does not exist", strict=True)
    kind = "folder" if want_dir else "file"
    return SharedLookup(None, f"{source} is incomplete: {kind} {target} is missing", strict=True)


def _need_shared(relative: str) -> Path:
    found = locate_shared(relative)
    if found.path is not None:
        return found.path
    if found.strict:
        pytest.fail(found.problem, pytrace=False)
    pytest.skip(found.problem)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ANNSNN_HOME", str(tmp_path_factory.mktemp("annsnn_home")))
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared() -> Path:
    return _need_shared("data/").parent


@pytest.fixture(scope="session")
def cifar_jpeg(shared) -> Path:
    _need_shared("data/CIFAR10-jpeg/train/")
    return _need_shared("data/CIFAR10-jpeg/test/").parent


@pytest.fixture(scope="session")
def resnet20_weights(shared) -> Path:
    return _need_shared("models/cifar10-resnet/resnet20-12fca82f.th")


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


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``annsnn ARGS`` in-process: (exit code, stdout, stderr)."""
    from annsnn.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_headings(stdout: str) -> list[list[str]]:
    """The column headings of every rich table in ``stdout``: the header rows (between the
    ``┏`` and ``┡`` rules) split at ``┃`` and joined per column, so a heading that wraps
    over lines ("recall" / "macro") reads as one ("recall macro")."""
    tables: list[list[str]] = []
    rows: list[list[str]] | None = None
    for line in stdout.splitlines():
        if line.startswith("┏"):
            rows = []
        elif line.startswith("┡") and rows is not None:
            columns = zip(*rows) if rows else ()
            tables.append([" ".join(part for part in column if part) for column in columns])
            rows = None
        elif rows is not None and line.startswith("┃"):
            rows.append([cell.strip() for cell in line.strip().strip("┃").split("┃")])
    return tables


@pytest.fixture(scope="module")
def cnn_and_data():
    """The bundled, trained digits CNN behind its input normalization (no training in the
    test), 512 training images for calibration and 256 held-out training images."""
    from torch import nn

    from annsnn.data import load_dataset
    from annsnn.layers import Normalize
    from annsnn.model_files import load_model
    from annsnn.zoo import embedded_checkpoint

    loaded = load_model(embedded_checkpoint())
    norm = loaded.record["normalization"]
    model = nn.Sequential(Normalize(norm["mean"], norm["std"]), loaded.module.eval())
    (xtr, _) = load_dataset("digits", "train").tensors  # type: ignore[attr-defined]
    return model.eval(), xtr[:512], xtr[512:768]


class SmallResidualNet(torch.nn.Module):
    """conv -> ReLU -> conv, added to its input, ReLU -> linear: the smallest residual block (1x8x8 in)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.b = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.head(torch.flatten(torch.relu(self.b(h) + h), 1))


@pytest.fixture
def small_residual_net() -> SmallResidualNet:
    """A :class:`SmallResidualNet` with the weights of ``torch.manual_seed(0)``, in eval mode."""
    torch.manual_seed(0)
    return SmallResidualNet().eval()
