"""PNG plots of an :class:`~annsnn.analyzer.AnalysisResult` (matplotlib, Agg backend)."""
from __future__ import annotations

import os
from pathlib import Path

from .analyzer import AnalysisResult
from .files import atomic_path

__all__ = ["make_figures", "save_plots", "save_robustness_plots"]


_REFERENCE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))


def _time_axis(ax, steps: list[int]) -> None:
    """A log T axis labelled at every simulated T (5, 20, 50), not only at powers of ten."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(steps))
    ax.xaxis.set_major_formatter(lambda value, _pos: f"{value:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("time steps T")


def _percent_range(ax, values: list[float], min_span: float = 5.0) -> None:
    """A y range of at least ``min_span`` points around ``values`` (within 0..101), so a
    difference of 0.3 points does not fill the plot like a cliff."""
    low, high = min(values), max(values)
    pad = max(0.0, min_span - (high - low)) / 2 + 0.5
    low, high = max(0.0, low - pad), min(101.0, high + pad)  # 101: a curve at 100% stays visible
    low = max(0.0, min(low, high - min_span))
    ax.set_ylim(low, high)


def make_figures(result: AnalysisResult, *, plain: AnalysisResult | None = None) -> dict:
    """The figures :func:`save_plots` writes, by name (matplotlib ``Figure`` objects), so
    that their legends and ticks can be read back. ``plain``: the same ANN converted with
    plain normalization, drawn beside it in accuracy-vs-T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .names import layer_label

    steps = [row.T for row in result.rows]
    figures: dict = {}

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    labelled = result.rows and result.rows[0].top1 is not None
    values: list[float] = []
    if labelled:
        ys = [100 * (r.top1 or 0) for r in result.rows]
        ax.plot(steps, ys, "o-", label="SNN (calibrated)" if plain is not None else "SNN")
        values += ys
        if plain is not None and plain.rows and plain.rows[0].top1 is not None:
            plain_ys = [100 * (r.top1 or 0) for r in plain.rows]
            ax.plot([r.T for r in plain.rows], plain_ys, "s--", label="SNN (plain normalization)")
            values += plain_ys
        if result.ann.top1 is not None:
            ax.axhline(100 * result.ann.top1, color="k", ls=":", label="ANN")
            values.append(100 * result.ann.top1)
        ax.set_ylabel("top-1 accuracy (%)")
    else:
        values = [100 * r.agreement for r in result.rows]
        ax.plot(steps, values, "o-", label="agreement with ANN")
        ax.set_ylabel("agreement (%)")
    _percent_range(ax, values)
    _time_axis(ax, steps)
    ax.set_title("Accuracy vs T")
    ax.legend(loc="lower right", fontsize=8)
    figures["accuracy_vs_T"] = fig

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if result.energy_pj_counted():
        references: dict[tuple[str, float], str] = {}  # one line per distinct ANN reference
        for index, name in enumerate(result.energy_models):
            (line,) = ax.plot(steps, [r.energy_pj[name] / 1e6 for r in result.rows], "o-", label=f"SNN {name}")  # type: ignore[index]
            ann = result.ann.energy_pj.get(name)
            model = result.energy_models[name]
            reference = name if model.get("kind", "digital") == "digital" else model["ann_reference"]
            if ann and (reference, ann) not in references:
                style = _REFERENCE_STYLES[len(references) % len(_REFERENCE_STYLES)]
                ax.axhline(ann / 1e6, ls=style, lw=1.2, color=line.get_color(), label=f"ANN ({reference})")
                references[(reference, ann)] = name
    ax.set_yscale("log")
    _time_axis(ax, steps)
    ax.set_ylabel("energy per inference (µJ)")
    ax.set_title("Energy vs T")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    figures["energy_vs_T"] = fig

    first = next(iter(result.energy_models))
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    if result.energy_pj_counted():
        xs = [r.energy_pj[first] / 1e6 for r in result.rows]  # type: ignore[index]
        ys = [100 * (r.top1 if r.top1 is not None else r.agreement) for r in result.rows]
        ax.plot(xs, ys, "o-", label="SNN")
        for x, y, t in zip(xs, ys, steps):
            ax.annotate(f"T={t}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if result.ann.energy_pj.get(first) and result.ann.top1 is not None:
            ax.plot([result.ann.energy_pj[first] / 1e6], [100 * result.ann.top1], "k*", ms=12, label="ANN")
            ys = ys + [100 * result.ann.top1]
        _percent_range(ax, ys)
    ax.set_xscale("log")
    ax.set_xlabel(f"energy per inference (µJ, {first})")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy–energy trade-off")
    ax.legend(loc="lower right", fontsize=8)
    figures["pareto"] = fig

    neuron_rows = [layer for layer in result.layers if layer.role == "neurons" and layer.neurons]
    if neuron_rows:
        fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(neuron_rows)), 3.5))
        ax.bar(range(len(neuron_rows)), [layer.firing_rate for layer in neuron_rows])
        ax.set_xticks(range(len(neuron_rows)), [layer_label(layer.name) for layer in neuron_rows], rotation=90, fontsize=7)
        ax.set_ylabel(f"spikes / neuron / step (T={steps[-1]})")
        ax.set_title("Per-layer firing rates")
        figures["firing_rates"] = fig
    return figures


def _save_png(fig, path: Path, source: str | None) -> None:
    """``fig`` as a PNG at ``path`` (atomically). ``source`` names the SNN the figure shows:
    a line above the plot and the PNG's ``Source`` text chunk."""
    if source:
        fig.suptitle(source, fontsize=7, color="0.35")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Source": source} if source else None)


def save_plots(result: AnalysisResult, directory: str | os.PathLike, prefix: str = "", *, plain: AnalysisResult | None = None, source: str | None = None) -> list[Path]:
    """Write accuracy-vs-T, energy-vs-T, accuracy-energy Pareto and per-layer firing plots
    (:func:`make_figures`) as PNG files; ``source`` (e.g. ``str(SnnFile)``: the path and
    SHA-256) names the SNN on each figure and in its PNG metadata."""
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, fig in make_figures(result, plain=plain).items():
        path = out / f"{prefix}{name}.png"
        _save_png(fig, path, source)
        plt.close(fig)
        written.append(path)
    return written


def save_robustness_plots(result, directory: str | os.PathLike, prefix: str = "", *, source: str | None = None) -> list[Path]:
    """Top-1 vs strength for each perturbation (and where an attack was crafted): one
    curve for the ANN and one per T. ``result`` is a :class:`~annsnn.robustness.RobustnessResult`;
    ``source`` names the SNN as in :func:`save_plots`."""
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
    for (kind, crafted), rows in groups.items():
        rows = sorted(rows, key=lambda r: r.strength)
        xs = [r.strength for r in rows]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(xs, [100 * r.ann.top1 for r in rows], "ko-", label="ANN")
        for t in result.time_steps:
            ax.plot(xs, [100 * r.snn[t].top1 for r in rows], "s--", label=f"SNN T={t}")
        ax.set_xlabel({"gaussian": "noise σ", "salt-pepper": "corrupted fraction", "fgsm": "ε", "pgd": "ε"}.get(kind, "strength"))
        ax.set_ylabel("top-1 %")
        ax.set_ylim(0, 100)
        ax.set_title(f"{kind}{titles[crafted]}", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        path = out / f"{prefix}robustness_{kind}{'' if crafted == 'none' else '_' + crafted}.png"
        _save_png(fig, path, source)
        plt.close(fig)
        written.append(path)
    return written
