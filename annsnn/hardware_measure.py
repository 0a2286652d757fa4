"""Measured wall time, peak memory and (where a sensor is readable) energy of the ANN and
the simulated SNN on this machine, kept apart from the op-count *estimates*.

Three kinds of figures never mix:

* **measured** on this hardware (this module): wall time, peak memory, and energy read from
  hardware counters, CPU RAPL (``/sys/class/powercap``) and GPU NVML, through the ``zeus``
  library (``pip install annsnn[measure]``; You et al., NSDI 2023, "Zeus: Understanding and
  Optimizing GPU Energy Consumption of DNN Training"). zeus only reads counters: it has no
  TDP model, so a figure it returns is a reading, never an estimate. (codecarbon was not
  chosen because it silently falls back to a TDP-based estimate when RAPL is hidden.)
* **estimated, compute-only**: op counts × per-op energies (:mod:`annsnn.energy`).
* **estimated, with memory**: the same plus SRAM accesses (``NAME+sram``).

Where no sensor is readable, :class:`SensorStatus` says so in one line and every measured
energy is ``None``; time and memory are still measured.

Host memory: the peak resident set size during the run, and its growth above the RSS before
it, read from ``/proc/self/status`` (``VmHWM`` reset through ``/proc/self/clear_refs``, Linux
≥ 4.0; no psutil). Free heap is returned to the OS first (glibc ``malloc_trim``), so memory
freed by an earlier run is not reused unseen. It is per process. GPU memory:
``torch.cuda.max_memory_allocated``.

Energy: ``ΔE_RAPL(packages + DRAM)`` on the CPU, ``ΔE_NVML`` of the GPU on CUDA, read over a
window of repeated passes (≥ 1 s and ≥ 10 counter updates, idle power measured just before;
:func:`measure_energy`), per pass = ΔE / passes, in J; kWh = J / 3.6e6;
CO₂ = kWh × grid intensity (g/kWh). RAPL counts the whole CPU package, other processes
included, so on a shared machine it is an upper bound for this run.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import torch
from torch import Tensor

from .errors import UsageError
from .free_heap import heap_reuse, heap_reuse_applies, release_free_heap
from .simulate import simulate
from .snn import SpikingNetwork

__all__ = [
    "MEASURABLE_ENCODINGS",
    "check_measurable",
    "GRID_INTENSITY_G_PER_KWH",
    "GRID_INTENSITY_SOURCE",
    "J_PER_KWH",
    "DatasetEnergyTable",
    "dataset_energy_table",
    "EnergyCounter",
    "Clock",
    "SystemClock",
    "EnergyWindow",
    "measure_energy",
    "SensorStatus",
    "RunMeasurement",
    "MeasuredResult",
    "DatasetEnergy",
    "probe_sensors",
    "measure_inference",
    "dataset_energy",
]

J_PER_KWH = 3.6e6
GRID_INTENSITY_G_PER_KWH = 480.0
GRID_INTENSITY_SOURCE = "world average 2023 (Ember, Global Electricity Review 2024)"


class EnergyCounter(Protocol):
    """A hardware energy counter: ``read()`` gives cumulative joules, which change only when the
    hardware updates the counter (NVML: tens of ms; RAPL: about 1 ms). ``power_limit_w`` is the
    device's power limit (NVML's enforced limit), ``None`` where none is readable."""

    name: str
    power_limit_w: float | None

    def read(self) -> float: ...


class Clock(Protocol):
    """Seconds and waiting; the system's in use, a fake one in tests."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """``time.perf_counter`` and ``time.sleep``."""

    def now(self) -> float:
        return time.perf_counter()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class EnergyWindow:
    """One energy reading of a repeated workload, between two counter updates.

    The workload runs ``runs`` times between two counter updates at least ``min_window_s``
    apart and ``min_updates`` updates apart, so the counter's resolution is spread over many
    runs. Idle power ``P_idle`` is measured the same way just before, with nothing running.
    ``E_run = ΔE / runs`` (total) and ``E_run,above idle = (P̄ − P_idle) · Δt / runs`` with
    ``P̄ = ΔE / Δt``. The figure is refused (``refused`` holds one line, and the measured
    fields of :class:`RunMeasurement` are ``None``) when ``P̄`` exceeds the device's power limit
    or lies below idle: a physically impossible reading is noise, never a measurement.

    Edges are seen when polled (after a run, or a ``poll_s`` sleep when idle), so each end of
    the window lags the true update by less than one run: ``|error| / E_run < 1 / runs``."""

    runs: int
    window_s: float
    updates: int
    joules: float
    idle_w: float
    idle_window_s: float
    idle_updates: int
    power_limit_w: float | None
    refused: str | None

    @property
    def average_w(self) -> float:
        return self.joules / self.window_s

    @property
    def joules_per_run(self) -> float:
        return self.joules / self.runs

    @property
    def above_idle_joules_per_run(self) -> float:
        return (self.average_w - self.idle_w) * self.window_s / self.runs


