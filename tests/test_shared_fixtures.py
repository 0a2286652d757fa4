"""The shared-data fixtures: a set ANNSNN_SHARED that is missing or incomplete fails, never skips."""
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, locate_shared


def _tree(root: Path, *paths: str) -> Path:
    for rel in paths:
        target = root / rel
        if rel.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"x")
    return root


def test_set_but_missing_is_a_failure(tmp_path):
    found = locate_shared("data/", env={"ANNSNN_SHARED": str(tmp_path / "nope")}, default=tmp_path / "default")
    assert found.path is None and found.strict and "ANNSNN_SHARED" in found.problem and "nope" in found.problem


def test_set_but_incomplete_is_a_failure(tmp_path):
    root = _tree(tmp_path / "s", "data/MNIST/")
    assert locate_shared("data/", env={"ANNSNN_SHARED": str(root)}, default=tmp_path).path == root / "data"
    found = locate_shared("data/CIFAR10-jpeg/test/", env={"ANNSNN_SHARED": str(root)}, default=tmp_path)
    assert found.path is None and found.strict and "CIFAR10-jpeg" in found.problem
    found = locate_shared("models/cifar10-resnet/resnet20-12fca82f.th", env={"ANNSNN_SHARED": str(root)}, default=tmp_path)
    assert found.path is None and found.strict


def test_a_folder_where_a_file_is_expected_is_incomplete(tmp_path):
    root = _tree(tmp_path / "s", "models/cifar10-resnet/resnet20-12fca82f.th/")
    found = locate_shared("models/cifar10-resnet/resnet20-12fca82f.th", env={"ANNSNN_SHARED": str(root)}, default=tmp_path)
    assert found.path is None and found.strict


def test_unset_and_no_default_folder_skips_with_a_reason(tmp_path):
    for env in ({}, {"ANNSNN_SHARED": ""}):
        found = locate_shared("data/", env=env, default=tmp_path / "absent")
        assert found.path is None and not found.strict and "ANNSNN_SHARED" in found.problem


def test_unset_uses_the_default_folder_and_is_then_strict(tmp_path):
    root = _tree(tmp_path / "shared", "data/MNIST/")
    assert locate_shared("data/", env={}, default=root).path == root / "data"
    found = locate_shared("data/CIFAR10-jpeg/test/", env={}, default=root)
    assert found.path is None and found.strict  # ../shared exists but lacks a part: fail


def test_pytest_fails_a_shared_test_when_the_folder_is_missing(tmp_path):
    env = dict(os.environ, ANNSNN_SHARED=str(tmp_path / "missing"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_shared.py::test_mnist_loads_from_shared"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 error" in done.stdout or "1 failed" in done.stdout, done.stdout[-2000:]
    assert "skipped" not in done.stdout
