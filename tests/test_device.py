"""--device for calibration and training (issue 24 item 1).

Every calibration pass runs on the requested device. On a CPU-only machine the plumbing is
checked by running the whole default pipeline with torch's default device set to ``meta``:
a tensor created without an explicit device (or one not derived from the batches) would land
on ``meta`` and the conversion would fail or differ. With a GPU, the same tests run on it
and compare with the CPU."""
from __future__ import annotations

import pytest
import torch

import annsnn.pipeline as pipeline
from annsnn.convert import ConversionOptions
from annsnn.data import load_dataset
from annsnn.model_files import load_model
from annsnn.zoo import embedded_checkpoint

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
METHODS = [("threshold+step-bias", "linear", "auto"), ("threshold+step-bias", "quantile", 0), ("threshold+bias", None, "auto"), ("step-bias", None, 0), ("none", None, 0)]
# GPU vs CPU: convolutions sum in another order (TF32 off), so an activation on a histogram bin
# edge can land in the next bin; the SNN's tensors then differ by at most this, relatively
GPU_RTOL = 1e-3


def _inputs():
    return load_model(embedded_checkpoint()).module, load_dataset("digits", "train").tensors[0]


def _convert(method: str, solver: str | None, delay, device: str, inputs=None):
    model, xtr = inputs or _inputs()
    options = ConversionOptions.calibrated(method, 8 if method != "none" else None, mode=None, channel_wise=None, percentile_of="all", v_init=0.5, maxpool="spiking",
                                           hybrid=False, bias_samples=64 if method not in ("none", "threshold") else None, step_solver=solver, threshold_scale=None, readout_delay=delay)
    snn, _ = pipeline.ann_to_snn(model, [xtr[:64], xtr[64:160]], input_shape=(1, 8, 8), options=options, normalization=([0.3054], [0.3761]), device=device)
    return snn


@pytest.mark.parametrize("method,solver,delay", METHODS)
def test_no_calibration_tensor_is_made_off_the_requested_device(method, solver, delay, monkeypatch):
    """The default device is ``meta`` during the calibration: only tensors made on the
    requested device (explicitly, or from the batches) take part, and the SNN equals the
    plain run's bit for bit. Canonicalization and the equivalence check run the user's model
    on the CPU by design, so they keep the CPU default."""
    inputs = _inputs()
    reference = _convert(method, solver, delay, "cpu", inputs)

    def on_cpu(fn):
        def wrapped(*args, **kwargs):
            with torch.device("cpu"):
                return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(pipeline, "canonicalize", on_cpu(pipeline.canonicalize))
    monkeypatch.setattr(pipeline, "check_equivalence", on_cpu(pipeline.check_equivalence))
    with torch.device("meta"):
        snn = _convert(method, solver, delay, "cpu", inputs)
    assert snn.meta == reference.meta
    for (name, a), (_, b) in zip(reference.state_dict().items(), snn.state_dict().items()):
        assert a.device.type == b.device.type == "cpu" and torch.equal(a, b), name


@pytest.mark.parametrize("device", DEVICES)
def test_calibration_on_each_device_equals_the_cpus(device):
    """The SNN is returned on the CPU whatever ran it; on a GPU its tensors equal the CPU's
    within GPU_RTOL (relative to each tensor's largest value)."""
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    cpu = _convert(*METHODS[0], "cpu")
    other = _convert(*METHODS[0], device)
    assert other.meta["calibrated_T"] == 8 and other.meta["readout_delay"] == cpu.meta["readout_delay"]
    for (name, a), (_, b) in zip(cpu.state_dict().items(), other.state_dict().items()):
        assert b.device.type == "cpu", name
        if device == "cpu":
            assert torch.equal(a, b), name
        elif a.is_floating_point() and a.numel():
            assert (a - b).abs().max() <= GPU_RTOL * a.abs().max().clamp_min(1e-12), name