def _span(step, counter: EnergyCounter, clock: Clock, min_window_s: float, min_updates: int, max_wait_s: float) -> tuple[int, float, int, float] | None:
    """Call ``step()`` until the counter changes (the window opens at that update), then until
    ``min_window_s`` and ``min_updates`` updates have passed and it changes again. Returns
    (steps inside the window, window seconds, updates, joules), or ``None`` when the counter
    stays still for ``max_wait_s``."""
    first = counter.read()
    started = clock.now()
    while (opened := counter.read()) == first:
        if clock.now() - started > max_wait_s:
            return None
        step()
    t0 = clock.now()
    last, updates, steps = opened, 0, 0
    while True:
        step()
        steps += 1
        value = counter.read()
        if value != last:
            updates += 1
            last = value
            now = clock.now()
            if now - t0 >= min_window_s and updates >= min_updates:
                return steps, now - t0, updates, value - opened
        elif clock.now() - t0 > max_wait_s:
            return None


def measure_energy(
    workload,
    counter: EnergyCounter,
    *,
    clock: Clock | None = None,
    min_window_s: float = 1.0,
    min_updates: int = 10,
    poll_s: float = 0.001,
    max_wait_s: float = 30.0,
) -> EnergyWindow | str:
    """Idle power just before, then ``workload()`` repeated over a window of at least
    ``min_window_s`` seconds and ``min_updates`` counter updates (see :class:`EnergyWindow`).
    Returns one line instead when the counter does not update within ``max_wait_s``."""
    if min_window_s <= 0 or min_updates < 1:
        raise UsageError("an energy window needs a positive length and at least one counter update")
    clock = clock or SystemClock()
    idle = _span(lambda: clock.sleep(poll_s), counter, clock, min_window_s, min_updates, max_wait_s)
    if idle is None:
        return f"the energy counter of {counter.name} did not update within {max_wait_s:g} s: no energy measured"
    _, idle_s, idle_updates, idle_j = idle
    busy = _span(workload, counter, clock, min_window_s, min_updates, max_wait_s)
    if busy is None:
        return f"the energy counter of {counter.name} did not update within {max_wait_s:g} s: no energy measured"
    runs, window_s, updates, joules = busy
    idle_w, average_w, limit = idle_j / idle_s, joules / window_s, counter.power_limit_w
    refused = None
    if limit is not None and average_w > limit:
        refused = f"not a measurement: {counter.name} averaged {average_w:.4g} W over {window_s:.3g} s, above the device's power limit of {limit:.4g} W"
    elif average_w < idle_w:
        refused = f"not a measurement: {counter.name} averaged {average_w:.4g} W over {window_s:.3g} s, below its idle power of {idle_w:.4g} W measured just before"
    return EnergyWindow(runs, window_s, updates, joules, idle_w, idle_s, idle_updates, limit, refused)


@dataclass
class SensorStatus:
    readable: bool
    sensors: list[str]  # e.g. ["CPU RAPL (2 packages)", "GPU NVML (1)"]
    notice: str | None  # one line when nothing is readable


class _ZeusCounter:
    """Cumulative joules of the GPU (NVML) or the CPU packages plus DRAM (RAPL), read through
    zeus's device layer. Power limit: NVML's enforced limit for a GPU; none for RAPL (DRAM
    has no limit of its own, so package + DRAM has none either)."""

    def __init__(self, monitor, names: list[str], gpu: bool) -> None:
        self.monitor = monitor
        self.name = ", ".join(names)
        self.gpu = gpu
        self.power_limit_w = sum(monitor.gpus.get_power_management_limit(i) / 1000.0 for i in monitor.gpu_indices) if gpu else None

    def read(self) -> float:
        if self.gpu:
            return sum(self.monitor.gpus.get_total_energy_consumption(i) / 1000.0 for i in self.monitor.gpu_indices)
        total = 0.0
        for i in self.monitor.cpu_indices:
            m = self.monitor.cpus.get_total_energy_consumption(i)
            total += (m.cpu_mj + (m.dram_mj or 0.0)) / 1000.0
        return total


