"""The command line: end to end, and every bad input gets one line and the right exit code."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from annsnn.cli.main import main
from annsnn.zoo import build, embedded_checkpoint


def run(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo")


def test_version_and_help_entry_points():
    exe = Path(sys.executable).with_name("annsnn")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and "0.1.0" in version.stdout
    helped = subprocess.run([sys.executable, "-m", "annsnn", "convert", "--help"], capture_output=True, text=True, timeout=120, cwd="/")
    assert helped.returncode == 0 and "--mode" in helped.stdout and "Examples" in helped.stdout


def test_demo_then_evaluate_and_energy_without_arguments(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "demo", "--T", "5,20")
    assert code == 0, err
    assert (tmp_path / "digits_cnn.snn.pt").is_file() and (tmp_path / "demo.json").is_file()
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4
    demo = json.loads((tmp_path / "demo.json").read_text())
    assert demo["schema_version"] == 1 and [r["T"] for r in demo["rows"]] == [5, 20]
    assert demo["rows"][1]["top1"] > 0.9 and 0 <= demo["rows"][0]["agreement"] <= 1

    code, out, err = run(capsys, "evaluate", "--T", "20,5,20", "--samples", "100", "--json", "eval.json")
    assert code == 0, err
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["schema_version"] == 1 and data["samples"] == 100 and [r["T"] for r in data["rows"]] == [5, 20]
    assert 0.9 < data["ann"]["top1"] <= 1 and "firing_rate" in data["rows"][0]

    code, out, err = run(capsys, "energy", "--T", "5,20", "--samples", "100", "--per-layer", "--json", "e.json", "--csv", "e.csv", "--markdown", "e.md", "--plot", "plots2", "--energy-model", "45nm-fp32", "--energy-model", "truenorth")
    assert code == 0, err
    energy = json.loads((tmp_path / "e.json").read_text())
    assert set(energy["break_even_T"]) == {"45nm-fp32", "truenorth"}
    assert energy["ann"]["macs"] > 0 and energy["rows"][0]["synaptic_acs"] > 0
    assert "break-even" in out and "Per layer" in out
    assert (tmp_path / "e.csv").read_text().startswith("T,top1") and "| T |" in (tmp_path / "e.md").read_text()


def test_info_convert_and_ann_only_energy(capsys, tmp_path):
    code, out, err = run(capsys, "info", "--json", str(tmp_path / "info.json"))
    assert code == 0, err
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["macs"] > 0 and any(v.startswith("yes") for v in info["support"].values())
    target = tmp_path / "digits.snn.pt"
    code, out, err = run(capsys, "convert", str(embedded_checkpoint()), "--mode", "max", "--channel-wise", "--v-init", "0.5", "--calib-samples", "256", "--out", str(target), "--json", str(tmp_path / "c.json"))
    assert code == 0, err
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["report"]["options"]["channel_wise"] and report["dataset"]["name"] == "digits"
    code, out, err = run(capsys, "energy", "--ann", str(embedded_checkpoint()), "--json", str(tmp_path / "ann.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "ann.json").read_text())["ann"]["macs"] > 0


def test_percentile_of_positive_gives_higher_scales_and_is_recorded(capsys, tmp_path):
    scales = {}
    for population in ("all", "positive"):
        code, out, err = run(capsys, "convert", str(embedded_checkpoint()), "--mode", "99", "--percentile-of", population, "--calibration", "none", "--calib-samples", "256",
                             "--out", str(tmp_path / f"{population}.snn.pt"), "--json", str(tmp_path / f"{population}.json"))
        assert code == 0, err
        report = json.loads((tmp_path / f"{population}.json").read_text())["report"]
        assert report["options"]["percentile_of"] == population
        scales[population] = [layer["scale"] for layer in report["layers"]]
    assert all(a < p for a, p in zip(scales["all"], scales["positive"]))
    code, out, err = run(capsys, "convert", str(embedded_checkpoint()), "--percentile-of", "nonzero")
    assert code == 2 and "nonzero" in err


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _bad_cases(tmp: Path):
    state = build("mlp_s").state_dict()
    torch.save(state, str(tmp / "sd.pt"))
    torch.save(nn.Sequential(nn.Linear(2, 2)), str(tmp / "whole.pt"))
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.GELU(), nn.Linear(8, 10))
    torch.save(gelu, str(tmp / "gelu.pt"))
    nan_model = build("digits_cnn")
    nan_model.classifier[1].weight.data[0, 0] = float("nan")
    torch.save(nan_model.state_dict(), str(tmp / "nan.pt"))
    (tmp / "emptyfolder" / "a").mkdir(parents=True, exist_ok=True)
    _write(tmp / "empty.pt", b"")
    _write(tmp / "text.pt", b"hello, I am not a checkpoint\n")
    _write(tmp / "bad.onnx", b"not onnx")
    data = (tmp / "sd.pt").read_bytes()
    _write(tmp / "trunc.pt", data[: len(data) // 3])
    _write(tmp / "neg.json", b'{"name": "n", "e_mac_pj": -1, "e_ac_pj": 1, "e_neuron_pj": 1, "citation": "c"}')
    _write(tmp / "missing.json", b'{"name": "n", "e_mac_pj": 1, "citation": "c"}')
    ckpt = str(embedded_checkpoint())
    return {
        "missing file": ["convert", str(tmp / "nope.pt")],
        "empty file": ["convert", str(tmp / "empty.pt"), "--arch", "mlp_s"],
        "truncated checkpoint": ["convert", str(tmp / "trunc.pt"), "--arch", "mlp_s"],
        "text file named .pt": ["convert", str(tmp / "text.pt"), "--arch", "mlp_s"],
        "corrupt onnx": ["info", str(tmp / "bad.onnx")],
        "state_dict without --arch": ["convert", str(tmp / "sd.pt")],
        "state_dict with wrong --arch": ["convert", str(tmp / "sd.pt"), "--arch", "mlp_m"],
        "pickled module without --trust": ["convert", str(tmp / "whole.pt")],
        "unknown --arch": ["convert", str(tmp / "sd.pt"), "--arch", "resnet9000"],
        "unknown dataset": ["convert", ckpt, "--data", "imagenet-22k"],
        "dataset path missing": ["convert", ckpt, "--data", f"imagefolder:{tmp / 'no-such-dir'}"],
        "named dataset not downloaded": ["convert", ckpt, "--data", "mnist", "--data-root", str(tmp / "no-data")],
        "imagefolder without images": ["convert", ckpt, "--data", f"imagefolder:{tmp / 'emptyfolder'}"],
        "input shape does not fit": ["convert", ckpt, "--input-shape", "1,5,5"],
        "mode 101": ["convert", ckpt, "--mode", "101"],
        "mode -1": ["convert", ckpt, "--mode", "-1"],
        "mode abc": ["convert", ckpt, "--mode", "abc"],
        "mode 0": ["convert", ckpt, "--mode", "0"],
        "mode 1/0": ["convert", ckpt, "--mode", "1/0"],
        "T 0": ["evaluate", "--T", "0"],
        "T -3": ["evaluate", "--T", "-3"],
        "T x": ["evaluate", "--T", "x"],
        "T empty": ["evaluate", "--T", ""],
        "T too large": ["energy", "--T", "100001"],
        "samples 0": ["evaluate", "--samples", "0"],
        "batch-size 0": ["convert", ckpt, "--batch-size", "0"],
        "energy model with negative constant": ["energy", "--ann", ckpt, "--energy-model", str(tmp / "neg.json")],
        "energy model with missing constants": ["energy", "--ann", ckpt, "--energy-model", str(tmp / "missing.json")],
        "NaN weights": ["convert", str(tmp / "nan.pt"), "--arch", "digits_cnn", "--data", "digits"],
        "unconvertible activation": ["convert", str(tmp / "gelu.pt"), "--trust", "--data", "digits"],
        "output in a missing folder": ["convert", ckpt, "--out", str(tmp / "nofolder" / "x.snn.pt")],
        "out is the input": ["convert", str(tmp / "sd.pt"), "--arch", "mlp_s", "--data", "mnist", "--out", str(tmp / "sd.pt")],
        "no last conversion": ["evaluate"],
    }


CASE_NAMES = [
    "missing file", "empty file", "truncated checkpoint", "text file named .pt", "corrupt onnx", "state_dict without --arch",
    "state_dict with wrong --arch", "pickled module without --trust", "unknown --arch", "unknown dataset", "dataset path missing", "named dataset not downloaded",
    "imagefolder without images", "input shape does not fit", "mode 101", "mode -1", "mode abc", "mode 0", "mode 1/0", "T 0", "T -3",
    "T x", "T empty", "T too large", "samples 0", "batch-size 0", "energy model with negative constant",
    "energy model with missing constants", "NaN weights", "unconvertible activation", "output in a missing folder", "out is the input",
    "no last conversion",
]


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    return tmp, _bad_cases(tmp)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, bad_dir, case, monkeypatch, tmp_path):
    tmp, cases = bad_dir
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp.rglob("*")}
    code, out, err = run(capsys, *cases[case])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (case, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert {p: p.stat().st_mtime_ns for p in tmp.rglob("*")} == before
    assert not list(tmp_path.iterdir())  # nothing written in the working folder either
    if case == "named dataset not downloaded":
        assert "no-data" in err and "--data-root" in err


def test_debug_shows_traceback(capsys, bad_dir):
    tmp, cases = bad_dir
    with pytest.raises(Exception):
        main(["--debug"] + cases["missing file"])
