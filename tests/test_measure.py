"""Measured time/memory/energy (annsnn.hardware_measure) and whole-dataset energy (--per-dataset)."""
from __future__ import annotations

import json
import os
import sys
import time

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
from conftest import table_headings


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


class _FakeClock:
    """Time in integer microseconds (exact arithmetic); ``sleep`` passes idle time, ``work``
    passes busy time. Each span records its power, so the counter knows the energy at any t."""

    def __init__(self, idle_w: float, busy_w: float) -> None:
        self.us = 0
        self.idle_w, self.busy_w = idle_w, busy_w
        self.spans: list[tuple[int, int, float]] = []

    def now(self) -> float:
        return self.us / 1e6

    def _pass(self, us: int, watts: float) -> None:
        self.spans.append((self.us, self.us + us, watts))
        self.us += us

    def sleep(self, seconds: float) -> None:
        self._pass(round(seconds * 1e6), self.idle_w)

    def work(self, seconds: float) -> None:
        self._pass(round(seconds * 1e6), self.busy_w)

    def joules_until(self, us: int) -> float:
        return sum(w * (min(b, us) - a) / 1e6 for a, b, w in self.spans if a < us)


class _CoarseCounter:
    """A counter that updates every ``period_us`` (NVML-like), at phase ``phase_us``: it shows
    the energy up to its last update."""

    name = "fake NVML"

    def __init__(self, clock: _FakeClock, period_us: int = 100_000, phase_us: int = 0, power_limit_w: float | None = 700.0) -> None:
        self.clock, self.period, self.phase, self.power_limit_w = clock, period_us, phase_us, power_limit_w

    def read(self) -> float:
        last = (self.clock.us - self.phase) // self.period * self.period + self.phase
        return self.clock.joules_until(max(last, 0))


def test_a_10_ms_workload_under_a_100_ms_counter_comes_out_exactly():
    """Issue 24 item 4: a 10 ms run read by a counter that updates every 100 ms. One window of
    the run alone reads 0 J or a whole update's worth; the repeated window gives the closed
    form: E_run = 250 W x 10 ms = 2.5 J, above idle (250 - 50) W x 10 ms = 2.0 J."""
    clock = _FakeClock(idle_w=50.0, busy_w=250.0)
    reading = measure.measure_energy(lambda: clock.work(0.010), _CoarseCounter(clock), clock=clock)
    assert reading.refused is None
    assert reading.window_s >= 1.0 and reading.updates >= 10 and reading.idle_updates >= 10
    assert reading.runs == 100 and reading.updates == 10 and reading.window_s == pytest.approx(1.0, abs=1e-9)
    assert reading.idle_w == pytest.approx(50.0, rel=1e-3)  # idle polled every 1 ms: each end lags < 1 ms of >= 1 s
    assert reading.joules_per_run == pytest.approx(2.5, rel=1e-12)
    assert reading.above_idle_joules_per_run == pytest.approx(2.0, rel=2e-3)


@given(st.integers(min_value=0, max_value=99_999), st.sampled_from([0.003, 0.010, 0.037]))
@settings(max_examples=25, deadline=None)
def test_any_phase_and_run_length_is_within_one_run_of_the_window(phase_us, run_s):
    """Edges are seen after a run, so each end of the window lags by less than one run:
    |E_run - P x t_run| / (P x t_run) < 1 / runs."""
    clock = _FakeClock(idle_w=40.0, busy_w=300.0)
    reading = measure.measure_energy(lambda: clock.work(run_s), _CoarseCounter(clock, phase_us=phase_us), clock=clock)
    truth = 300.0 * run_s
    assert abs(reading.joules_per_run - truth) / truth < 1 / reading.runs
    assert reading.window_s >= 1.0 and reading.updates >= 10


def test_power_above_the_limit_or_below_idle_is_refused_in_one_line():
    clock = _FakeClock(idle_w=50.0, busy_w=1450.0)  # the ResNet-20 "measurement": 1,450 W
    reading = measure.measure_energy(lambda: clock.work(0.010), _CoarseCounter(clock, power_limit_w=700.0), clock=clock)
    assert reading.refused.startswith("not a measurement") and "power limit of 700 W" in reading.refused and "\n" not in reading.refused
    clock = _FakeClock(idle_w=50.0, busy_w=30.0)
    reading = measure.measure_energy(lambda: clock.work(0.010), _CoarseCounter(clock), clock=clock)
    assert "below its idle power of 50 W" in reading.refused and "\n" not in reading.refused


