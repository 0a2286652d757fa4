"""Measured time/memory/energy (annsnn.hardware_measure) and whole-dataset energy (--per-dataset)."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import annsnn.hardware_measure as measure
from annsnn.conversion_options import ConversionOptions
from annsnn.data import load_dataset
from annsnn.errors import UsageError
from annsnn.model_files import load_model
from annsnn.pipeline import ann_to_snn
from annsnn.zoo import embedded_checkpoint


@pytest.fixture(scope="module")
def digits_snn():
    xtr, _ = load_dataset("digits", "train").tensors
    xte, yte = load_dataset("digits", "test").tensors
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]), options=ConversionOptions.plain())
    return snn, xte[:120]


@given(st.floats(min_value=0, max_value=1e3, allow_nan=False), st.integers(min_value=1, max_value=10**7), st.floats(min_value=0, max_value=2000))
@settings(max_examples=60, deadline=None)
def test_kwh_is_joules_over_3_6e6_times_samples(joules, samples, grid):
    e = measure.dataset_energy(joules, samples, grid)
    assert e.kwh == joules / 3.6e6 * samples
    assert e.joules == joules * samples
    assert e.co2_g == e.kwh * grid


def test_dataset_energy_rejects_bad_values():
    with pytest.raises(UsageError):
        measure.dataset_energy(1.0, 0)
    with pytest.raises(UsageError):
        measure.dataset_energy(1.0, 10, -1.0)


class _FakeSensor:
    name = "fake RAPL"

    def __init__(self, joules: float) -> None:
        self.joules = joules
        self.calls = 0

    def begin(self) -> None:
        self.calls += 1

    def end(self) -> float:
        return self.joules


def test_a_readable_sensor_gives_measured_energy(digits_snn):
    snn, x = digits_snn
    sensor = _FakeSensor(7.2)
    status = measure.SensorStatus(True, ["fake"], None)
    result = measure.measure_inference(snn, [x[:60], x[60:]], [4, 8], sensor=sensor, status=status, grid_g_per_kwh=300.0)
    assert [r.network for r in result.runs] == ["ANN", "SNN T=4", "SNN T=8"]
    assert sensor.calls == 3
    for run in result.runs:
        assert run.samples == 120
        assert run.energy_j == 7.2
        assert run.energy_j_per_inference == 7.2 / 120
        assert run.energy_kwh == 7.2 / 3.6e6
        assert run.co2_g == 7.2 / 3.6e6 * 300.0
        assert run.wall_s_per_inference == run.wall_s / 120


def test_no_sensor_means_no_energy_figure_never_an_estimate(digits_snn, monkeypatch):
    snn, x = digits_snn
    monkeypatch.setitem(sys.modules, "zeus.monitor", None)  # the optional extra is missing
    status, sensor = measure.probe_sensors("cpu")
    assert sensor is None and not status.readable
    assert "time and memory only" in status.notice and "\n" not in status.notice
    result = measure.measure_inference(snn, [x], [4], sensor=None, status=status)
    assert all(r.energy_j is None and r.energy_kwh is None and r.co2_g is None for r in result.runs)
    assert all(r.wall_s > 0 and r.wall_s_per_inference == r.wall_s / 120 for r in result.runs)


def test_this_container_has_no_readable_sensor_or_zeus_says_which():
    status, sensor = measure.probe_sensors("cpu")
    assert status.readable == (sensor is not None)
    assert (status.notice is None) == status.readable


def _run(capsys, monkeypatch, cwd, *args):
    from conftest import run_cli

    monkeypatch.chdir(cwd)
    return run_cli(capsys, *args)


def test_cli_measure_without_sensor_one_line_notice_and_per_dataset(tmp_path, capsys, monkeypatch, digits_snn):
    from annsnn.artifact import save_snn

    snn, _ = digits_snn
    save_snn(snn, tmp_path / "d.snn.pt")
    monkeypatch.setattr(measure, "probe_sensors", lambda device="cpu": (measure.SensorStatus(False, [], "no energy sensor readable here (test); reporting time and memory only"), None))
    code, stdout, stderr = _run(capsys, monkeypatch, tmp_path, "energy", "d.snn.pt", "--data", "digits", "--samples", "90", "--T", "4,8", "--measure", "--per-dataset", "--json", "e.json")
    assert code == 0, stderr
    assert sum("no energy sensor" in line for line in stdout.splitlines()) == 1
    for heading in ("time/inf", "host peak", "compute-only", "with memory", "45nm-fp32+sram", "(no sensor)"):
        assert heading in stdout
    data = json.loads((tmp_path / "e.json").read_text())
    runs = data["measured"]["runs"]
    assert [r["network"] for r in runs] == ["ANN", "SNN T=4", "SNN T=8"]
    assert all(r["energy_j"] is None and r["samples"] == 90 and r["wall_s"] > 0 and r["host_peak_rss_bytes"] >= r["host_peak_bytes"] >= 0 for r in runs)
    per = data["per_dataset"]
    assert per["samples"] == 90 and per["kind"] == "estimated"
    for model, entries in per["energy"].items():
        row = entries["SNN T=8"]
        pj = next(r for r in data["rows"] if r["T"] == 8)["energy_pj"][model]
        assert row["joules_per_inference"] == pj * 1e-12
        assert row["kwh"] == pj * 1e-12 / 3.6e6 * 90
        assert row["co2_g"] == row["kwh"] * 480.0