def probe_sensors(device: str | torch.device = "cpu") -> tuple[SensorStatus, EnergyCounter | None]:
    """Which energy counters are readable here, through zeus; never a TDP-based stand-in.
    On a CUDA device only that GPU's NVML counter is read; on the CPU, RAPL packages + DRAM."""
    try:
        import logging

        logging.getLogger("zeus").setLevel(logging.ERROR)
        from zeus.monitor import ZeusMonitor
    except ImportError:
        return SensorStatus(False, [], "no energy sensor: the optional zeus library is missing (pip install annsnn[measure]); reporting time and memory only"), None
    gpu = torch.device(device).type == "cuda"
    try:
        if gpu:
            monitor = ZeusMonitor(gpu_indices=[torch.device(device).index or 0], cpu_indices=[], approx_instant_energy=False)
        else:
            monitor = ZeusMonitor(gpu_indices=[], approx_instant_energy=False)
    except Exception as exc:  # noqa: BLE001 - zeus raises several kinds; any means "not readable"
        return SensorStatus(False, [], f"no energy sensor readable ({type(exc).__name__}); reporting time and memory only"), None
    names = []
    if monitor.cpu_indices:
        names.append(f"CPU RAPL ({len(monitor.cpu_indices)} package(s))")
    if monitor.gpu_indices:
        names.append(f"GPU NVML ({len(monitor.gpu_indices)})")
    if not names:
        powercap = Path("/sys/class/powercap")
        why = "no /sys/class/powercap (RAPL hidden)" if not powercap.exists() else "RAPL not readable"
        return SensorStatus(False, [], f"no energy sensor readable here ({why}; no NVML GPU): reporting time and memory only"), None
    try:
        return SensorStatus(True, names, None), _ZeusCounter(monitor, names, gpu)
    except Exception as exc:  # noqa: BLE001 - the power limit is not readable: no counter we can check
        return SensorStatus(False, [], f"no energy sensor usable ({type(exc).__name__} reading the power limit); reporting time and memory only"), None


@dataclass
class RunMeasurement:
    """One network over the whole sample set, measured on this machine."""

    network: str  # "ANN" or "SNN T=..."
    T: int | None
    samples: int
    wall_s: float
    wall_s_per_inference: float
    host_peak_bytes: int | None  # peak RSS during the run minus RSS before it; None where /proc is not readable
    host_peak_rss_bytes: int | None  # the process's peak RSS during the run (weights, data and libraries included)
    gpu_peak_bytes: int | None  # torch.cuda.max_memory_allocated; None on CPU
    energy_j: float | None  # one pass over the samples, from the repeated window; None when no sensor is readable or the reading is refused
    energy_j_per_inference: float | None
    energy_kwh: float | None
    co2_g: float | None
    energy_above_idle_j: float | None = None  # the same pass, above the idle power measured just before
    energy_window: EnergyWindow | None = None  # the raw window (also when refused): runs, seconds, updates, idle and average power
    energy_notice: str | None = None  # one line when there is no measured energy although a sensor is readable (refused, counter still)


@dataclass
class MeasuredResult:
    device: str
    threads: int
    samples: int
    sensors: SensorStatus
    grid_g_per_kwh: float
    grid_source: str
    runs: list[RunMeasurement]
    memory_method: str
    notes: list[str] = field(default_factory=list)
    encoding: str = "direct"  # the SNN's input in the timed runs

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DatasetEnergy:
    """Per-inference energy × samples: J, kWh (= J_per_inference / 3.6e6 × samples) and g CO₂."""

    samples: int
    joules_per_inference: float
    joules: float
    kwh: float
    co2_g: float


