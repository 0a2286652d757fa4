"""Every output of the CLI: rich tables, CSV, Markdown and the JSON layout.

The library returns typed results; this module is the only place that formats them, with
one renderer per result type and one wording per concept (a break-even T is always
``str(BreakEven)``; a value that was not counted is always "–" in tables, empty in CSV
and null in JSON). Every result names the SNN file it came from, with its SHA-256 prefix.
Tables are laid out for 80 columns: long cells fold onto a second line, never "…".
"""
from __future__ import annotations

import csv
import io

from rich.console import Group
from rich.table import Table

from annsnn.analyzer import AnalysisResult, AnnEnergy, layer_label
from annsnn.conversion_options import ConversionReport
from annsnn.counting import AnnCounts
from annsnn.workspace import SnnFile

__all__ = [
    "info_table", "conversion_table", "conversion_notes", "mode_words", "evaluation_table", "energy_table", "layer_table", "ann_layer_table", "si", "pct",
    "energy_str", "break_even_line", "energy_csv", "energy_markdown", "result_json", "latency_notes", "ann_energy_lines",
    "robustness_table", "robustness_csv", "measured_table", "dataset_energy_table", "snn_title",
]

NOT_COUNTED = "–"


def snn_title(file: SnnFile | None) -> str:
    """The one way a result names its SNN: file name and SHA-256 prefix."""
    return "" if file is None else f"{file.path} (sha256 {file.short})"


def _table(title: str, file: SnnFile | None = None) -> Table:
    full = f"{snn_title(file)}\n{title}" if file is not None else title
    return Table(title=full, title_justify="left")


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




