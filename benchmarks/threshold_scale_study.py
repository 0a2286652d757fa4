"""Held-out study (docs/low-latency.md, issue 26): per-layer threshold scales instead of the
pipeline's one factor (0.9 for every layer). Negative result: kept as the command that
measured it.

Each layer's searched thresholds are multiplied by ``0.9 x f_l``; ``f_l = 1`` is the
default conversion. The factors enter through ``annsnn.convert.neuron_scale`` (wrapped
here; the library has no per-layer scale option).

``greedy``: ResNet-20-JPEG at N = T. Coordinate search over the layers in order, one
sweep: for each layer, each factor in ``--factors`` is tried with every other layer
fixed, and kept if it lowers the readout's squared error against the ANN's output on
the 256 readout-delay choice images (the pipeline's own choice images and criterion,
:func:`annsnn.calibration.choose_readout_delay`; training data only). Then the chosen
factors are scored on 1,024 held-out training images.

``groups``: a MobileNetV2 (``--model``, ``--arch mobilenet_v2_cifar``) at N = T: one
factor for every depthwise layer's neurons, or every expansion layer's (and the stem's
and the last 1x1's), scored on the same 1,024 held-out training images.

    python benchmarks/threshold_scale_study.py greedy --T 8
    python benchmarks/threshold_scale_study.py groups --T 16 --model .annsnn/mobilenet_v2_cifar_jpeg.pt

Prints one line per conversion: factors, choice-image squared error, readout delay,
held-out top-1 (and the ANN's).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annsnn.data import make_loader  # noqa: E402
from annsnn.model_files import load_model  # noqa: E402
from annsnn.pipeline import ann_to_snn  # noqa: E402
from annsnn.simulate import simulate  # noqa: E402
from low_latency import CIFAR_MEAN, CIFAR_STD, STUDY_BASELINE, _options, heldout_indices, resnet20_jpeg_and_train  # noqa: E402

_convert = importlib.import_module("annsnn.convert")  # the module (the package exports the function under the same name)


class LayerFactors:
    """Wraps ``neuron_scale`` so the i-th neuron layer the conversion scales (in its order)
    gets ``factors[i]`` times the pipeline's threshold."""

    def __init__(self) -> None:
        self.factors: list[float] = []
        self.shapes: list[tuple[int, ...]] = []
        self._calls = 0
        self._original = _convert.neuron_scale
        _convert.neuron_scale = self._scale

    def _scale(self, observer, options, ceiling, shape):
        value, notes = self._original(observer, options, ceiling, shape)
        index = self._calls
        self._calls += 1
        self.shapes.append(tuple(shape))
        return value * (self.factors[index] if index < len(self.factors) else 1.0), notes

    def convert(self, net, calib, T: int, factors: list[float]):
        self.factors, self._calls, self.shapes = list(factors), 0, []
        snn, _ = ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=_options(STUDY_BASELINE, T), normalization=(list(CIFAR_MEAN), list(CIFAR_STD)))
        choice = snn.record.calibration.delay_choice or {}
        return snn, min(choice["output_mse"])


def held_out_top1(snn, held, T: int) -> float:
    with torch.no_grad():
        return sum(int((simulate(snn, x, T).predictions(T) == y).sum()) for x, y in held) / sum(int(y.shape[0]) for _, y in held)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study", choices=["greedy", "groups"])
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--factors", default="0.85,1.15")
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / ".annsnn" / "mobilenet_v2_cifar_jpeg.pt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    net, train = resnet20_jpeg_and_train()
    batch = 128
    if args.study == "groups":
        net = load_model(args.model, "mobilenet_v2_cifar").module.eval()
        batch = 64  # annsnn convert's default batch
    calib = [x for x, _ in make_loader(train, batch, 1024)]
    held = list(make_loader(Subset(train, heldout_indices(len(train), 1024, 1024)), 256))
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ann = sum(int((net((x - mean) / std).argmax(1) == y).sum()) for x, y in held) / 1024
    study = LayerFactors()

    def report(label: str, factors: list[float]):
        snn, mse = study.convert(net, calib, args.T, factors)
        print(f"{label}: choice-image squared error {mse:.4f}, delay {snn.record.calibration.readout_delay}, held-out top-1 {100 * held_out_top1(snn, held, args.T):.2f} % (ANN {100 * ann:.2f} %)", flush=True)
        return snn, mse

    snn, best = report("default (every factor 1)", [])
    layers = len(study.shapes)
    if args.study == "greedy":
        factors = [1.0] * layers
        for i in range(layers):
            for f in (float(v) for v in args.factors.split(",")):
                trial = factors[:i] + [f] + factors[i + 1 :]
                _, mse = study.convert(net, calib, args.T, trial)
                if mse < best:
                    best, factors = mse, trial
            print(f"layer {i} (input {study.shapes[i]}): factor {factors[i]}, squared error {best:.4f}", flush=True)
        report(f"greedy factors {factors}", factors)
        return
    names = list(snn.meta["scales"])  # the neuron layers in the order the conversion scaled them
    depthwise = [i for i, name in enumerate(names) if name.endswith("features.1.conv.0.2") or name.endswith("conv.1.2")]
    others = [i for i in range(layers) if i not in depthwise]
    for label, group in (("depthwise", depthwise), ("expansion, stem and last 1x1", others)):
        for f in (float(v) for v in args.factors.split(",")):
            report(f"{label} x {f}", [f if i in group else 1.0 for i in range(layers)])


if __name__ == "__main__":
    main()