def dataset_energy(joules_per_inference: float, samples: int, grid_g_per_kwh: float = GRID_INTENSITY_G_PER_KWH) -> DatasetEnergy:
    if samples < 1:
        raise UsageError("the sample count must be at least 1")
    if grid_g_per_kwh < 0:
        raise UsageError("grid intensity must be ≥ 0 g/kWh")
    kwh = joules_per_inference / J_PER_KWH * samples
    return DatasetEnergy(samples, joules_per_inference, joules_per_inference * samples, kwh, kwh * grid_g_per_kwh)


@dataclass(frozen=True)
class DatasetEnergyTable:
    """ESTIMATED energy of a whole sample set under every energy model of an analysis:
    ``rows[model][network]`` with network ``"ANN"`` (priced under ``references[model]`` for a
    neuromorphic model) and ``"SNN T=t"``."""

    samples: int
    grid_g_per_kwh: float
    grid_source: str
    rows: dict[str, dict[str, DatasetEnergy]]
    references: dict[str, str]
    kind: str = "estimated"

    def to_dict(self) -> dict:
        return {"samples": self.samples, "grid_g_per_kwh": self.grid_g_per_kwh, "grid_source": self.grid_source, "kind": self.kind,
                "energy": {m: {k: asdict(v) for k, v in r.items()} for m, r in self.rows.items()}}


def dataset_energy_table(result, grid_g_per_kwh: float = GRID_INTENSITY_G_PER_KWH) -> DatasetEnergyTable:
    """Per-inference energies of an :class:`~annsnn.analyzer.AnalysisResult` (counted) times
    its sample count, for the ANN and every T, under every energy model."""
    if not result.counted:
        raise UsageError("the energy of a sample set needs counted ops (Analyzer(count=True))")
    source = GRID_INTENSITY_SOURCE if grid_g_per_kwh == GRID_INTENSITY_G_PER_KWH else "--grid-intensity"
    rows: dict[str, dict[str, DatasetEnergy]] = {}
    for model in result.energy_models:
        ann_pj = result.ann.energy_pj[model]
        rows[model] = {} if ann_pj is None else {"ANN": dataset_energy(ann_pj * 1e-12, result.samples, grid_g_per_kwh)}
        for r in result.rows:
            rows[model][f"SNN T={r.T}"] = dataset_energy(r.energy_pj[model] * 1e-12, result.samples, grid_g_per_kwh)
    references = {m: d.get("ann_reference") for m, d in result.energy_models.items() if d.get("kind", "digital") != "digital"}
    return DatasetEnergyTable(result.samples, grid_g_per_kwh, source, rows, references)


# --- host memory -----------------------------------------------------------------------


