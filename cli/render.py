"""Rich tables for the CLI. The library returns dataclasses; only this module formats."""
from __future__ import annotations

from rich.table import Table

from annsnn.analyzer import AnalysisResult
from annsnn.convert import ConversionReport
from annsnn.counting import AnnCounts

__all__ = ["info_table", "conversion_table", "mode_words", "evaluation_table", "energy_table", "layer_table", "ann_layer_table", "si", "pct"]


def si(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}".strip()


def pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def energy_str(pj: float | None) -> str:
    if pj is None:
        return "–"
    if pj >= 1e6:
        return f"{pj / 1e6:.4g} µJ"
    if pj >= 1e3:
        return f"{pj / 1e3:.4g} nJ"
    return f"{pj:.4g} pJ"


def _short(name: str) -> str:
    """Drop the ``model.`` prefix of the input-normalization wrapper."""
    return name[len("model."):] if name.startswith("model.") else name


def info_table(counts: AnnCounts, support: dict[str, str], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("layer", "type", "output shape", "params", "MACs", "other ops", "converts"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for layer in counts.layers:
        other = ", ".join(f"{k} {si(v)}" for k, v in layer.other_ops.items())
        table.add_row(layer.name, layer.type, "×".join(map(str, layer.output_shape[1:])), f"{layer.params:,}", si(layer.macs) if layer.macs else "", other, support.get(layer.name, ""))
    others = counts.other_ops()
    table.add_section()
    table.add_row("total", "", "", f"{counts.params:,}", si(counts.macs), ", ".join(f"{k} {si(v)}" for k, v in others.items()), "")
    return table


def mode_words(mode: dict) -> str:
    """A scale mode in words: a bare 50 is the 50th percentile, a bare 0.5 is half the max."""
    if mode["kind"] == "percentile":
        return f"{mode['value']:g}th percentile"
    if mode["kind"] == "fraction":
        return f"{mode['value']:.4g} × max"
    return "max"


def conversion_table(report: ConversionReport) -> Table:
    mode = mode_words(report.options["mode"])
    population = ""
    if report.options.get("threshold") == "if-search":
        mode = f"IF error search, T={report.options['T']}"
    elif report.options["mode"]["kind"] == "percentile":
        population = " of all values" if report.options.get("percentile_of", "all") == "all" else " of positive values"
    if report.options.get("bias", "none") != "none":
        population += f", {report.options['bias']} bias"
    table = Table(title=f"Conversion ({mode}{population}{', channel-wise' if report.options['channel_wise'] else ''}, v_init {report.options['v_init']:g}, {report.calibration_samples} calibration samples)", title_justify="left")
    for col in ("layer", "type", "neurons", "max", f"scale ({mode})", "clipped", "spiking"):
        table.add_column(col, justify="left" if col in ("layer", "type", "spiking") else "right")
    for layer in report.layers:
        table.add_row(_short(layer.name), layer.kind, f"{layer.neurons:,}", "–" if layer.max is None else f"{layer.max:.4g}", f"{layer.scale:.4g}", f"{100 * layer.clipped_fraction:.3f}%", "yes" if layer.spiking else "analog")
    table.add_section()
    table.add_row("total", "", f"{report.neurons:,}", "", "", "", "")
    return table


def evaluation_table(result: AnalysisResult) -> Table:
    ann = result.ann
    top5 = ann.top5 is not None
    table = Table(title=f"SNN vs ANN on {result.samples} samples ({result.encoding} input) — ANN top-1 {pct(ann.top1)}%", title_justify="left")
    f4 = lambda v: f"{v:.4f}" if v is not None else "–"  # noqa: E731
    for col in ("T", "top-1 %") + (("top-5 %",) if top5 else ()) + ("gap (pts)", "agreement %", "recall macro", "F1 macro", "firing rate"):
        table.add_column(col, justify="right")
    table.add_row("ANN", pct(ann.top1), *((pct(ann.top5),) if top5 else ()), "", "", f4(ann.recall_macro), f4(ann.f1_macro), "")
    table.add_section()
    for row in result.rows:
        table.add_row(str(row.T), pct(row.top1), *((pct(row.top5),) if top5 else ()), pct(row.gap, signed=True), pct(row.agreement), f4(row.recall_macro), f4(row.f1_macro), f"{row.firing_rate:.4f}")
    return table


def energy_table(result: AnalysisResult) -> Table:
    names = list(result.energy_models)
    table = Table(title=f"Accuracy–energy trade-off, per inference ({result.samples} samples, {result.encoding} input; first-layer MACs {result.mac_counting})", title_justify="left")
    for col in ["T", "top-1 %", "gap", "SyOPs (ACs)", "MACs", "total ops"] + [f"E {n}" for n in names] + [f"SNN/ANN {n}" for n in names]:
        table.add_column(col, justify="right")
    ann = result.ann
    table.add_row("ANN", pct(ann.top1), "", "–", si(ann.macs), si(ann.macs + ann.bias_adds), *[energy_str(ann.energy_pj[n]) for n in names], *["1" for _ in names])
    table.add_section()
    for row in result.rows:
        table.add_row(
            str(row.T), pct(row.top1), pct(row.gap, signed=True), si(row.synaptic_acs), si(row.macs), si(row.total_ops),
            *[energy_str(row.energy_pj[n]) for n in names],
            *[(f"{row.energy_ratio[n]:.3f}" if row.energy_ratio[n] is not None else "–") for n in names],
        )
    return table


def layer_table(result: AnalysisResult) -> Table:
    names = list(result.energy_models)
    table = Table(title=f"Per layer (SNN) at T={result.time_steps[-1]} (per inference; absolute energy under every model)", title_justify="left")
    for col in ["layer", "type", "role", "neurons", "firing rate", "SyOPs", "MACs", "comparisons"] + [f"E {n}" for n in names]:
        table.add_column(col, justify="left" if col in ("layer", "type", "role") else "right")
    for layer in result.layers:
        table.add_row(
            _short(layer.name), layer.type, layer.role, f"{layer.neurons:,}" if layer.neurons else "", f"{layer.firing_rate:.4f}" if layer.neurons else "",
            si(layer.synaptic_acs) if layer.synaptic_acs else "", si(layer.macs) if layer.macs else "", si(layer.comparisons) if layer.comparisons else "",
            *[energy_str(layer.energy_pj[n]) for n in names],
        )
    return table


def ann_layer_table(result: AnalysisResult) -> Table:
    names = list(result.energy_models)
    table = Table(title="Per layer (ANN, per inference; MACs exclude padding; neuromorphic columns use their ANN reference)", title_justify="left")
    for col in ["layer", "type", "MACs", "MACs incl. padding (fvcore)"] + [f"E {n}" for n in names]:
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for layer in result.ann_layers:
        if not layer.macs and not layer.bias_adds:
            continue
        table.add_row(_short(layer.name), layer.type, si(layer.macs), si(layer.macs_with_padding), *[energy_str(layer.energy_pj[n]) for n in names])
    return table


def robustness_table(result) -> Table:
    """One row per perturbation and strength: ANN and SNN top-1 (and agreement) at every T."""
    table = Table(title=f"Robustness on {result.samples} samples (top-1 %, macro F1 %, agreement with the ANN %)", title_justify="left")
    for col in ("perturbation", "strength", "crafted on", "ANN top-1", "ANN F1"):
        table.add_column(col, justify="left" if col in ("perturbation", "crafted on") else "right")
    for t in result.time_steps:
        table.add_column(f"SNN T={t}", justify="right")
        table.add_column(f"F1 T={t}", justify="right")
        table.add_column(f"agree T={t}", justify="right")
    where = {"none": "–", "ann": "ANN (transfer→SNN)", "snn": "SNN (direct, BPTT)"}
    for row in result.rows:
        cells = [row.perturbation, f"{row.strength:g}", where[row.crafted_on], pct(row.ann.top1), pct(row.ann.f1_macro)]
        for t in result.time_steps:
            cells += [pct(row.snn[t].top1), pct(row.snn[t].f1_macro), pct(row.agreement[t])]
        table.add_row(*cells)
    return table


def robustness_csv(result) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["perturbation", "strength", "crafted_on", "network", "T", "top1", "recall_macro", "f1_macro", "top5", "agreement"])
    for row in result.rows:
        writer.writerow([row.perturbation, row.strength, row.crafted_on, "ann", "", row.ann.top1, row.ann.recall_macro, row.ann.f1_macro, row.ann.top5, 1.0])
        for t in result.time_steps:
            m = row.snn[t]
            writer.writerow([row.perturbation, row.strength, row.crafted_on, "snn", t, m.top1, m.recall_macro, m.f1_macro, m.top5, row.agreement[t]])
    return buffer.getvalue()


def _joules(j: float | None) -> str:
    if j is None:
        return "–"
    for factor, unit in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ")):
        if abs(j) >= factor:
            return f"{j / factor:.4g} {unit}"
    return f"{j * 1e12:.4g} pJ"


def _mib(b: int | None) -> str:
    return "–" if b is None else f"{b / 2**20:.1f} MiB"


def _measured_energy(run) -> str:
    """Total energy per inference and, in brackets, its part above idle power."""
    if run.energy_j_per_inference is None:
        return _joules(None) if run.energy_notice is None else "refused" if run.energy_window is not None else "no reading"
    return f"{_joules(run.energy_j_per_inference)} ({_joules(run.energy_above_idle_j / run.samples)})"


def measured_table(measured, result) -> Table:
    """Per inference: MEASURED time, memory, energy beside the two kinds of ESTIMATES."""
    compute = next((m for m, d in result.energy_models.items() if not m.endswith("+sram") and d.get("kind", "digital") == "digital"), None)
    memory = next((m for m in result.energy_models if m.endswith("+sram")), None)
    energy_label = "measured\nenergy/inf\n(above idle)" if measured.sensors.readable else "measured\nenergy/inf\n(no sensor)"
    table = Table(title=f"Measured on this machine ({measured.device}, {measured.threads} threads, {measured.samples} samples) vs estimated, per inference", title_justify="left")
    cols = ["network", "measured\ntime/inf", "measured\nhost peak\ngrowth", "measured\nprocess\npeak RSS", "measured\nGPU peak", energy_label]
    if compute:
        cols.append(f"estimated\ncompute-only\n{compute}")
    if memory:
        cols.append(f"estimated\nwith memory\n{memory}")
    for col in cols:
        table.add_column(col, justify="left" if col == "network" else "right")
    by_t = {r.T: r for r in result.rows}
    for run in measured.runs:
        cells = [run.network, f"{1e3 * run.wall_s_per_inference:.4g} ms", _mib(run.host_peak_bytes), _mib(run.host_peak_rss_bytes), _mib(run.gpu_peak_bytes), _measured_energy(run)]
        for name in (compute, memory):
            if name:
                pj = result.ann.energy_pj.get(name) if run.T is None else by_t[run.T].energy_pj.get(name)
                cells.append(_joules(None if pj is None else pj * 1e-12))
        table.add_row(*cells)
    return table


def dataset_energy_table(rows: dict, samples: int, grid: float, source: str, references: dict[str, str]) -> Table:
    """ESTIMATED energy of the whole sample set: per inference × samples, in J and kWh, with CO2."""
    table = Table(title=f"Estimated energy for {samples:,} samples (per inference × {samples:,}); CO2 at {grid:g} g/kWh ({source})", title_justify="left")
    for col in ("energy model", "network", "per inference", "total J", "total kWh", "CO2 g"):
        table.add_column(col, justify="left" if col in ("energy model", "network") else "right")
    for model, entries in rows.items():
        for network, e in entries.items():
            reference = references.get(model)
            if network == "ANN" and reference:
                network = f"ANN (under {reference})"
            table.add_row(model, network, _joules(e.joules_per_inference), f"{e.joules:.4g}", f"{e.kwh:.4g}", f"{e.co2_g:.4g}")
    return table
