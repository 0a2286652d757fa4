"""Held-out study (issue 26): refit the SNN's last linear layer to the ANN's logits.

Li et al. 2021 (arXiv 2106.06984) calibrate weights as well as biases. For the last
linear layer that fit is closed-form: the SNN's readout is linear in that layer's input
features, ``out = A f + c m``, where ``f`` is the readout's sum of the layer's per-step
inputs (``sum_{t>d} f_t`` for the delay readout, ``sum_t w_t f_t`` for the weighted one)
and ``m`` the matching sum of ones. Fitting ``A, c`` by ridge least squares to the ANN's
logits on the calibration images,

    min_{A, c}  sum_i || A f_i + c m - a_i ||^2 + lam * n * || A - A_0 ||^2,

(``A_0 = W / s`` the layer as converted, rescaled to the ANN's logits, ``n`` the images)
fits the classifier to the features the SNN actually produces, quantisation error
included. The refitted layer is plain weights, so ``--target nir`` could keep it.

ResNet-20-JPEG (or ``--arch mobilenet_v2_jpeg``), choices on calibration images, top-1 on
the 1,024 held-out training images of the other studies:

    python benchmarks/classifier_refit_study.py --methods threshold+step-bias,nir --T 8,16

Prints one line per row: arch, method, T, lambda, held-out top-1 (and the calibration
images' top-1 agreement with the ANN).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annsnn.data import load_dataset, make_loader  # noqa: E402
from annsnn.model_files import load_model  # noqa: E402
from annsnn.nir_target import fold_constant_bias  # noqa: E402
from annsnn.pipeline import ann_to_snn  # noqa: E402
from annsnn.simulate import readout_start, simulate  # noqa: E402
from low_latency import NETS, SHARED, _options, heldout_indices  # noqa: E402


def last_linear(snn) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in snn.runner("direct").named_modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def features(snn, batches: list[Tensor], T: int) -> tuple[Tensor, Tensor]:
    """Per-step inputs of the last linear layer ``[B, T, F]`` and the SNN's readout ``[B, C]``."""
    _, fc = last_linear(snn)
    feats: list[Tensor] = []
    outs: list[Tensor] = []
    for x in batches:
        steps: list[Tensor] = []
        handle = fc.register_forward_pre_hook(lambda mod, args: steps.append(args[0].detach().reshape(-1, x.shape[0], args[0].shape[-1])))
        try:
            with torch.no_grad():
                result = simulate(snn, x, T)
        finally:
            handle.remove()
        feats.append(torch.cat(steps).transpose(0, 1).double())
        outs.append(result.outputs[T].double())
    return torch.cat(feats), torch.cat(outs)


def readout_sum(snn, f: Tensor, T: int) -> tuple[Tensor, float]:
    """``f [B, T, F]`` summed as the SNN's readout sums its output steps, and the sum of ones."""
    cal = snn.record.calibration
    if cal.readout_weights and cal.T == T:
        w = torch.tensor(cal.readout_weights, dtype=torch.float64)
        return torch.einsum("btf,t->bf", f, w), float(w.sum())
    d = readout_start(cal.readout_delay, T, cal.T)
    return f[:, d:].sum(1), float(T - d)


def fit(f: Tensor, m: float, a: Tensor, A0: Tensor, c0: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Ridge least squares toward (A0, c0): rows [f, m] -> a."""
    n, F = f.shape
    X = torch.cat([f, torch.full((n, 1), m, dtype=f.dtype)], 1)
    P = torch.cat([A0, c0[:, None]], 1)  # [C, F+1]
    reg = lam * n * torch.eye(F + 1, dtype=f.dtype)
    reg[F, F] = 0.0
    G = X.T @ X + reg
    rhs = X.T @ a + reg @ P.T
    sol = torch.linalg.solve(G, rhs).T
    return sol[:, :F], sol[:, F]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet20_jpeg", choices=sorted(NETS))
    parser.add_argument("--methods", default="threshold+step-bias,nir")
    parser.add_argument("--T", default="8,16")
    parser.add_argument("--lams", default="0,1e-4,1e-3,1e-2,1e-1")
    parser.add_argument("--heldout", type=int, default=1024)
    parser.add_argument("--fit-images", default="1024", help="comma list: fit on the first K calibration images")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = NETS[args.arch]
    net = load_model(spec.weights, spec.arch).module.eval()
    train = load_dataset(f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}", "train")
    mean, std = spec.mean, spec.std
    norm = (list(mean), list(std))
    calib = [x for x, _ in make_loader(train, 128, 1024)]
    held = list(make_loader(Subset(train, heldout_indices(len(train), 1024, args.heldout)), 256))
    with torch.no_grad():
        mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        ann_calib = torch.cat([net((x - mean_t) / std_t) for x in calib]).double()
        ann_held = torch.cat([net((x - mean_t) / std_t) for x, _ in held])
    labels = torch.cat([y for _, y in held])
    print(f"{args.arch}: ANN held-out top-1 {100 * (ann_held.argmax(1) == labels).double().mean():.2f} %", flush=True)
    for method in args.methods.split(","):
        for T in (int(t) for t in args.T.split(",")):
            started = time.perf_counter()
            snn, _ = ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=_options(method, T), normalization=norm)
            if method.split(':')[0] == 'nir':
                fold_constant_bias(snn)  # as convert --target nir does
            seconds = time.perf_counter() - started
            fc = last_linear(snn)[1]
            fc_cal, out_cal = features(snn, calib, T)
            fc_held, out_held = features(snn, [x for x, _ in held], T)
            f_cal, m = readout_sum(snn, fc_cal, T)
            f_held, _ = readout_sum(snn, fc_held, T)
            W = fc.weight.detach().double()
            b = fc.bias.detach().double() if fc.bias is not None else torch.zeros(W.shape[0], dtype=torch.float64)
            check = (f_held @ W.T + m * b - out_held).abs().max().item()
            # the layer's scale to the ANN's logits: the least-squares s with out ~ s a
            s = float((out_cal * ann_calib).sum() / (ann_calib * ann_calib).sum())
            base = 100 * (out_held.argmax(1) == labels).double().mean().item()
            print(f"{args.arch} {method} T={T}: converted in {seconds:.0f} s; readout as converted {base:.2f} % held-out "
                  f"(features reproduce it within {check:.1e}; scale {s:.3f})", flush=True)
            for k, lam in ((int(k), float(v)) for k in args.fit_images.split(",") for v in args.lams.split(",")):
                A, c = fit(f_cal[:k], m, ann_calib[:k], W / s, b / s, lam)
                held_top1 = 100 * ((f_held @ A.T + m * c).argmax(1) == labels).double().mean().item()
                agree = 100 * ((f_cal @ A.T + m * c).argmax(1) == ann_calib.argmax(1)).double().mean().item()
                print(f"{args.arch} {method} T={T} fit on {k} lam={lam:g}: held-out top-1 {held_top1:.2f} % (calibration agreement with the ANN {agree:.1f} %)", flush=True)


if __name__ == "__main__":
    main()