def _status_kb(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _HostPeak:
    """Peak RSS during the run (VmHWM after a reset, Linux) and its growth above the start."""

    def __enter__(self) -> "_HostPeak":
        release_free_heap()  # memory freed by an earlier run is not silently reused and hidden from this run's growth
        self.ok = _reset_peak() and _status_kb("VmHWM") is not None
        self.start = _status_kb("VmRSS") or 0
        self.peak_bytes: int | None = None  # None: not readable here
        self.absolute_bytes: int | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ok:
            peak = _status_kb("VmHWM") or 0
            self.absolute_bytes = peak * 1024
            self.peak_bytes = max(0, (peak - self.start) * 1024)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(label: str, T: int | None, fn, batches: Sequence[Tensor], device: torch.device, counter: EnergyCounter | None, grid: float, window: dict) -> RunMeasurement:
    """Time and memory of one pass over ``batches``; then, with a counter, its energy from a
    window of repeated passes (:func:`measure_energy`)."""
    fn(batches[0])  # warm-up (graph building, allocator); not timed
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    samples = sum(int(b.shape[0]) for b in batches)
    with _HostPeak() as host:
        start = time.perf_counter()
        for batch in batches:
            fn(batch)
        _sync(device)
        wall = time.perf_counter() - start
    gpu_peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    joules = above = reading = notice = None
    if counter is not None:

        def one_pass() -> None:
            for batch in batches:
                fn(batch)
            _sync(device)

        outcome = measure_energy(one_pass, counter, **window)
        if isinstance(outcome, str):
            notice = outcome
        else:
            reading = outcome
            if outcome.refused is not None:
                notice = outcome.refused
            else:
                joules, above = outcome.joules_per_run, outcome.above_idle_joules_per_run
    per = joules / samples if joules is not None else None
    kwh = joules / J_PER_KWH if joules is not None else None
    return RunMeasurement(label, T, samples, wall, wall / samples, host.peak_bytes, host.absolute_bytes, gpu_peak, joules, per, kwh,
                          kwh * grid if kwh is not None else None, above, reading, notice)


MEASURABLE_ENCODINGS = ("direct", "poisson")


def check_measurable(encoding: str) -> None:
    """Refuse an input encoding :func:`measure_inference` cannot time: event frames
    (``[B, T, ...]``) have no ANN input of the same images to time beside them."""
    if encoding not in MEASURABLE_ENCODINGS:
        raise UsageError(f"--measure times direct and Poisson input, not {encoding}: drop --measure (the counted energy needs no sensor), or use --encoding direct")


@torch.no_grad()
def measure_inference(
    snn: SpikingNetwork,
    batches: Sequence[Tensor],
    time_steps: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    chunk: int | None = None,
    sensor: EnergyCounter | None = None,
    status: SensorStatus | None = None,
    grid_g_per_kwh: float = GRID_INTENSITY_G_PER_KWH,
    grid_source: str = GRID_INTENSITY_SOURCE,
    clock: Clock | None = None,
    min_window_s: float = 1.0,
    min_updates: int = 10,
    encoding: str = "direct",
    seed: int = 0,
) -> MeasuredResult:
    """Time, memory and (with a sensor) energy of the ANN, then of the SNN simulated for each T
    on its own (one inference at T costs T steps), over the same ``batches`` held in memory.

    ``sensor``/``status`` default to :func:`probe_sensors`; pass ``status`` with ``sensor=None``
    to measure time and memory only. Energy: each network's pass is repeated over a window of at
    least ``min_window_s`` and ``min_updates`` counter updates, after idle power is measured
    (:func:`measure_energy`). ``encoding``: the SNN's input, ``direct`` or ``poisson`` (spikes
    drawn from ``seed`` at every pass); event frames are refused (:func:`check_measurable`)."""
    check_measurable(encoding)
    if not batches:
        raise UsageError("no samples to measure")
    if grid_g_per_kwh < 0:
        raise UsageError("grid intensity must be ≥ 0 g/kWh")
    dev = torch.device(device)
    if status is None:
        status, sensor = probe_sensors(dev)
    snn = snn.to(dev).eval()
    data = [b.to(dev) for b in batches]
    window = {"clock": clock, "min_window_s": min_window_s, "min_updates": min_updates}
    with heap_reuse():  # the ANN under the allocator setting simulate runs with (annsnn.free_heap): the same footing
        runs = [_measure("ANN", None, snn.ann, data, dev, sensor, grid_g_per_kwh, window)]
        for t in sorted(set(int(t) for t in time_steps)):
            generator = torch.Generator(dev).manual_seed(seed) if encoding == "poisson" else None
            runs.append(_measure(f"SNN T={t}", t, lambda x, _t=t, _g=generator: simulate(snn, x, _t, encoding=encoding, generator=_g, chunk=chunk), data, dev, sensor, grid_g_per_kwh, window))
    notes = ["one warm-up batch per network is run before timing and not counted", "the SNN is simulated for each T on its own: an inference at T costs T steps"]
    if encoding == "poisson":
        notes.append("SNN input: Poisson spikes, drawn anew at every pass (the drawing is timed too)")
    if heap_reuse_applies():
        notes.append("both networks run with freed C heap memory kept for reuse (annsnn.free_heap.heap_reuse), as simulate runs")
    if status.readable:
        notes.append(f"energy: each pass repeated over >= {min_window_s:g} s and >= {min_updates} counter updates, idle power measured just before; total and above-idle are both given")
        notes.append("RAPL counts the whole CPU package (other processes included): an upper bound for this run on a shared machine")
    return MeasuredResult(
        device=str(dev), threads=torch.get_num_threads(), samples=runs[0].samples, sensors=status,
        grid_g_per_kwh=grid_g_per_kwh, grid_source=grid_source, runs=runs,
        memory_method="host: peak RSS (VmHWM after /proc/self/clear_refs), and its growth above the RSS before the run (free heap returned to the OS first with malloc_trim)" + ("; GPU: torch.cuda.max_memory_allocated" if dev.type == "cuda" else ""),
        notes=notes,
        encoding=encoding,
    )
