"""Coverage of torchvision's classifiers: convert, simulate, count, save/reload each one.

    python reports/coverage.py                 # run every architecture not yet recorded for this code
    python reports/coverage.py --only swin_b,vit_h_14   # (re)run these, keep the other rows
    python reports/coverage.py --fresh         # forget every stored row and run all
    python reports/coverage.py --report        # only rewrite coverage.md from coverage.json

Every classification architecture of ``torchvision.models`` (random weights, 10 classes,
a small input: see :data:`SETUPS`) runs in its own process, smallest first, with a
per-model time limit. Each row of ``reports/coverage.json`` records the code it ran on
(the last commit touching ``annsnn/``, ``+dirty`` with uncommitted edits there), so a sweep can be completed in parts: a plain run skips rows recorded for the
current code and reruns the others, and ``reports/coverage.md`` is written from the stored
rows after every model, naming every code version its rows come from.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
JSON_PATH = HERE / "coverage.json"
MD_PATH = HERE / "coverage.md"
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import code_commit  # noqa: E402

T = 4  # simulation steps; the reload is checked at T = 2


@dataclass(frozen=True)
class Setup:
    """How one architecture is run: square input side, batch, time limit (s)."""

    size: int = 64
    batch: int = 2
    timeout: int = 900  # generous: the machine is shared, a model may get a fraction of a core
    why: str = ""


# 64x64 unless an architecture needs more; the largest get a batch of 1 and more time.
# ViTs are built with image_size = 2 patches (torchvision's ``image_size=`` argument):
# 4 patch tokens + the class token.
SETUPS: dict[str, Setup] = {
    "inception_v3": Setup(96, why="needs >= 75 px"),
    "maxvit_t": Setup(224, why="window and grid partitions of 7 at stride 32"),
    "vit_b_16": Setup(32, why="image_size=32 (2x2 patches)"),
    "vit_b_32": Setup(64, why="image_size=64 (2x2 patches)"),
    "vit_l_16": Setup(32, batch=1, why="image_size=32 (2x2 patches)"),
    "vit_l_32": Setup(64, batch=1, why="image_size=64 (2x2 patches)"),
    "vit_h_14": Setup(28, batch=1, timeout=1800, why="image_size=28 (2x2 patches)"),
    "regnet_y_128gf": Setup(32, batch=1, timeout=1800, why="smallest input (stride 32)"),
    "regnet_y_32gf": Setup(64, batch=1),
    "regnet_x_32gf": Setup(64, batch=1),
    "convnext_large": Setup(64, batch=1),
    "efficientnet_v2_l": Setup(64, batch=1),
    "wide_resnet101_2": Setup(64, batch=1),
}


def setup_for(name: str) -> Setup:
    return SETUPS.get(name, Setup())


def code_version() -> str:
    """The code commit (``benchmarks/provenance.py``); ``+dirty`` rows are never reused. Each
    row records its own input and batch, so a change of :data:`SETUPS` shows in the table."""
    return code_commit(ROOT)


def architectures() -> list[tuple[str, int]]:
    """(name, parameter count from torchvision's weight metadata), smallest first."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    sized = []
    for name in names:
        try:
            weights = torchvision.models.get_model_weights(name)
            params = int(next(iter(weights)).meta.get("num_params", 0))
        except Exception:
            params = 0
        sized.append((name, params))
    return sorted(sized, key=lambda item: (item[1], item[0]))


def build(name: str):
    import torchvision

    kwargs: dict = {"weights": None, "num_classes": 10}
    size = setup_for(name).size
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    if name in ("inception_v3", "googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = True
    return torchvision.models.get_model(name, **kwargs), (3, size, size)


def run_one(name: str) -> dict:
    import resource

    import torch

    from annsnn.coverage import check_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    start, cpu = time.time(), time.process_time()
    result = check_model(name, *build(name), T=T, batch=setup_for(name).batch).to_dict()  # no reference kept: freed after conversion
    result["seconds"] = round(time.time() - start, 1)
    result["cpu_seconds"] = round(time.process_time() - cpu, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["batch"] = setup_for(name).batch
    return result


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(results: dict[str, dict], order: dict[str, int], current: str) -> str:
    from annsnn.coverage import STAGES

    total = len(order)
    rows = sorted((r for r in results.values() if r["name"] in order), key=lambda r: order[r["name"]])
    pending = [n for n in order if n not in results]
    counts = {s: sum(1 for r in rows if r.get("status", {}).get(s) == "ok") for s in STAGES}
    full = sum(1 for r in rows if r.get("ok"))
    versions: dict[str, list[str]] = {}
    for r in rows:
        versions.setdefault(r.get("code", "unknown"), []).append(r["name"])
    if len(versions) == 1:
        provenance = f"All {len(rows)} rows ran on code commit `{next(iter(versions))}` (`benchmarks/provenance.py`)."
    else:
        provenance = "**Rows come from different code versions** (last commit touching the code): " + "; ".join(
            f"`{v}`: {len(names)} rows" + (f" ({', '.join(names)})" if len(names) <= 12 else "") for v, names in sorted(versions.items(), key=lambda kv: -len(kv[1]))
        ) + "."
    if current not in versions or len(versions) > 1:
        provenance += f" The current code is `{current}`."
    failing = [r for r in rows if not r.get("ok")]
    lines = [
        "# torchvision classifier coverage",
        "",
        "Generated by `make coverage` (`python reports/coverage.py`; `--only NAME,...` reruns some rows, `--report` only",
        "rewrites this file from `coverage.json`). Random weights, 10 classes, random inputs in [0, 1); mode 99.9,",
        f"T = {T} for the simulation, bit-identical reload checked at T = 2. Each model runs alone in its own process",
        "with one thread. A model is converted fully spiking first; `--hybrid` is used only when that is refused.",
        "*input*: square side in pixels (64 unless the architecture needs more; ViTs are built with `image_size` = 2",
        "patches, as noted); *batch*: samples simulated (1 for the largest models, to save time and memory).",
        "*Spike-driven share*: of the dense work per step (weight layers + analog ops, as the ANN would do it),",
        "the part done by weight layers driven by spikes (ACs on spikes instead of MACs).",
        f"*max |err|* is |SNN(T)/T - ANN| at T = {T} with random weights; it is information, not a test.",
        "*s*: wall-clock seconds of the model's process (the machine is shared, so it varies); *MB*: its peak resident memory.",
        "",
        provenance,
        "",
        f"**{full} / {total}** architectures pass every stage. "
        + ", ".join(f"{s}: {counts[s]}/{total}" for s in STAGES)
        + (f". Not run yet: {len(pending)} ({', '.join(pending)})." if pending else "."),
        "",
        "| # | architecture | input | batch | mode | IF layers | analog ops kept | spike-driven share | convert | simulate | count | save/reload | max \\|err\\| | s | MB | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        st = r.get("status", {})
        analog = ", ".join(f"{k}×{v}" for k, v in sorted(r.get("analog_ops", {}).items())) or "–"
        share = r.get("spike_driven_share")
        err = r.get("max_abs_error")
        mode = ("hybrid" if r.get("hybrid") else "spiking") if st.get("convert") == "ok" else "–"
        setup = setup_for(r["name"])
        size = str(r.get("input_shape", ["?"])[-1]) + (f" ({setup.why})" if setup.why else "")
        lines.append(
            f"| {i} | {r['name']} | {size} | {r.get('batch', '–')} | {mode} | {r.get('if_layers', 0)} | {analog} | "
            f"{'–' if share is None else f'{100 * share:.1f}%'} | {st.get('convert', '–')} | {st.get('simulate', '–')} | "
            f"{st.get('count', '–')} | {st.get('save', '–')} | {'–' if err is None else f'{err:.2g}'} | {r.get('seconds', '–')} | "
            f"{r.get('peak_rss_mb', '–')} | {_cell(r.get('error') or '')} |"
        )
    lines += ["", "## Note", ""]
    if failing or pending:
        lines.append("Still failing: " + ("; ".join(f"**{r['name']}**: {r.get('error') or 'failed'}" for r in failing) or "none") + ".")
        if pending:
            lines.append(f"Not run yet: {', '.join(pending)}.")
    else:
        lines.append(f"All {total} architectures pass every stage; none fails.")
    heavy = [r for r in rows if (r.get("peak_rss_mb") or 0) > 8000]
    if heavy:
        lines.append(
            "Peak memory above 8 GB: " + ", ".join(f"{r['name']} ({r['peak_rss_mb'] / 1000:.1f} GB)" for r in heavy)
            + ": about 4 copies of the weights (2.5 GB each for these) are alive at the reload check, the file's"
            " tensors of the SNN graph and its reference ANN plus the modules being rebuilt (measured on vit_b_32:"
            " base + 4.1 copies at reload, + 3.3 during conversion)."
        )
    return "\n".join(lines) + "\n"


def _load() -> dict[str, dict]:
    return json.loads(JSON_PATH.read_text())["results"] if JSON_PATH.exists() else {}


def _write(results: dict[str, dict], order: dict[str, int], current: str) -> None:
    JSON_PATH.write_text(json.dumps({"results": results}, indent=1) + "\n")
    MD_PATH.write_text(render(results, order, current))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=int, default=0, help="seconds per model (default: each architecture's own, 900 or 1800)")
    parser.add_argument("--only", default="", help="comma-separated architectures to (re)run")
    parser.add_argument("--fresh", action="store_true", help="forget every stored row")
    parser.add_argument("--report", action="store_true", help="only rewrite coverage.md from coverage.json")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    archs = architectures()
    order = {name: i for i, (name, _) in enumerate(archs)}
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in order]
    if unknown:
        sys.exit(f"error: not a torchvision classifier: {', '.join(unknown)}")
    current = code_version()
    results = {} if args.fresh else _load()
    if args.report:
        _write(results, order, current)
        return
    if only:
        wanted = only
    else:
        wanted = [n for n in order if current.endswith("+dirty") or results.get(n, {}).get("code") != current]
    for name in wanted:
        timeout = args.timeout or setup_for(name).timeout
        try:
            # glibc returns freed blocks >= 64 KiB to the system at once: the freed copies of a
            # 600M-parameter model do not stay resident
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, timeout=timeout, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode == 0 and lines:
                result = json.loads(lines[-1])
            else:
                tail = (proc.stderr.strip().splitlines() or [f"no output (exit status {proc.returncode})"])[-1]
                result = {"name": name, "status": {}, "error": f"crashed: {tail[:300]}"}
        except subprocess.TimeoutExpired:
            result = {"name": name, "status": {}, "error": f"timeout after {timeout} s"}
        result["code"] = current
        results[name] = result
        _write(results, order, current)
    _write(results, order, current)


if __name__ == "__main__":
    main()