def test_a_still_counter_gives_one_line_not_a_figure():
    clock = _FakeClock(idle_w=50.0, busy_w=250.0)
    outcome = measure.measure_energy(lambda: clock.work(0.010), _CoarseCounter(clock, period_us=10**12), clock=clock, max_wait_s=2.0)
    assert outcome == "the energy counter of fake NVML did not update within 2 s: no energy measured"


class _ProcessCounter:
    """Real time: 10 W idle plus 100 W per second of this process's CPU time, shown in 20 ms
    updates (the value is taken at the first read after each update instant)."""

    name = "fake RAPL"
    power_limit_w = None

    def __init__(self) -> None:
        self.start, self.cpu0 = time.perf_counter(), time.process_time()
        self.tick, self.value = 0, 0.0

    def read(self) -> float:
        tick = int((time.perf_counter() - self.start) // 0.02)
        if tick != self.tick:
            self.tick, self.value = tick, 10.0 * (time.perf_counter() - self.start) + 100.0 * (time.process_time() - self.cpu0)
        return self.value


def test_measure_inference_reads_each_network_over_a_repeated_window(digits_snn):
    """End to end on the real networks (real time, so the closed forms above are not exact
    here): each network gets its own window of counter updates, with idle measured before."""
    snn, x = digits_snn
    status = measure.SensorStatus(True, ["fake"], None)
    result = measure.measure_inference(snn, [x[:60], x[60:]], [4], sensor=_ProcessCounter(), status=status, grid_g_per_kwh=300.0, min_window_s=0.2, min_updates=5)
    assert [r.network for r in result.runs] == ["ANN", "SNN T=4"]
    for run in result.runs:
        w = run.energy_window
        assert w.refused is None and run.energy_notice is None and w.window_s >= 0.2 and w.updates >= 5 and w.idle_window_s >= 0.2
        # the fake counter charges 100 W per CPU-second of this process: at most 100 W per core
        # busy, plus 10 W idle; each end of the window may be off by one 20 ms update
        ceiling = (10.0 + 100.0 * (os.cpu_count() or 1)) * w.window_s / (w.window_s - 0.04)
        assert w.idle_w < w.average_w <= ceiling
        assert run.energy_j == w.joules / w.runs and run.energy_j_per_inference == run.energy_j / 120
        assert run.energy_above_idle_j == (w.average_w - w.idle_w) * w.window_s / w.runs
        assert run.energy_kwh == run.energy_j / 3.6e6 and run.co2_g == run.energy_kwh * 300.0


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
    headings = table_headings(stdout)
    assert ["network", "time/inf", "host peak growth", "process peak RSS", "energy/inf (no sensor)"] in headings  # CPU: no GPU column
    assert ["network", "measured energy/inf (no sensor)", "estimated compute-only 45nm-fp32", "estimated with memory 45nm-fp32+sram"] in headings
    assert all(len(line) <= 80 for line in stdout.splitlines())
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


def test_measure_times_the_encoding_it_counts(digits_snn, monkeypatch):
    """energy --encoding poisson --measure timed direct input (simulate's default) and said
    nothing; the measured SNN run now draws Poisson spikes, and the record says so."""
    snn, x = digits_snn
    seen: list[str] = []
    real = measure.simulate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("encoding", "direct"))
        return real(*args, **kwargs)

    monkeypatch.setattr(measure, "simulate", spy)
    status = measure.SensorStatus(False, [], "no sensor (test)")
    result = measure.measure_inference(snn, [x[:30]], [4], sensor=None, status=status, encoding="poisson", seed=3)
    assert seen and set(seen) == {"poisson"}
    assert result.encoding == "poisson" and result.to_dict()["encoding"] == "poisson"
    seen.clear()
    assert measure.measure_inference(snn, [x[:30]], [4], sensor=None, status=status).encoding == "direct" and set(seen) == {"direct"}
    with pytest.raises(UsageError, match="--measure times direct and Poisson input"):
        measure.measure_inference(snn, [x[:30]], [4], sensor=None, status=status, encoding="events")


def test_cli_measure_with_event_input_is_refused_before_it_runs(tmp_path, capsys, monkeypatch, digits_snn):
    """It printed every table, then stopped with an internal error and wrote no JSON."""
    from annsnn.artifact import save_snn

    snn, _ = digits_snn
    save_snn(snn, tmp_path / "d.snn.pt")
    code, stdout, stderr = _run(capsys, monkeypatch, tmp_path, "energy", "d.snn.pt", "--data", "digits", "--samples", "20", "--T", "4", "--encoding", "events", "--measure")
    assert code == 2 and stdout == "" and stderr.count("\n") == 1 and "--measure times direct and Poisson input" in stderr