def test_cli_convert_says_which_device_ran_and_refuses_an_absent_one(tmp_path, capsys, monkeypatch):
    from conftest import run_cli

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "convert", "--calib-samples", "96", "--bias-samples", "32", "--T", "4", "--out", "d.snn.pt", "--device", "cpu")
    assert code == 0, err
    assert " s on cpu" in " ".join(out.split())  # rich wraps long lines
    if not torch.cuda.is_available():
        code, _, err = run_cli(capsys, "convert", "--calib-samples", "96", "--out", "e.snn.pt", "--device", "cuda")
        assert code == 2 and err.strip() == "error: --device cuda: no CUDA GPU is available here; use --device cpu"
        assert not (tmp_path / "e.snn.pt").exists()


def test_zoo_train_on_a_device_gives_a_cpu_checkpoint(tmp_path):
    from annsnn.zoo.train import TrainConfig, train

    results = [train(TrainConfig(arch="digits_cnn", epochs=1, train_samples=128, device=d)) for d in DEVICES]
    for result in results:
        assert all(t.device.type == "cpu" for t in result.model.state_dict().values())
    assert results[0].history[0]["test_top1"] > 0.0


@pytest.mark.parametrize("local_rank,gpus,device,expected", [
    ("0", 2, "cuda", "cuda:0"), ("1", 2, "cuda", "cuda:1"), ("3", 4, "cuda", "cuda:3"), ("1", 2, "cpu", "cpu"),
])
def test_each_torchrun_rank_takes_its_own_gpu(monkeypatch, local_rank, gpus, device, expected):
    """Issue 24 item 6: under torchrun (WORLD_SIZE > 1) --device cuda is cuda:LOCAL_RANK."""
    from annsnn.distributed import rank_device

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", local_rank)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert rank_device(device) == expected


def test_a_rank_without_a_gpu_or_a_pinned_gpu_is_one_line(monkeypatch):
    from annsnn.distributed import rank_device
    from annsnn.errors import UsageError

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UsageError, match="has no GPU of its own: this machine has 2"):
        rank_device("cuda")
    with pytest.raises(UsageError, match="pass --device cuda"):
        rank_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")  # one process is rank 0 (RANK=2 of 1 is refused: test_a_torchrun_environment_that_cannot_be_is_one_line)
    assert rank_device("cuda:1") == "cuda:1"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (the CPU case: tests/test_reliability.py::test_two_processes_with_gloo_equal_one_process)")
def test_torchrun_two_gpus_equal_one_process(tmp_path):
    """With 2 GPUs: torchrun --nproc-per-node 2 evaluate --device cuda equals one process."""
    import json
    import subprocess
    import sys

    env = {**__import__("os").environ, "ANNSNN_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    common = ["evaluate", "--T", "4,16", "--batch-size", "16", "--samples", "100", "--device", "cuda", "--json"]
    subprocess.run([sys.executable, "-m", "annsnn", "convert", "--calib-samples", "128", "--bias-samples", "64", "--out", str(tmp_path / "d.snn.pt")], check=True, env=env, timeout=600)
    subprocess.run([sys.executable, "-m", "annsnn", *common[:1], str(tmp_path / "d.snn.pt"), *common[1:], str(tmp_path / "one.json")], check=True, env=env, timeout=600)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "annsnn", common[0], str(tmp_path / "d.snn.pt"), *common[1:], str(tmp_path / "two.json")],
                   check=True, env=env, timeout=600)
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert one["samples"] == two["samples"] == 100 and one["rows"] == two["rows"]


@pytest.mark.parametrize("rank,size", [("x", "2"), ("1", "1"), ("0", "0"), ("-1", "2"), ("0", "two")])
def test_a_torchrun_environment_that_cannot_be_is_one_line(monkeypatch, rank, size):
    """RANK=x, or RANK=1 with WORLD_SIZE=1, stopped with an internal error (ValueError)."""
    from annsnn.distributed import world
    from annsnn.errors import UsageError

    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", size)
    with pytest.raises(UsageError, match=f"RANK={rank!r} and WORLD_SIZE={size!r}"):
        world()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert world() == (1, 2)
