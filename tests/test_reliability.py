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
    subprocess.run(ANNSNN + ["convert", str(embedded_checkpoint()), "--calib-samples", "512", "--out", str(target)], check=True, capture_output=True, env=_env(tmp), timeout=300)
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


@pytest.fixture(scope="module")
def small_snn_file(tmp_path_factory):
    """A digits SNN converted in-process (fast), for the interrupted-write tests."""
    import torch

    from annsnn.artifact import save_snn
    from annsnn.io import load_model
    from annsnn.pipeline import ann_to_snn

    torch.manual_seed(0)
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [torch.rand(32, 1, 8, 8)], input_shape=(1, 8, 8), meta={"dataset": {"name": "digits"}})
    target = tmp_path_factory.mktemp("small") / "small.snn.pt"
    save_snn(snn, target)
    return target


def _half_then(exc: BaseException):
    """A serializer that writes the first half of the real bytes, then is interrupted."""
    import io

    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(f, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
        raise exc

    return save


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["ctrl-c", "disk-full"])
def test_a_write_interrupted_halfway_leaves_the_old_file_and_no_temporary(small_snn_file, tmp_path, monkeypatch, interrupt):
    import torch

    from annsnn.artifact import load_snn, save_snn

    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "model.snn.pt"
    target.write_bytes(small_snn_file.read_bytes())
    original = target.read_bytes()
    snn = load_snn(target)
    monkeypatch.setattr(torch, "save", _half_then(interrupt))
    with pytest.raises(type(interrupt)):
        save_snn(snn, target)
    assert target.read_bytes() == original
    assert sorted(p.name for p in folder.iterdir()) == ["model.snn.pt"]  # no temporary left


def test_a_json_write_interrupted_halfway_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from annsnn.files import write_json

    target = tmp_path / "r.json"
    write_json(target, {"old": 1})
    original = target.read_bytes()
    real = Path.write_text

    def half(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half)
    with pytest.raises(KeyboardInterrupt):
        write_json(target, {"new": list(range(100))})
    assert target.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


_BLOCKED_WRITER = """
import io, sys, time, torch
from pathlib import Path
from annsnn.artifact import load_snn, save_snn
source, target, ready = sys.argv[1:4]
snn = load_snn(source)
real_save = torch.save
def save(obj, f, *a, **k):
    buffer = io.BytesIO(); real_save(obj, buffer)
    data = buffer.getvalue()
    with open(f, "wb") as handle:
        handle.write(data[: len(data) // 2]); handle.flush()
    Path(ready).touch()
    time.sleep(600)  # killed here, inside the write
torch.save = save
save_snn(snn, target)
"""


def test_a_process_killed_inside_the_write_leaves_the_old_file(small_snn_file, tmp_path):
    from annsnn.artifact import load_snn

    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "model.snn.pt"
    target.write_bytes(small_snn_file.read_bytes())
    original = target.read_bytes()
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_WRITER, str(small_snn_file), str(target), str(ready)], env=_env(tmp_path))
    deadline = time.time() + 120
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ready.exists(), "the writer never reached the write"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == original and load_snn(target) is not None
    # a SIGKILL leaves no chance to clean up: the half-written bytes are only in a hidden temporary
    leftovers = [p.name for p in folder.iterdir() if p.name != "model.snn.pt"]
    assert all(name.startswith(".model.snn.pt.") and name.endswith(".tmp") for name in leftovers), leftovers


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


@pytest.mark.parametrize("change", ["split", "snn file replaced", "chunk"])
def test_cli_resume_never_merges_two_different_runs(small_snn_file, tmp_path, monkeypatch, capsys, change):
    """A run killed after one batch, resumed with something that changes the numbers: the CLI
    starts afresh (one note) and gives exactly the numbers of a fresh run."""
    import json as _json

    import torch

    import annsnn.analyzer as analyzer_module
    from annsnn.artifact import save_snn
    from annsnn.cli.main import main
    from annsnn.io import load_model
    from annsnn.modes import parse_mode
    from annsnn.convert import ConversionOptions
    from annsnn.pipeline import ann_to_snn

    def cli(*args):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr().err

    snn_path = tmp_path / "m.snn.pt"
    snn_path.write_bytes(small_snn_file.read_bytes())
    out = tmp_path / "r.json"
    common = ["evaluate", str(snn_path), "--T", "2,3", "--samples", "24", "--batch-size", "8", "--json", str(out)]
    real_run = analyzer_module.Analyzer.run
    calls = []

    def run_then_die(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(analyzer_module.Analyzer, "run", run_then_die)
    code, err = cli(*common)
    assert code == 130 and out.with_name(out.name + ".progress.pt").is_file(), err
    monkeypatch.setattr(analyzer_module.Analyzer, "run", real_run)
    extra = []
    if change == "split":
        extra = ["--split", "train"]
    elif change == "chunk":
        extra = ["--chunk", "1"]
    else:
        torch.manual_seed(1)
        other, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [torch.rand(32, 1, 8, 8)], input_shape=(1, 8, 8), options=ConversionOptions(mode=parse_mode("max")), meta={"dataset": {"name": "digits"}})
        save_snn(other, snn_path)
    code, err = cli(*common, *extra, "--resume")
    assert code == 0, err
    assert "resuming" not in err and "different run" in err
    resumed = _json.loads(out.read_text())
    fresh_out = tmp_path / "fresh.json"
    code, err = cli(*common[:-1], str(fresh_out), *extra)
    assert code == 0, err
    fresh = _json.loads(fresh_out.read_text())
    assert {k: v for k, v in resumed.items() if k != "snn"} == {k: v for k, v in fresh.items() if k != "snn"}
