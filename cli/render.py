"""Rich tables for the CLI. The library returns dataclasses; only this module formats."""
from __future__ import annotations

from rich.table import Table

from annsnn.analyzer import AnalysisResult
from annsnn.convert import ConversionReport
from annsnn.counting import AnnCounts

__all__ = ["info_table", "conversion_table", "evaluation_table", "energy_table", "layer_table", "si", "pct"]


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


def conversion_table(report: ConversionReport) -> Table:
    mode = report.options["mode"]["text"]
    population = ""
    if report.options["mode"]["kind"] == "percentile":
        population = " of all values" if report.options.get("percentile_of", "all") == "all" else " of positive values"
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
    table = Table(title=f"SNN vs ANN on {result.samples} samples ({result.encoding} input) — ANN top-1 {pct(ann.top1)}%", title_justify="left")
    for col in ("T", "SNN top-1 %", "gap (pts)", "agreement %", "F1 macro", "firing rate"):
        table.add_column(col, justify="right")
    for row in result.rows:
        table.add_row(str(row.T), pct(row.top1), pct(row.gap, signed=True), pct(row.agreement), f"{row.f1_macro:.4f}" if row.f1_macro is not None else "–", f"{row.firing_rate:.4f}")
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
    table = Table(title=f"Per layer at T={result.time_steps[-1]} (per inference; energy share under {next(iter(result.energy_models))})", title_justify="left")
    for col in ("layer", "type", "role", "neurons", "firing rate", "SyOPs", "MACs", "energy share"):
        table.add_column(col, justify="left" if col in ("layer", "type", "role") else "right")
    for layer in result.layers:
        table.add_row(_short(layer.name), layer.type, layer.role, f"{layer.neurons:,}" if layer.neurons else "", f"{layer.firing_rate:.4f}" if layer.neurons else "", si(layer.synaptic_acs) if layer.synaptic_acs else "", si(layer.macs) if layer.macs else "", f"{100 * layer.energy_share:.1f}%")
    return table
