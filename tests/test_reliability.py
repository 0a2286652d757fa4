"""Nothing lost: atomic outputs, kill-and-resume, determinism, and torch.distributed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annsnn.zoo import embedded_checkpoint

ANNSNN = [sys.executable, "-m", "annsnn"]


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["ANNSNN_HOME"] = str(tmp_path / "home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def snn_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rel")
    target = tmp / "digits.snn.pt"
    subprocess.run(ANNSNN + ["convert", str(embedded_checkpoint()), "--calib-samples", "256", "--out", str(target)], check=True, capture_output=True, env=_env(tmp), timeout=300)
    return target


def _energy(snn_file, out, env, *extra):
    return ANNSNN + ["energy", str(snn_file), "--T", "5,60", "--batch-size", "8", "--samples", "96", "--encoding", "poisson", "--seed", "7", "--json", str(out), *extra]


def test_same_inputs_give_byte_identical_json(snn_file, tmp_path):
    env = _env(tmp_path)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    subprocess.run(_energy(snn_file, a, env), check=True, capture_output=True, env=env, timeout=300)
    subprocess.run(_energy(snn_file, b, env), check=True, capture_output=True, env=env, timeout=300)
    assert a.read_bytes() == b.read_bytes()


def _long_energy(snn_file, out, env, *extra):
    """Long enough (45 batches, 200 steps) that a kill lands mid-run."""
    return ANNSNN + ["energy", str(snn_file), "--T", "5,200", "--batch-size", "8", "--encoding", "poisson", "--seed", "7", "--json", str(out), *extra]


def test_killed_run_resumes_to_the_uninterrupted_numbers(snn_file, tmp_path):
    env = _env(tmp_path)
    reference = tmp_path / "ref.json"
    subprocess.run(_long_energy(snn_file, reference, env), check=True, capture_output=True, env=env, timeout=300)
    out = tmp_path / "run.json"
    progress = out.with_name(out.name + ".progress.pt")
    proc = subprocess.Popen(_long_energy(snn_file, out, env), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not progress.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert progress.exists() and not out.exists(), "the run finished before it could be killed"
    done = subprocess.run(_long_energy(snn_file, out, env, "--resume"), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    assert not progress.exists()


def test_kill_during_write_leaves_the_previous_file_intact(snn_file, tmp_path):
    from annsnn.artifact import load_snn

    env = _env(tmp_path)
    target = tmp_path / "out.snn.pt"
    target.write_bytes(snn_file.read_bytes())
    original = target.read_bytes()
    for delay in (0.5, 1.5, 3.0, 4.5):
        proc = subprocess.Popen(ANNSNN + ["convert", str(embedded_checkpoint()), "--calib-samples", "1024", "--batch-size", "16", "--mode", "max", "--out", str(target)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = target.read_bytes()
        assert data == original or load_snn(target) is not None  # old file, or a complete new one
        original = data


def test_two_processes_with_gloo_equal_one_process(snn_file, tmp_path):
    env = _env(tmp_path)
    env["OMP_NUM_THREADS"] = "1"
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    common = ["energy", str(snn_file), "--T", "4,16", "--batch-size", "16", "--samples", "100", "--json"]
    subprocess.run(ANNSNN + common + [str(single)], check=True, capture_output=True, env=env, timeout=300)
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "annsnn"] + common + [str(double)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["samples"] == two["samples"] == 100
    assert one == two


@given(num_batches=st.integers(0, 50), size=st.integers(1, 8))
def test_shards_cover_every_batch_once(num_batches, size):
    from annsnn.distributed import shard_batches

    shards = [shard_batches(num_batches, rank, size) for rank in range(size)]
    flat = sorted(index for shard in shards for index in shard)
    assert flat == list(range(num_batches))  # no padding, no duplicates, nothing missing
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_select_batches_loads_exactly_those_batches():
    import torch
    from torch.utils.data import TensorDataset

    from annsnn.data import make_loader, select_batches

    loader = make_loader(TensorDataset(torch.arange(10.0), torch.arange(10)), batch_size=3)
    full = [x.tolist() for x, _ in loader]
    chosen = [x.tolist() for x, _ in select_batches(loader, [3, 1])]
    assert chosen == [full[3], full[1]] == [[9.0], [3.0, 4.0, 5.0]]