def info_table(counts: AnnCounts, support: dict[str, str], title: str) -> Table:
    """Layers, output shapes, parameters, MACs and whether each activation converts (80
    columns: ops other than MACs go into the caption, per kind)."""
    others = counts.other_ops()
    caption = "other ops, not in the MACs: " + ", ".join(f"{k} {si(v)}" for k, v in others.items()) if others else None
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for col in ("layer", "type", "output shape", "params", "MACs", "converts"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left", overflow="fold")
    for layer in counts.layers:
        table.add_row(layer.name, layer.type, "×".join(map(str, layer.output_shape[1:])), f"{layer.params:,}", si(layer.macs) if layer.macs else "", support.get(layer.name, ""))
    table.add_section()
    table.add_row("total", "", "", f"{counts.params:,}", si(counts.macs), "")
    return table


def mac_summary(counts: AnnCounts) -> str:
    """The MAC total in readable units (k, M, G), split by layer kind."""
    conv = sum(l.macs for l in counts.layers if l.type.startswith("Conv"))
    lin = sum(l.macs for l in counts.layers if l.type == "Linear")
    return (f"MACs (padded positions excluded): {si(counts.macs)} (conv {si(conv)}, linear {si(lin)}, other {si(counts.macs - conv - lin)}); "
            f"fvcore's count with padding {si(counts.macs_with_padding)}; parameters {counts.params:,}")


def zoo_table(rows: list[tuple[str, str, str, int, int | None, str]]) -> Table:
    """``annsnn zoo list``: name (its description under it, wrapped between words), input,
    dataset, parameters, MACs (None: not counted); fits 80 columns."""
    from rich.text import Text

    table = Table(title="annsnn model zoo", title_justify="left", show_lines=True)
    table.add_column("name: description", ratio=1, overflow="fold")
    for col in ("input", "dataset", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left", no_wrap=True)
    for name, shape, dataset, params, macs, description in rows:
        cell = Text(name, style="bold")
        cell.append("\n" + description, style="dim")
        table.add_row(cell, shape, dataset, si(params), "" if macs is None else si(macs))
    return table


def energy_models_table(presets) -> Group:
    """``annsnn energy-models``: every preset's constants in a table narrow enough for 80
    columns, its source as a reference ``[n]`` into the numbered list below the table (so a
    citation wraps between words, never inside one)."""
    from rich.text import Text

    cited = [m.citation + ("" if m.verified else " [UNVERIFIED]") for m in presets]
    sources = list(dict.fromkeys(cited))
    table = Table(title="Energy models (pJ per operation)", title_justify="left")
    for col, justify in (("name", "left"), ("kind", "left"), ("E_MAC", "right"), ("E_AC / synop", "right"),
                         ("E_neuron (active / idle)", "right"), ("bytes", "right"), ("source", "right")):
        table.add_column(col, justify=justify, overflow="fold", no_wrap=col in ("name", "kind"))
    for m, citation in zip(presets, cited):
        neuron = f"{m.e_neuron_pj:g}" if m.e_neuron_inactive_pj is None else f"{m.e_neuron_pj:g} / {m.e_neuron_inactive_pj:g}"
        source = sources.index(citation) + 1
        table.add_row(m.name, m.kind, "–" if m.e_mac_pj is None else f"{m.e_mac_pj:g}", f"{m.e_ac_pj:g}", neuron,
                      "" if m.kind != "digital" else str(m.value_bytes), f"[{source}]")
    return Group(table, *(Text(f"[{n}] {citation}") for n, citation in enumerate(sources, 1)))


def nir_table(network, path: str, dt: float) -> Table:
    """``annsnn import-nir``: the layers annsnn runs for a NIR graph."""
    table = Table(title=f"{path}: input {tuple(network.meta['input_shape'])}, dt={dt:g}", title_justify="left")
    for col in ("layer", "type", "details"):
        table.add_column(col, overflow="fold")
    for name, module in network.graph.named_children():
        table.add_row(name, type(module).__name__, module.extra_repr())
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
        table.add_row(layer_label(layer.name), layer.label, f"{layer.neurons:,}", "–" if layer.max is None else f"{layer.max:.4g}", f"{layer.scale:.4g}", f"{100 * layer.clipped_fraction:.3f}%", "yes" if layer.spiking else "analog")
    table.add_section()
    table.add_row("total", "", f"{report.neurons:,}", "", "", "", "")
    return table


def conversion_notes(report: ConversionReport, options, calibration: str, readout_delay: int) -> list[str]:
    """The lines under the conversion table: what was folded and rescaled, the library's
    notes, and the calibration in words (the bias sentence only where there is a bias)."""
    lines = []
    if report.rescale_synapses:
        lines.append(f"{len(report.rescale_synapses)} rescale synapse(s) on residual/shortcut paths (listed in --json)")
    if report.folded_batchnorm:
        lines.append(f"folded {len(report.folded_batchnorm)} BatchNorm layer(s)")
    if options.maxpool == "avg":
        lines.append("note: MaxPool was replaced by AvgPool: the converted network approximates a changed ANN")
    lines.extend(f"note: {note}" for note in report.notes)
    n = options.T
    if calibration == "none":
        lines.append("calibration: none (plain normalization)")
    elif options.bias == "step":
        lines.append(f"calibration: {calibration} for T={n} (valid for every T <= {n}; beyond it the last step's bias repeats)")
    elif options.bias == "layer":
        lines.append(f"calibration: {calibration} for T={n} (one constant bias per channel, fitted at T={n})")
    else:
        lines.append(f"calibration: {calibration} for T={n} (thresholds searched at T={n}; no bias)")
    weighted = options.readout == "weighted"
    if weighted:
        other = "as the delay below" if readout_delay else "every step summed"
        lines.append(f"readout: at T={n} the sum of the {n} output steps with the fitted per-step weights (--json lists them); at other T {other}")
    if readout_delay and n is None:  # no calibrated latency: d(T) = min(k, T - 1) (annsnn.simulate.readout_start)
        lines.append(f"readout: the first {readout_delay} output step(s) are left out at every T (at most T - 1 of them); every step is simulated and counted")
    elif readout_delay:
        lines.append(f"readout{' at other T' if weighted else ''}: the first {readout_delay} output step(s) are left out at T >= {n} (below, the same share: floor(k T / {n})); every step is simulated and counted")
    return lines


def evaluation_table(result: AnalysisResult, file: SnnFile | None = None) -> Table:
    ann = result.ann
    top5 = ann.top5 is not None
    table = _table(f"SNN vs ANN on {result.samples} samples ({result.encoding} input); ANN top-1 {pct(ann.top1)}%", file)
    f4 = lambda v: f"{v:.4f}" if v is not None else NOT_COUNTED  # noqa: E731
    for col in ("T", "top-1 %") + (("top-5 %",) if top5 else ()) + ("gap pts", "agree %", "recall macro", "F1 macro", "firing rate"):
        table.add_column(col, justify="right", overflow="fold")
    table.add_row("ANN", pct(ann.top1), *((pct(ann.top5),) if top5 else ()), "", "", f4(ann.recall_macro), f4(ann.f1_macro), "")
    table.add_section()
    for row in result.rows:
        table.add_row(str(row.T), pct(row.top1), *((pct(row.top5),) if top5 else ()), pct(row.gap, signed=True), pct(row.agreement), f4(row.recall_macro), f4(row.f1_macro), f4(row.firing_rate))
    return table


_T_PER_ENERGY_TABLE = 3  # T columns per energy table: more would fold numbers mid-digit in 80 columns


def energy_table(result: AnalysisResult, file: SnnFile | None = None) -> Group:
    """Tables that fit 80 columns: accuracy and ops per T, then energy per model and T
    (each cell: energy per inference and its ratio to the ANN's; last column: break-even T),
    one energy table per three values of T, break-even T in the last."""
    ann = result.ann
    ops = _table(f"Accuracy and ops per inference ({result.samples} samples, {result.encoding} input; first-layer MACs {result.mac_counting})", file)
    for col in ("T", "top-1 %", "gap pts", "SyOPs (ACs)", "MACs", "total ops", "firing rate"):
        ops.add_column(col, justify="right", overflow="fold")
    ops.add_row("ANN", pct(ann.top1), "", NOT_COUNTED, si(ann.macs), si(ann.macs + ann.bias_adds), "")
    ops.add_section()
    for row in result.rows:
        ops.add_row(str(row.T), pct(row.top1), pct(row.gap, signed=True), si(row.synaptic_acs), si(row.macs), si(row.total_ops),
                    NOT_COUNTED if row.firing_rate is None else f"{row.firing_rate:.4f}")
    groups = [result.rows[i : i + _T_PER_ENERGY_TABLE] for i in range(0, len(result.rows), _T_PER_ENERGY_TABLE)] or [[]]
    tables = []
    for index, rows in enumerate(groups):
        last = index == len(groups) - 1
        part = "" if len(groups) == 1 else f", T = {', '.join(str(row.T) for row in rows)}"
        energy = Table(title=f"Energy per inference{part} (× = SNN/ANN; neuromorphic models price the ANN under their reference)", title_justify="left")
        energy.add_column("model", no_wrap=True)
        energy.add_column("ANN", justify="right", no_wrap=True)
        for row in rows:
            energy.add_column(f"T={row.T}", justify="right", no_wrap=True)
        if last:
            energy.add_column("break-even", overflow="fold")
        for name, model in result.energy_models.items():
            reference = "" if model.get("kind", "digital") == "digital" else f"\n({model['ann_reference']})"
            cells = []
            for row in rows:
                pj = None if row.energy_pj is None else row.energy_pj[name]
                ratio = None if row.energy_ratio is None else row.energy_ratio[name]
                cells.append(energy_str(pj) + ("" if ratio is None else f"\n×{ratio:.3f}"))
            breaks = NOT_COUNTED if result.break_even_T is None else str(result.break_even_T[name])
            energy.add_row(name, energy_str(ann.energy_pj[name]) + reference, *cells, *([breaks] if last else []))
        tables.append(energy)
    return Group(ops, *tables)


def break_even_line(result: AnalysisResult) -> str:
    """Break-even T under every model, in the one wording of :class:`~annsnn.energy.BreakEven`."""
    if result.break_even_T is None:
        return "break-even T: not counted"
    return "break-even T (largest T with SNN energy below the ANN's): " + "; ".join(f"{k}: {v}" for k, v in result.break_even_T.items())


def latency_notes(snn, T) -> list[str]:
    """A note when a requested T lies beyond the latency the SNN was calibrated for."""
    from annsnn.runs import calibrated_T

    n = calibrated_T(snn)
    steps = [T] if isinstance(T, int) else list(T)
    beyond = [t for t in steps if n is not None and t > n]
    if not beyond:
        return []
    return [f"T={', '.join(map(str, beyond))} is beyond the T={n} this SNN was calibrated for: its last step's bias repeats there (convert with --T {max(beyond)} to calibrate for it)"]


def result_json(result: AnalysisResult, run) -> dict:
    """The JSON of ``evaluate``, ``energy`` and ``demo``: the run's file and data, then
    :meth:`AnalysisResult.to_dict` (schema_version 1; "not counted" is null)."""
    data = result.to_dict()
    return {"schema_version": data.pop("schema_version"), **run.header(), **data}


def _cell(value) -> object:
    return "" if value is None else value


def energy_csv(result: AnalysisResult, file: SnnFile | None = None) -> str:
    """The trade-off as CSV: an ANN row, then one row per T. A neuromorphic model prices the
    ANN row under its reference (``ann_reference_NAME``); empty = not counted; the last two
    columns name the SNN file."""
    buffer = io.StringIO()
    names = list(result.energy_models)
    references = {n: m["ann_reference"] for n, m in result.energy_models.items() if m.get("kind", "digital") != "digital"}
    writer = csv.writer(buffer)
    counts = ["synaptic_acs", "macs", "bias_acs", "neuron_updates", "active_updates", "comparisons", "total_ops"]
    tail = [file.path if file else "", file.sha256 if file else ""]
    writer.writerow(["T", "top1", "gap", "agreement", "firing_rate"] + counts + [f"energy_pj_{n}" for n in names] + [f"energy_ratio_{n}" for n in names]
                    + [f"ann_reference_{n}" for n in references] + ["break_even_" + n for n in names] + ["snn_file", "snn_sha256"])
    ann = result.ann
    breaks = ["" if result.break_even_T is None else str(result.break_even_T[n]) for n in names]
    writer.writerow(["ANN", _cell(ann.top1), "", 1.0, "", "", ann.macs, ann.bias_adds, "", "", "", ann.macs + ann.bias_adds] + [_cell(ann.energy_pj[n]) for n in names]  # spike counts do not apply: empty, as the table's "–" and the JSON's absent keys
                    + [1.0 for _ in names] + list(references.values()) + breaks + tail)
    for r in result.rows:
        energy = [_cell(None if r.energy_pj is None else r.energy_pj[n]) for n in names]
        ratio = [_cell(None if r.energy_ratio is None else r.energy_ratio[n]) for n in names]
        writer.writerow([r.T, _cell(r.top1), _cell(r.gap), r.agreement, _cell(r.firing_rate)] + [_cell(getattr(r, c)) for c in counts] + energy + ratio
                        + ["" for _ in references] + breaks + tail)
    return buffer.getvalue()


def energy_markdown(result: AnalysisResult, file: SnnFile | None = None) -> str:
    """The trade-off as a Markdown table, with the same wording as the terminal."""
    names = list(result.energy_models)
    lines = [f"SNN: `{file.path}` (sha256 `{file.short}`); {result.samples} samples, {result.encoding} input", ""] if file else []
    head = ["T", "top-1 %", "gap", "SyOPs", "MACs", "total ops"] + [f"E {n}" for n in names] + [f"SNN/ANN {n}" for n in names]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ann = result.ann
    lines.append("| ANN | " + " | ".join([pct(ann.top1), "", NOT_COUNTED, si(ann.macs), si(ann.macs + ann.bias_adds)] + [energy_str(ann.energy_pj[n]) for n in names] + ["1" for _ in names]) + " |")
    for r in result.rows:
        energy = [energy_str(None if r.energy_pj is None else r.energy_pj[n]) for n in names]
        ratio = [NOT_COUNTED if r.energy_ratio is None or r.energy_ratio[n] is None else f"{r.energy_ratio[n]:.3f}" for n in names]
        lines.append("| " + " | ".join([str(r.T), pct(r.top1), pct(r.gap, True), si(r.synaptic_acs), si(r.macs), si(r.total_ops)] + energy + ratio) + " |")
    lines.append("")
    lines.append(break_even_line(result))
    references = [f"{n}: the ANN column is priced under {m['ann_reference']}" for n, m in result.energy_models.items() if m.get("kind", "digital") != "digital"]
    if references:
        lines.append("")
        lines.append("; ".join(references))
    return "\n".join(lines) + "\n"


def ann_energy_lines(result: AnnEnergy) -> list[str]:
    """``energy --ann``: one line per model, then the counts and what was not computed."""
    lines = [f"{name}: {energy_str(pj)} per inference" + (f" (ANN under {result.references[name]})" if name in result.references else "") for name, pj in result.energy_pj.items()]
    lines.append(f"MACs {si(result.macs)}, bias adds {si(result.bias_adds)}")
    lines += [f"note: {name} not computed: {reason}" for name, reason in result.not_computed.items()]
    if result.unsupported:  # not counted, so not priced: the figures above leave them out
        lines.append("note: ops without a count, left out of the energy: " + ", ".join(f"{k} x{v}" for k, v in sorted(result.unsupported.items())))
    return lines


def _model_header(prefix: str, name: str) -> str:
    """A column header for an energy model that wraps at "+" (80-column layouts)."""
    return f"{prefix}{name}".replace("+", "\n+")


def layer_table(result: AnalysisResult) -> Group:
    """Per SNN layer at max T: counts, then absolute energy under every model (80 columns)."""
    names = list(result.energy_models)
    comparisons = any(layer.comparisons for layer in result.layers)
    counts = Table(title=f"Per layer (SNN) at T={result.time_steps[-1]}, per inference", title_justify="left")
    for col in ["layer", "type", "neurons", "firing rate", "SyOPs", "MACs"] + (["comparisons"] if comparisons else []):
        counts.add_column(col, justify="left" if col in ("layer", "type") else "right", overflow="fold")
    energy = Table(title=f"Per layer (SNN) at T={result.time_steps[-1]}: energy per inference under every model", title_justify="left")
    energy.add_column("layer", overflow="fold")
    for name in names:
        energy.add_column(_model_header("", name), justify="right", overflow="fold")
    for layer in result.layers:
        name = layer_label(layer.name)
        counts.add_row(
            name, layer.type, f"{layer.neurons:,}" if layer.neurons else "", f"{layer.firing_rate:.4f}" if layer.neurons else "",
            si(layer.synaptic_acs) if layer.synaptic_acs else "", si(layer.macs) if layer.macs else "",
            *([si(layer.comparisons) if layer.comparisons else ""] if comparisons else []),
        )
        energy.add_row(name, *[energy_str(layer.energy_pj[n]) for n in names])
    return Group(counts, energy)


def ann_layer_table(result: AnalysisResult) -> Table:
    names = list(result.energy_models)
    table = Table(title="Per layer (ANN), per inference (MACs exclude padding; neuromorphic models price the ANN under their reference)", title_justify="left")
    for col in ["layer", "MACs", "MACs with\npadding\n(fvcore)"] + [_model_header("E ", n) for n in names]:
        table.add_column(col, justify="left" if col == "layer" else "right", overflow="fold")
    for layer in result.ann_layers:
        if not layer.macs and not layer.bias_adds:
            continue
        table.add_row(layer_label(layer.name), si(layer.macs), si(layer.macs_with_padding), *[energy_str(layer.energy_pj[n]) for n in names])
    return table


def robustness_table(result, file: SnnFile | None = None) -> Table:
    """One row per perturbation, strength and T: the ANN's top-1 (on the first row of each
    perturbation), the SNN's top-1 and its agreement with the ANN. Long rather than one column
    per T, so it fits 80 columns however many T there are (macro F1 is in --json and --csv)."""
    table = _table(f"Robustness on {result.samples} samples (top-1 and agreement with the ANN, %)", file)
    for col in ("perturbation", "strength", "crafted on", "T", "ANN top-1", "SNN top-1", "agree"):
        table.add_column(col, justify="left" if col in ("perturbation", "crafted on") else "right", no_wrap=True)
    where = {"none": "–", "ann": "ANN", "snn": "SNN (BPTT)"}  # the notes say how each attack transfers
    for row in result.rows:
        for i, t in enumerate(result.time_steps):
            first = i == 0
            table.add_row(row.perturbation if first else "", f"{row.strength:g}" if first else "", where[row.crafted_on] if first else "",
                          str(t), pct(row.ann.top1) if first else "", pct(row.snn[t].top1), pct(row.agreement[t]),
                          end_section=i == len(result.time_steps) - 1)
    return table


def robustness_csv(result, file: SnnFile | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    tail = [file.path if file else "", file.sha256 if file else ""]
    writer.writerow(["perturbation", "strength", "crafted_on", "network", "T", "top1", "recall_macro", "f1_macro", "top5", "agreement", "snn_file", "snn_sha256"])
    for row in result.rows:
        writer.writerow([row.perturbation, row.strength, row.crafted_on, "ann", "", row.ann.top1, row.ann.recall_macro, row.ann.f1_macro, _cell(row.ann.top5), 1.0] + tail)
        for t in result.time_steps:
            m = row.snn[t]
            writer.writerow([row.perturbation, row.strength, row.crafted_on, "snn", t, m.top1, m.recall_macro, m.f1_macro, _cell(m.top5), row.agreement[t]] + tail)
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


def measured_table(measured, result) -> Group:
    """Per inference: what was MEASURED (time, memory, energy), then the measured energy beside
    the two kinds of ESTIMATES. Two tables, so that each fits 80 columns unwrapped."""
    compute = next((m for m, d in result.energy_models.items() if not m.endswith("+sram") and d.get("kind", "digital") == "digital"), None)
    memory = next((m for m in result.energy_models if m.endswith("+sram")), None)
    energy_label = "energy/inf\n(above idle)" if measured.sensors.readable else "energy/inf\n(no sensor)"
    on_gpu = not str(measured.device).startswith("cpu")
    times = Table(title=f"Measured on this machine ({measured.device}, {measured.threads} threads, {measured.samples} samples), per inference", title_justify="left")
    cols = ["network", "time/inf", "host peak\ngrowth", "process\npeak RSS", *(["GPU peak"] if on_gpu else []), energy_label]
    for col in cols:
        times.add_column(col, justify="left" if col == "network" else "right", no_wrap=True)
    for run in measured.runs:
        memory_cells = [_mib(run.host_peak_bytes), _mib(run.host_peak_rss_bytes), *([_mib(run.gpu_peak_bytes)] if on_gpu else [])]
        times.add_row(run.network, f"{1e3 * run.wall_s_per_inference:.4g} ms", *memory_cells, _measured_energy(run))
    versus = Table(title="Energy per inference: measured vs estimated", title_justify="left")
    versus.add_column("network", no_wrap=True)
    versus.add_column(f"measured\n{energy_label}", justify="right", no_wrap=True)
    for name, kind in ((compute, "compute-only"), (memory, "with memory")):
        if name:
            versus.add_column(f"estimated\n{kind}\n{name}", justify="right", no_wrap=True)
    by_t = {r.T: r for r in result.rows}
    for run in measured.runs:
        cells = [run.network, _measured_energy(run)]
        for name in (compute, memory):
            if name:
                pj = result.ann.energy_pj.get(name) if run.T is None else by_t[run.T].energy_pj.get(name)
                cells.append(_joules(None if pj is None else pj * 1e-12))
        versus.add_row(*cells)
    return Group(times, versus)


def dataset_energy_table(table_data) -> Table:
    """ESTIMATED energy of the whole sample set (a :class:`~annsnn.hardware_measure.DatasetEnergyTable`).
    An ANN priced under another model's constants (neuromorphic models' reference) is marked *."""
    samples, grid = table_data.samples, table_data.grid_g_per_kwh
    priced = sorted({f"{model}: {ref}" for model, ref in table_data.references.items() if ref and "ANN" in table_data.rows.get(model, {})})
    caption = f"* ANN priced under its reference model ({'; '.join(priced)})" if priced else None
    table = Table(title=f"Estimated energy for {samples:,} samples (per inference × {samples:,}); CO2 at {grid:g} g/kWh ({table_data.grid_source})",
                  title_justify="left", caption=caption, caption_justify="left")
    for col in ("energy model", "network", "per inference", "total J", "total kWh", "CO2 g"):
        table.add_column(col, justify="left" if col in ("energy model", "network") else "right", no_wrap=True)
    for model, entries in table_data.rows.items():
        for network, e in entries.items():
            if network == "ANN" and table_data.references.get(model):
                network = "ANN *"
            table.add_row(model, network, _joules(e.joules_per_inference), f"{e.joules:.3g}", f"{e.kwh:.3g}", f"{e.co2_g:.3g}")  # 3 digits: 80 columns (the JSON keeps them all)
    return table
