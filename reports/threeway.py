"""The three-way table (issue 15): ANN, converted SNN, directly trained SNN, counted by one
counter, for an MNIST CNN (LeNet-5) and an MNIST MLP (mlp_s); plus (issue 28) the
unsupervised STDP network (Diehl & Cook 2015, ``annsnn zoo train stdp_mnist --snn --rule
stdp``) from its checkpoint, beside an ANN of its size (mlp_400, 784-400-10). ``make threeway``.

Writes the table between the ``threeway`` markers of reports/mnist.md (``generate.py
mnist`` keeps that block) and the raw numbers to reports/threeway.json. Needs ../shared.

    python reports/threeway.py [--train-samples N] [--test-samples N] [--stdp CHECKPOINT [--only-stdp]]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "reports"))

from generate import REPORTS, SHARED, code_commit, header  # noqa: E402

from annsnn.evaluation import analyze  # noqa: E402
from annsnn.convert import ConversionOptions  # noqa: E402
from annsnn.data import load_dataset, make_loader  # noqa: E402
from annsnn.files import write_text  # noqa: E402
from annsnn.foreign_snn import network_from_direct  # noqa: E402
from annsnn.foreign_snn_files import load_foreign  # noqa: E402
from annsnn.pipeline import ann_to_snn  # noqa: E402
from annsnn.simulate import simulate  # noqa: E402
from annsnn.zoo.direct import DirectConfig, direct_checkpoint, train_direct  # noqa: E402
from annsnn.zoo.train import TrainConfig, train  # noqa: E402

MODELS = ["45nm-fp32", "loihi"]
STEPS = [5, 20, 50]
START, END = "<!-- threeway:start -->", "<!-- threeway:end -->"


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _analyze(snn, loader, steps):
    return analyze(snn, loader, steps, energy_models=MODELS)


def _wall_ms(fn, loader) -> float:
    """Wall time per image (ms), one pass over ``loader``."""
    n = 0
    start = time.perf_counter()
    with torch.no_grad():
        for x, _ in loader:
            fn(x)
            n += x.shape[0]
    return 1000 * (time.perf_counter() - start) / n


def run(arch: str, train_samples: int, test_samples: int, root: Path, ann_samples: int | None) -> list[dict]:
    test = load_dataset("mnist", "test", root)
    train_set = load_dataset("mnist", "train", root)
    loader = lambda: make_loader(test, 250, test_samples)  # noqa: E731
    rows: list[dict] = []
    started = time.perf_counter()
    ann = train(TrainConfig(arch=arch, dataset="mnist", epochs=1, lr=1e-3, batch_size=128, seed=0, data_root=str(root), train_samples=ann_samples))
    ann_train_s = time.perf_counter() - started
    started = time.perf_counter()
    calib = (x for x, _ in make_loader(train_set, 256, 1024))
    snn, _ = ann_to_snn(ann.model, calib, input_shape=(1, 28, 28), options=ConversionOptions.plain(), normalization=ann.normalization)
    calib_s = time.perf_counter() - started
    converted = _analyze(snn, loader(), STEPS)
    dense = snn.ann
    rows.append({"model": arch, "kind": "ANN", "T": None, "top1": converted.ann.top1, "syops": 0.0, "macs": float(converted.ann.macs),
                 "e45": converted.ann.energy_pj["45nm-fp32"], "eloihi": None, "train_s": ann_train_s,
                 "params": _params(ann.model), "bytes": _bytes(ann.model), "wall_ms": _wall_ms(dense, loader())})
    for row in converted.rows:
        rows.append({"model": arch, "kind": "converted SNN", "T": row.T, "top1": row.top1, "syops": row.synaptic_acs, "macs": row.macs,
                     "e45": row.energy_pj["45nm-fp32"], "eloihi": row.energy_pj["loihi"], "train_s": ann_train_s + calib_s,
                     "params": _params(snn.graph), "bytes": _bytes(snn.graph), "wall_ms": _wall_ms(lambda x, t=row.T: simulate(snn, x, t), loader())})
    for T in STEPS:
        config = DirectConfig(arch=arch, dataset="mnist", T=T, tau=2.0, epochs=1, lr=5e-3, batch_size=32, seed=0, data_root=str(root), train_samples=train_samples, test_samples=test_samples)
        result = train_direct(config)
        payload = direct_checkpoint(config, result)
        direct = network_from_direct(payload)
        r = _analyze(direct, loader(), [T])
        row = r.rows[0]
        rows.append({"model": arch, "kind": "direct SNN", "T": T, "top1": row.top1, "syops": row.synaptic_acs, "macs": row.macs,
                     "e45": row.energy_pj["45nm-fp32"], "eloihi": row.energy_pj["loihi"], "train_s": result.train_time_s,
                     "params": _params(direct.graph), "bytes": _bytes(direct.graph), "wall_ms": _wall_ms(lambda x, t=T: simulate(direct, x, t), loader())})
        print(arch, "direct T", T, f"{100 * row.top1:.2f}%", flush=True)
    return rows


def run_stdp(checkpoint: Path, test_samples: int, root: Path, ann_samples: int | None) -> list[dict]:
    """The STDP network's row (counted from its real Poisson-driven spikes at its trained T)
    and the row of an ANN with the same layer sizes (mlp_400: 784-400-10, trained like the others)."""
    payload = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    snn = load_foreign(str(checkpoint))
    T = int(payload["T"])
    test = load_dataset("mnist", "test", root)
    loader = lambda: make_loader(test, 250, test_samples)  # noqa: E731
    r = analyze(snn, loader(), [T], encoding="poisson", seed=0, energy_models=MODELS)
    row = r.rows[0]
    epochs = max(1, len(payload["history"]))
    rows = []
    started = time.perf_counter()
    ann = train(TrainConfig(arch="mlp_400", dataset="mnist", epochs=1, lr=1e-3, batch_size=128, seed=0, data_root=str(root), train_samples=ann_samples))
    ann_train_s = time.perf_counter() - started
    dense = ann.model.eval()
    from annsnn.counting import count_ann
    from annsnn.energy import get_energy_model

    counts = count_ann(dense, (1, 28, 28))
    macs = float(counts.macs)
    e45 = get_energy_model("45nm-fp32").ann_energy_pj(macs, float(counts.bias_adds))
    rows.append({"model": "mlp_400", "kind": "ANN (size of the STDP net)", "T": None, "top1": ann.test_top1, "syops": 0.0, "macs": macs,
                 "e45": e45, "eloihi": None, "train_s": ann_train_s, "params": _params(dense), "bytes": _bytes(dense), "wall_ms": _wall_ms(dense, loader())})
    rows.append({"model": "stdp_mnist", "kind": f"STDP SNN ({snn.meta['neurons']} exc.)", "T": T, "top1": float(payload["test_top1"]), "top1_counted": row.top1,
                 "syops": row.synaptic_acs, "macs": row.macs, "e45": row.energy_pj["45nm-fp32"], "eloihi": row.energy_pj["loihi"],
                 "train_s": float(payload["train_time_s"]) / epochs, "train_cpu_s": float(payload["train_cpu_s"]) / epochs, "train_images": int(payload["train_images"]) // epochs,
                 "test_images": int(payload["history"][-1]["test_images"]), "rate_hz": float(payload["config"]["rate_hz"]), "dt_ms": float(payload["config"]["dt_ms"]),
                 "silent_test_images": int(payload["history"][-1]["silent_test_images"]), "params": _params(snn.graph), "bytes": _bytes(snn.graph),
                 "wall_ms": _wall_ms(lambda x: simulate(snn, x, T, encoding="poisson", generator=torch.Generator().manual_seed(0)), loader())})
    print("stdp", f"{100 * payload['test_top1']:.2f}%", flush=True)
    return rows


def _fmt(rows: list[dict], train_samples: int, test_samples: int, ann_samples: int | None) -> str:
    lines = [START, "\n\n## Three-way: ANN, converted SNN, directly trained SNN (one counter)\n\n"]
    lines.append(
        f"Generated by `make threeway` (`python reports/threeway.py --ann-samples {ann_samples or 60000} --train-samples {train_samples} --test-samples {test_samples}`) at code commit `{code_commit()}`; do not edit by hand.\n\n"
        f"- ANN: zoo training, 1 epoch on {'all 60,000' if not ann_samples else f'the first {ann_samples:,} evenly spaced'} MNIST training images (Adam, lr 1e-3, batch 128, seed 0). "
        f"Converted SNN: that ANN, default options (mode 99.99, v_init 0), calibrated on 1,024 training images; training time = ANN training + calibration.\n"
        f"- Directly trained SNN: `annsnn zoo train ARCH --snn --T T`: the same architecture with SpikingJelly LIF neurons (tau 2, threshold 1, hard reset), ATan surrogate, "
        f"direct encoding, **1 epoch on the first {train_samples:,} evenly spaced training images only** (2 shared CPU cores), Adam lr 5e-3, batch 32; each T trained separately. With so little training these baselines are far from what direct training reaches (about 99% on MNIST); they show the counting, not the best accuracy.\n"
        f"- All SNNs are counted by annsnn's SnnCounter from their real spikes on {test_samples:,} evenly spaced test images (direct input: first-layer MACs once per sample). "
        f"Energy per inference: 45nm-fp32 (Horowitz 2014) and Loihi (the ANN under 45nm-fp32; an ANN does not run on Loihi). Compute only, no memory traffic.\n"
        f"- Size: parameters and their float32 bytes (BatchNorm folded). Wall time: ms per image on this machine (annsnn's simulator for both SNN kinds, batch 250), noisy: the 2 cores are shared.\n\n"
    )
    stdp = [r for r in rows if r["model"] == "stdp_mnist"]
    if stdp:
        r = stdp[0]
        lines.append(
            f"- STDP SNN (issue 28): `annsnn zoo train stdp_mnist --snn --rule stdp` (Diehl & Cook 2015: Poisson input at {r['rate_hz']:g} Hz for a white pixel, {r['dt_ms']:g} ms steps, T = {r['T']} steps per image; "
            f"LIF excitatory neurons with adaptive thresholds and lateral inhibition; unsupervised pair STDP; labels from training images). "
            f"Top-1 is on **all {r['test_images']:,} test images** as the trainer scored it ({r['silent_test_images']:,} of them drew no excitatory spike) (annsnn's counter on the {test_samples:,} images above gives {100 * r['top1_counted']:.2f}%). "
            f"Training time per epoch: {r['train_s']:.0f} s wall ({r['train_cpu_s']:.0f} s process CPU) for {r['train_images']:,} training images, on the 2 CPU cores shared with 5 other jobs (contended). "
            f"SyOPs include the input synapses (each input spike reaches every excitatory neuron), the readout and the lateral inhibition (N-1 synapses per excitatory spike); "
            f"no MACs (Poisson input). mlp_400 is an ANN of the same layer sizes (784-400-10), trained like the ANNs above.\n\n"
        )
    lines.append("| model | network | T | top-1 % | SyOPs | MACs | E 45nm-fp32 µJ | E Loihi µJ | training s | params | bytes | wall ms/image |\n")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        loihi = "–" if r["eloihi"] is None else f"{r['eloihi'] / 1e6:.4g}"
        e45 = "–" if r["e45"] is None else f"{r['e45'] / 1e6:.4g}"
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['T'] or '–'} | {100 * r['top1']:.2f} | {r['syops']:,.0f} | {r['macs']:,.0f} | {e45} | "
            f"{loihi} | {r['train_s']:.1f} | {r['params']:,} | {r['bytes']:,} | {r['wall_ms']:.3f} |\n"
        )
    lines.append("\n" + END + "\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-samples", type=int, default=4000, help="training images of the directly trained SNNs")
    parser.add_argument("--ann-samples", type=int, default=10000, help="training images of the ANN (0: all 60,000)")
    parser.add_argument("--from-json", action="store_true", help="only re-render reports/threeway.json")
    parser.add_argument("--test-samples", type=int, default=300)
    parser.add_argument("--archs", default="lenet5,mlp_s")
    parser.add_argument("--stdp", type=Path, help="an STDP checkpoint (annsnn zoo train stdp_mnist --snn --rule stdp): add its row and mlp_400's")
    parser.add_argument("--only-stdp", action="store_true", help="with --stdp: keep the other rows of reports/threeway.json, redo only the STDP ones")
    args = parser.parse_args(argv)
    if args.only_stdp and not args.stdp:
        raise SystemExit("--only-stdp needs --stdp CHECKPOINT")
    if args.stdp and not args.stdp.is_file():
        raise SystemExit(f"STDP checkpoint {args.stdp} does not exist")
    root = SHARED / "data"
    if not (root / "MNIST").is_dir():
        raise SystemExit(f"MNIST not found under {root}")
    torch.manual_seed(0)
    ann_samples = args.ann_samples or None
    if args.from_json or args.only_stdp:
        saved = json.loads((REPORTS / "threeway.json").read_text())
        rows = saved["rows"]
        if args.only_stdp:
            rows = [r for r in rows if r["model"] not in ("stdp_mnist", "mlp_400")]
            args.train_samples, args.test_samples, ann_samples = saved["train_samples"], saved["test_samples"], saved["ann_samples"]
    else:
        rows = []
        for arch in args.archs.split(","):
            rows += run(arch, args.train_samples, args.test_samples, root, ann_samples)
            write_text(REPORTS / "threeway.json", json.dumps({"rows": rows, "train_samples": args.train_samples, "test_samples": args.test_samples, "ann_samples": ann_samples}, indent=1))
    if args.stdp:
        rows += run_stdp(args.stdp, args.test_samples, root, ann_samples)
        write_text(REPORTS / "threeway.json", json.dumps({"rows": rows, "train_samples": args.train_samples, "test_samples": args.test_samples, "ann_samples": ann_samples}, indent=1))
    block = _fmt(rows, args.train_samples, args.test_samples, ann_samples)
    target = REPORTS / "mnist.md"
    text = target.read_text() if target.is_file() else header("MNIST", "make threeway", "MNIST")
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    write_text(target, text)
    print(block)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
