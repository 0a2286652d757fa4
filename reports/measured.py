"""Regenerate reports/measured.md (``make report-measured``): measured time, memory and
(where a sensor is readable) energy on this machine, beside the op-count estimates.

    nice -n 10 env OMP_NUM_THREADS=1 python reports/measured.py [demo] [resnet20]

``demo`` alone regenerates only the demo section in place, stamped with its commit.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import REPORTS, SHARED, code_commit, header, pct  # noqa: E402

from annsnn.evaluation import analyze  # noqa: E402
from annsnn.convert import ConversionOptions  # noqa: E402
from annsnn.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset, make_loader  # noqa: E402
from annsnn.files import write_text  # noqa: E402
from annsnn.model_files import load_model  # noqa: E402
from annsnn.hardware_measure import dataset_energy, measure_inference, probe_sensors  # noqa: E402
from annsnn.modes import parse_mode  # noqa: E402
from annsnn.pipeline import ann_to_snn  # noqa: E402
from annsnn.zoo import embedded_checkpoint  # noqa: E402

COMMAND = "nice -n 10 env OMP_NUM_THREADS=1 python reports/measured.py (make report-measured)"
MODELS = ["45nm-fp32", "45nm-fp32+sram"]


def study(name: str, snn, loader, steps) -> tuple[str, dict]:
    batches = [(x, y) for x, y in loader]
    est = analyze(snn, batches, steps, energy_models=MODELS)
    measured = measure_inference(snn, [x for x, _ in batches], steps)
    ann_run = measured.runs[0]
    by_t = {r.T: r for r in est.rows}
    import os

    lines = [f"\n## {name}\n\n{measured.samples} test images, batches of {batches[0][0].shape[0]}, {measured.device}, {measured.threads} torch thread(s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores when it started (the machine is shared: absolute times are noisy, ratios are measured side by side).\n\n"]
    if measured.sensors.notice:
        lines.append(f"**{measured.sensors.notice}.**\n\n")
    head = ["network", "top-1 %", "measured time / inference (ms)", "measured time vs ANN", "measured host peak RSS growth / process peak RSS (MiB)", "measured energy / inference (J)",
            "estimated compute-only (45nm-fp32) µJ", "estimated compute-only vs ANN", "estimated with memory (45nm-fp32+sram) µJ", "estimated with memory vs ANN"]
    lines.append("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
    summary = {}
    for run in measured.runs:
        if run.T is None:
            top1, comp, mem = est.ann.top1, est.ann.energy_pj["45nm-fp32"], est.ann.energy_pj["45nm-fp32+sram"]
        else:
            row = by_t[run.T]
            top1, comp, mem = row.top1, row.energy_pj["45nm-fp32"], row.energy_pj["45nm-fp32+sram"]
        time_ratio = run.wall_s / ann_run.wall_s
        comp_ratio = comp / est.ann.energy_pj["45nm-fp32"]
        mem_ratio = mem / est.ann.energy_pj["45nm-fp32+sram"]
        summary[run.network] = (time_ratio, comp_ratio, mem_ratio)
        energy = "no sensor" if run.energy_j_per_inference is None else f"{run.energy_j_per_inference:.4g}"
        host = "–" if run.host_peak_bytes is None else f"{run.host_peak_bytes / 2**20:.1f} / {run.host_peak_rss_bytes / 2**20:.0f}"
        lines.append(f"| {run.network} | {pct(top1)} | {1e3 * run.wall_s_per_inference:.4g} | {time_ratio:.1f}× | {host} | {energy} | {comp / 1e6:.4g} | {comp_ratio:.3f} | {mem / 1e6:.4g} | {mem_ratio:.3f} |\n")
    last = measured.runs[-1]
    t_ratio, c_ratio, m_ratio = summary[last.network]
    lines.append(
        f"\nAt T={last.T} the simulated SNN took **{t_ratio:.1f}× the ANN's wall time** on this CPU, while the compute-only estimate puts its energy at "
        f"{c_ratio:.2f}× the ANN's and the memory-aware estimate at {m_ratio:.2f}×. On a CPU every time step is a dense pass over the layer "
        "(spikes are 0/1 floats, zeros cost the same as ones), so the simulation costs about T ANN passes; the estimates assume hardware that "
        "spends energy only on the events. The estimates are not measurements of this machine.\n"
    )
    per = dataset_energy(est.rows[-1].energy_pj["45nm-fp32"] * 1e-12, 10_000)
    lines.append(f"\nFor a 10,000-image test set the compute-only estimate at T={est.rows[-1].T} is {per.joules:.4g} J = {per.kwh:.4g} kWh ({per.co2_g:.4g} g CO₂ at 480 g/kWh); `annsnn energy --per-dataset` prints this for any set.\n")
    return "".join(lines), summary


def demo() -> str:
    loaded = load_model(embedded_checkpoint())
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    calib = (x for x, _ in make_loader(train, 256))
    snn, _ = ann_to_snn(loaded.module, calib, input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("99.99")), normalization=([0.3054], [0.3761]))
    text, _ = study("Demo model (bundled digits CNN, mode 99.99)", snn, make_loader(test, 120), [5, 20, 50])
    return text


def resnet20() -> str:
    weights = SHARED / "models" / "cifar10-resnet" / "resnet20-12fca82f.th"
    data = f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}"
    calib = (x for x, _ in make_loader(load_dataset(data, "train"), 128, 1024))
    snn, _ = ann_to_snn(load_model(weights, "resnet20").module, calib, input_shape=(3, 32, 32), options=ConversionOptions.plain(mode=parse_mode("99.99"), v_init=0.5), normalization=(list(IMAGENET_MEAN), list(IMAGENET_STD)))
    text, _ = study("CIFAR-10 (JPEG) ResNet-20 (shared weights, mode 99.99, v_init 0.5)", snn, make_loader(load_dataset(data, "test"), 50, 100), [8, 32])
    return text


def demo_only() -> None:
    """``python reports/measured.py demo``: regenerate only the demo section (a minute) in
    place, stamped with the commit; the other sections keep their own stamp."""
    import datetime
    import re

    path = REPORTS / "measured.md"
    text = path.read_text(encoding="utf-8")
    start = text.index("\n## Demo model")
    end = text.index("\n## ", start + 5)
    section = demo()
    stamp = f"- demo section: regenerated at code commit `{code_commit()}` on {datetime.date.today().isoformat()} by `python reports/measured.py demo`; the other sections keep the date of their own run\n"
    text = text[:start] + section.rstrip("\n") + "\n" + text[end:]
    text = re.sub(r"^- demo section: .*\n", "", text, flags=re.M)
    text = text.replace("- machine:", stamp + "- machine:", 1)
    write_text(path, text)


def main() -> None:
    jobs = sys.argv[1:] or ["demo", "resnet20"]
    if jobs == ["demo"] and (REPORTS / "measured.md").is_file():
        demo_only()
        return
    status, _ = probe_sensors("cpu")
    lines = [header("Measured time, memory and energy beside the estimates", COMMAND, "bundled digits (360 test images); CIFAR-10 JPEG (100 evenly spaced test images)")]
    lines.append(
        "Three kinds of figures, never mixed: **measured** on this machine (wall time, peak host memory above the start of the run, and energy "
        "from CPU RAPL / GPU NVML counters read through zeus where readable), **estimated compute-only** (op counts × 45 nm energies, Horowitz 2014) "
        "and **estimated with memory** (plus SRAM accesses, Lemaire et al. 2022). Each SNN row is a separate simulation of T steps. "
        f"Sensors here: {', '.join(status.sensors) if status.readable else status.notice}.\n"
    )
    for job in jobs:
        started = time.perf_counter()
        lines.append({"demo": demo, "resnet20": resnet20}[job]())
        print(job, f"{time.perf_counter() - started:.0f} s", flush=True)
    text = "".join(lines)  # header() names the code commit
    write_text(REPORTS / "measured.md", text)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
