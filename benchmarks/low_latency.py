"""Issues 12 and 26: low-latency calibration on CIFAR-10 ResNets, method x T.

``--arch resnet20_jpeg`` (issue 26, the honest benchmark) is the ResNet-20 trained on the JPEG
training images themselves (``../shared/models/cifar10-jpeg/resnet20_jpeg.pt``, CIFAR
normalization): it is scored on the distribution it was trained on. ``resnet20`` /
``resnet32`` are the shared nets trained on the *original* images and scored on the JPEG
ones: distribution-shifted (their ANN loses about 10 points, and calibration on JPEG
training images adapts the SNN to the shift, so those rows flatter every method).
``mobilenet_v2_jpeg`` is the depthwise net ``benchmarks/train_mobilenet_v2_jpeg.py`` trains
on the JPEG training images (not shared; :data:`NETS` lists each net's weights and
normalization).

Per architecture: the same calibration images (the first ``--calib`` of train/) and the
same evenly spaced test images (``--test`` of test/). For every calibration method and
every N in ``--T``, convert once for N and evaluate at T = N (annsnn.evaluation.analyze); record
top-1, gap to the ANN, SyOPs, bias ACs and energy per inference (45nm-fp32, Horowitz 2014),
and conversion wall time as a ratio to one ANN pass over the calibration images (peak
memory: ``python benchmarks/run.py calibration_cost``). Writes
benchmarks/results/low_latency.json after every row, so a killed run keeps what it
measured; ``python reports/generate.py lowlat`` turns it into the table and Pareto plot
of reports/cifar10.md.

    python benchmarks/low_latency.py --arch resnet20 --T 8,16,32,64 --test 1000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Subset

from annsnn.evaluation import analyze
from annsnn.calibration import CALIBRATIONS
from annsnn.convert import ConversionOptions
from annsnn.data import IMAGENET_MEAN, IMAGENET_STD, load_dataset, make_loader, spread_indices
from annsnn.simulate import simulate
from annsnn.model_files import load_model
from annsnn.modes import parse_mode
from annsnn.nir_target import fold_constant_bias, nir_options
from annsnn.pipeline import ann_to_snn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import code_commit  # noqa: E402
from train_mobilenet_v2_jpeg import MEAN as MOBILENET_MEAN, STD as MOBILENET_STD  # noqa: E402

SHARED = Path(os.environ.get("ANNSNN_SHARED", "/work/shared"))
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # resnet20_jpeg's training normalization (shared/README)


@dataclass(frozen=True)
class BenchmarkNet:
    """A net this benchmark converts: its weights file, its ``--arch``, the normalization
    it was trained with, whether it is scored on images shifted from its training images,
    and where its weights come from (said when the file is missing)."""

    weights: Path
    arch: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    shifted: bool
    source: str


NETS = {
    "resnet20": BenchmarkNet(SHARED / "models" / "cifar10-resnet" / "resnet20-12fca82f.th", "resnet20", IMAGENET_MEAN, IMAGENET_STD, True, "../shared (its README)"),
    "resnet32": BenchmarkNet(SHARED / "models" / "cifar10-resnet" / "resnet32-d509ac18.th", "resnet32", IMAGENET_MEAN, IMAGENET_STD, True, "../shared (its README)"),
    "resnet20_jpeg": BenchmarkNet(SHARED / "models" / "cifar10-jpeg" / "resnet20_jpeg.pt", "resnet20", CIFAR_MEAN, CIFAR_STD, False, "../shared (its README)"),
    # not shared: the trainer writes it (seed 0; docs/low-latency.md) and owns its normalization
    "mobilenet_v2_jpeg": BenchmarkNet(Path(__file__).resolve().parents[1] / ".annsnn" / "mobilenet_v2_cifar_jpeg.pt", "mobilenet_v2_cifar", MOBILENET_MEAN, MOBILENET_STD, False,
                                      "write it with python benchmarks/train_mobilenet_v2_jpeg.py --epochs 3"),
}
OUT = Path(__file__).parent / "results" / "low_latency.json"


def heldout_indices(train_size: int, calib: int, heldout: int) -> list[int]:
    """The held-out training images: ``heldout`` evenly spaced over the training images that
    are not among the ``calib`` calibration ones (which ``make_loader`` spreads evenly)."""
    used = set(spread_indices(train_size, calib))
    rest = [i for i in range(train_size) if i not in used]
    return [rest[i] for i in spread_indices(len(rest), heldout)]


def _flag(value: str) -> bool:
    if value not in ("0", "1"):
        raise SystemExit(f"error: a flag suffix takes 0 or 1, not {value!r}")
    return value == "1"


_SUFFIXES = {"refit": ("refit_classifier", _flag), "samples": ("bias_samples", int), "scale": ("threshold_scale", float), "delay": ("readout_delay", int), "K": ("max_spikes", int),
             "criterion": ("delay_criterion", str), "readout": ("readout", str), "finetune": ("finetune_epochs", int), "lr": ("finetune_lr", float)}


def _options(method: str, T: int) -> ConversionOptions:
    """``method`` is a ``--calibration`` name, ``best-flags``, or a name with suffixes:
    ``:quantile`` (``--step-solver quantile``), ``:scale=S`` (``--threshold-scale S``),
    ``:samples=K`` (``--bias-samples K``), ``:delay=K`` (``--readout-delay K``; rows measured
    before the readout delay existed carry ``:delay=0``: they ran with every output step
    counted), ``:K=k`` (``--max-spikes k``, burst neurons), ``:criterion=C``
    (``--delay-criterion C``), ``:readout=R`` (``--readout R``), ``:finetune=E`` / ``:lr=L``
    (``--finetune-epochs E`` / ``--finetune-lr L``), ``:refit=1`` / ``:refit=0``
    (``--refit-classifier`` / ``--no-refit-classifier``); or ``nir`` for ``annsnn convert
    --target nir`` (its bias is folded into the synapses after the conversion). A calibration name is exactly ``annsnn convert --calibration NAME --T N`` with
    those flags (:meth:`ConversionOptions.calibrated`)."""
    name, *suffixes = method.split(":")
    if name == "none" and not suffixes:  # today's plain normalization
        return ConversionOptions.plain(mode=parse_mode("99.99"))
    if name == "best-flags" and not suffixes:  # the "best flags today"
        return ConversionOptions.plain(mode=parse_mode("99.99"), channel_wise=True, v_init=0.5)
    overrides: dict = {}
    for suffix in suffixes:
        if suffix == "quantile":
            overrides["step_solver"] = "quantile"
            continue
        key, _, value = suffix.partition("=")
        field, kind = _SUFFIXES[key]
        overrides[field] = kind(value)
    if name == "nir":  # annsnn convert --target nir, with any suffixes on top
        return nir_options(T, mode=parse_mode("99.99"), **overrides)  # its own checks: no delay, no bursts
    return ConversionOptions.calibrated(name, T, mode=parse_mode("99.99"), **overrides)


# The default before 01c6d14 (the delay readout and 256 bias images at every N; the next 256
# images choose the delay): what the held-out studies in docs/low-latency.md start from and
# split their images by (bias [0:256], delay [256:512]). Since 01c6d14 the default at N <= 8
# is the weighted readout with 768 bias images.
STUDY_BASELINE = "threshold+step-bias:readout=delay:samples=256"


def resnet20_jpeg_and_train():
    """ResNet-20-JPEG (eval mode) and the JPEG training images."""
    spec = NETS["resnet20_jpeg"]
    net = load_model(spec.weights, spec.arch).module.eval()
    return net, load_dataset(f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}", "train")


def resnet20_jpeg_study(T: int, heldout: int, calib: int = 1024):
    """What the held-out studies (benchmarks/*_study.py) start from: ResNet-20-JPEG, its
    training images, the first ``calib`` of them as calibration batches, ``heldout``
    held-out ones (:func:`heldout_indices`) as (images, labels) batches, and the
    :data:`STUDY_BASELINE` conversion for N = ``T`` (the default at N > 8). Returns (net,
    train, calib batches, held-out batches, snn)."""
    net, train = resnet20_jpeg_and_train()
    batches = [x for x, _ in make_loader(train, 128, calib)]
    held = list(make_loader(Subset(train, heldout_indices(len(train), calib, heldout)), 256)) if heldout else []
    snn, _ = ann_to_snn(net, iter(batches), input_shape=(3, 32, 32), options=_options(STUDY_BASELINE, T), normalization=(list(CIFAR_MEAN), list(CIFAR_STD)))
    return net, train, batches, held, snn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet20_jpeg", choices=sorted(NETS))
    parser.add_argument("--methods", default=",".join([next(iter(CALIBRATIONS)), "threshold+bias", "threshold", "best-flags", "none"]))
    parser.add_argument("--T", default="8,16,32,64")
    parser.add_argument("--calib", type=int, default=1024)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=OUT, help="results file (default benchmarks/results/low_latency.json)")
    parser.add_argument("--heldout", type=int, default=0, help="also score each row on this many held-out TRAINING images (evenly spaced over the training images not used for calibration): the data design choices are made on")
    parser.add_argument("--append", action="store_true", help="keep the block's rows of other methods/T (same images required); every row records its commit")
    args = parser.parse_args()
    spec = NETS[args.arch]
    if not spec.weights.is_file():
        parser.error(f"{spec.weights} does not exist: {spec.source}")
    torch.manual_seed(0)
    root = f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}"
    net = load_model(spec.weights, spec.arch).module.eval()
    train, test = load_dataset(root, "train"), load_dataset(root, "test")
    calib = [x for x, _ in make_loader(train, 128, args.calib)]
    test_batches = list(make_loader(test, 200, args.test))
    heldout_batches = list(make_loader(Subset(train, heldout_indices(len(train), args.calib, args.heldout)), 256)) if args.heldout else []
    mean_values, std_values = spec.mean, spec.std
    norm = (list(mean_values), list(std_values))
    mean, std = torch.tensor(mean_values).view(1, 3, 1, 1), torch.tensor(std_values).view(1, 3, 1, 1)
    with torch.no_grad():
        started = time.perf_counter()
        for x in calib:
            net((x - mean) / std)
        ann_pass = time.perf_counter() - started
        ann_top1 = sum(int((net((x - mean) / std).argmax(1) == y).sum()) for x, y in test_batches) / args.test
        ann_heldout = sum(int((net((x - mean) / std).argmax(1) == y).sum()) for x, y in heldout_batches) / max(1, args.heldout)
    out = args.out
    data = json.loads(out.read_text()) if out.is_file() else {}
    commit = code_commit()
    # a run replaces the architecture's block: rows of another run (other images) must never
    # sit under this run's settings. --append keeps rows measured on the same images; each
    # row names its commit, and the block's "commit" lists them all.
    old = data.get(args.arch, {})
    same_images = old.get("calibration_images") == args.calib and old.get("test_images") == args.test and old.get("ann_top1") == ann_top1
    kept = old.get("rows", {}) if args.append and same_images else {}
    for row in kept.values():
        row.setdefault("commit", old.get("commit", "?"))
    block = data[args.arch] = {"ann_top1": ann_top1, "distribution_shifted": spec.shifted, "calibration_images": args.calib, "test_images": args.test, "ann_pass_seconds": ann_pass, "commit": commit, "rows": kept}
    rows = block["rows"]
    for method in args.methods.split(","):
        for T in [int(t) for t in args.T.split(",")]:
            options = _options(method, T)
            started = time.perf_counter()
            snn, _ = ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=options, normalization=norm)
            if method.split(":")[0] == "nir":
                fold_constant_bias(snn)  # as convert --target nir does; ResNets' option-A shortcut itself has no NIR form, the calibration's accuracy is the measure
            seconds = time.perf_counter() - started
            report = analyze(snn, test_batches, [T], energy_models=["45nm-fp32"])
            heldout = {}
            if heldout_batches:  # plain simulation: the accuracy on training images the conversion never saw
                hits = sum(int((simulate(snn, x, T).predictions(T) == y).sum()) for x, y in heldout_batches)
                heldout = {"heldout_images": args.heldout, "heldout_top1": hits / args.heldout, "heldout_ann_top1": ann_heldout}
            row = report.rows[0]
            top1 = float(row.top1)
            rows[f"{method}@{T}"] = {"method": method, "T": T, "top1": top1, "gap_points": 100 * (ann_top1 - top1), "snn_ann_top1": float(report.ann.top1),
                                     "synaptic_acs": row.synaptic_acs, "bias_acs": row.bias_acs, "energy_pj_45nm_fp32": row.energy_pj["45nm-fp32"],
                                     "ann_energy_pj_45nm_fp32": report.ann.energy_pj["45nm-fp32"], "energy_ratio_45nm_fp32": row.energy_ratio["45nm-fp32"],
                                     "conversion_seconds": seconds, "conversion_over_ann_pass": seconds / ann_pass, "options": options.to_dict(), "commit": commit,
                                     "readout_delay": int(snn.meta.get("readout_delay", 0)), **heldout}
            block["commit"] = ", ".join(sorted({r.get("commit", "?") for r in rows.values()}))
            out.parent.mkdir(parents=True, exist_ok=True)
            current = json.loads(out.read_text()) if out.is_file() else {}  # another architecture may run beside this one
            current[args.arch] = block
            out.write_text(json.dumps(current, indent=1))
            extra = f" held-out top-1 {100 * heldout['heldout_top1']:.1f}% (ANN {100 * ann_heldout:.1f}%)" if heldout else ""
            print(f"{args.arch} {method} T={T}: top-1 {100 * top1:.1f}% gap {100 * (ann_top1 - top1):.1f} conv {seconds:.0f}s ({seconds / ann_pass:.1f} ANN passes){extra}", flush=True)


if __name__ == "__main__":
    main()
