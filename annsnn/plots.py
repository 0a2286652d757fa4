"""PNG plots of an :class:`~annsnn.analyzer.AnalysisResult` (matplotlib, Agg backend)."""
from __future__ import annotations

import os
from pathlib import Path

from .analyzer import AnalysisResult
from .files import atomic_path

__all__ = ["save_plots", "save_robustness_plots"]


def save_plots(result: AnalysisResult, directory: str | os.PathLike, prefix: str = "", *, plain: AnalysisResult | None = None) -> list[Path]:
    """Write accuracy-vs-T, energy-vs-T, accuracy-energy Pareto and per-layer firing plots.
    ``plain``: the same network converted with plain normalization, drawn beside it in
    accuracy-vs-T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    steps = [row.T for row in result.rows]
    written: list[Path] = []

    from matplotlib.ticker import NullFormatter

    def save(fig, name: str) -> None:
        for axis in fig.axes:
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.yaxis.set_minor_formatter(NullFormatter())
        path = out / f"{prefix}{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    if result.rows and result.rows[0].top1 is not None:
        ax.plot(steps, [100 * (r.top1 or 0) for r in result.rows], "o-", label="SNN")
        if result.ann.top1 is not None:
            ax.axhline(100 * result.ann.top1, color="k", ls="--", label="ANN")
        ax.set_ylabel("top-1 accuracy (%)")
    else:
        ax.plot(steps, [100 * r.agreement for r in result.rows], "o-", label="agreement with ANN")
        ax.set_ylabel("agreement (%)")
    ax.set_xscale("log")
    ax.set_xlabel("time steps T")
    ax.set_title("Accuracy vs T")
    ax.legend()
    save(fig, "accuracy_vs_T")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in result.energy_models:
        ax.plot(steps, [r.energy_pj[name] / 1e6 for r in result.rows], "o-", label=f"SNN {name}")
        ann = result.ann.energy_pj.get(name)
        if ann:
            ax.axhline(ann / 1e6, ls="--", lw=1, label=f"ANN ({name if result.energy_models[name]['kind'] == 'digital' else result.energy_models[name]['ann_reference']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time steps T")
    ax.set_ylabel("energy per inference (µJ)")
    ax.set_title("Energy vs T")
    ax.legend(fontsize=7)
    save(fig, "energy_vs_T")

    first = next(iter(result.energy_models))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [r.energy_pj[first] / 1e6 for r in result.rows]
    ys = [100 * (r.top1 if r.top1 is not None else r.agreement) for r in result.rows]
    ax.plot(xs, ys, "o-", label="SNN")
    for x, y, t in zip(xs, ys, steps):
        ax.annotate(f"T={t}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if result.ann.energy_pj.get(first) and result.ann.top1 is not None:
        ax.plot([result.ann.energy_pj[first] / 1e6], [100 * result.ann.top1], "k*", ms=12, label="ANN")
    ax.set_xscale("log")
    ax.set_xlabel(f"energy per inference (µJ, {first})")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy–energy trade-off")
    ax.legend()
    save(fig, "pareto")

    neuron_rows = [layer for layer in result.layers if layer.role == "neurons" and layer.neurons]
    if neuron_rows:
        fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(neuron_rows)), 3.5))
        ax.bar(range(len(neuron_rows)), [layer.firing_rate for layer in neuron_rows])
        ax.set_xticks(range(len(neuron_rows)), [layer.name for layer in neuron_rows], rotation=90, fontsize=7)
        ax.set_ylabel(f"spikes / neuron / step (T={steps[-1]})")
        ax.set_title("Per-layer firing rates")
        save(fig, "firing_rates")
    return written


def save_robustness_plots(result, directory: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Top-1 vs strength for each perturbation (and where an attack was crafted): one
    curve for the ANN and one per T. ``result`` is a :class:`~annsnn.robustness.RobustnessResult`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    titles = {"none": "", "ann": " crafted on the ANN (transfer to SNN)", "snn": " crafted on the SNN (direct, BPTT)"}
    groups: dict[tuple[str, str], list] = {}
    for row in result.rows:
        if row.perturbation != "clean":
            groups.setdefault((row.perturbation, row.crafted_on), []).append(row)
    written: list[Path] = []
    for (kind, source), rows in groups.items():
        rows = sorted(rows, key=lambda r: r.strength)
        xs = [r.strength for r in rows]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(xs, [100 * r.ann.top1 for r in rows], "ko-", label="ANN")
        for t in result.time_steps:
            ax.plot(xs, [100 * r.snn[t].top1 for r in rows], "s--", label=f"SNN T={t}")
        ax.set_xlabel({"gaussian": "noise σ", "salt-pepper": "corrupted fraction", "fgsm": "ε", "pgd": "ε"}.get(kind, "strength"))
        ax.set_ylabel("top-1 %")
        ax.set_ylim(0, 100)
        ax.set_title(f"{kind}{titles[source]}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        path = out / f"{prefix}robustness_{kind}{'' if source == 'none' else '_' + source}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written
