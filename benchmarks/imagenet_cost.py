"""Issue 24 item 3: ImageNet-size torchvision models at 224x224, RANDOM weights, through the
default pipeline (threshold+step-bias at N = 32, readout delay auto), as ratios to one ANN
pass over the same calibration images: conversion time and peak memory.

    python benchmarks/imagenet_cost.py --device cpu --images 64 --models mobilenet_v2,resnet50
    python benchmarks/imagenet_cost.py --device cuda --images 256         # all four models

Each model runs in a fresh subprocess. Memory: CPU, the peak resident-set growth (VmHWM
after /proc/self/clear_refs) of the ANN pass and of the conversion; CUDA,
torch.cuda.max_memory_allocated above the model's own weights. Time: the ANN pass is the
median of 3; the conversion runs once (it is 10-40x longer). On CUDA, the SNN's
simulation speed at T = 32 (images/s, batch of the calibration images) is also recorded.
On the CPU the conversion's simulations (the layer-major bias fit and delay choice) run
inside annsnn.free_heap.heap_reuse (the C heap keeps freed blocks instead of unmapping
them: far fewer page faults), and so do the ANN passes the ratios divide by. The same ANN
passes outside it are recorded too (ann_pass_plain_s, ann_peak_plain_mb); they run after
heap_reuse has been entered once, so with glibc's mmap threshold fixed at 32 MiB rather
than moving by glibc's dynamic rule. The images are uniform noise in [0, 1] (random weights: only cost is measured, not accuracy).
A quarter of them are the bias-fit images and the next quarter the readout-delay choice's:
the default's proportions (256 + 256 of 1,024). Both the ANN pass and the calibration
loader use batches of 8. Fixed costs (the per-channel threshold search reads 2,048-bin
histograms whatever the image count) weigh more with fewer images: at 8 images the
ratio overstates what a full-size conversion costs. Writes
benchmarks/results/imagenet_cost_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "vgg16_bn", "mobilenet_v2", "vit_b_16")

CHILD = r"""
import dataclasses, json, statistics, sys, time
import torch, torchvision
sys.path.insert(0, {bench!r})
from run import _peak_mb
from annsnn.convert import ConversionOptions
from annsnn.data import IMAGENET_MEAN, IMAGENET_STD
from annsnn.free_heap import heap_reuse
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate
name, device, images = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
net = torchvision.models.get_model(name, weights=None).eval()
x = torch.rand(images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
quarter = max(1, images // 4)
options = ConversionOptions.calibrated("threshold+step-bias", 32, mode=None, channel_wise=None, percentile_of="all", v_init=0.5, maxpool="spiking",
                                       hybrid=name.startswith("vit"), bias_samples=quarter, step_solver=None, threshold_scale=None, readout_delay="auto")
options = dataclasses.replace(options, delay_samples=quarter)
norm = (list(IMAGENET_MEAN), list(IMAGENET_STD))
mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
batch = 8
def ann_plain():
    with torch.no_grad():
        for i in range(0, images, batch):
            net(((x[i:i + batch] - mean) / std).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
def ann():  # under the allocator setting the conversion runs with
    with heap_reuse():
        ann_plain()
def convert():
    return ann_to_snn(net, (x[i:i + batch] for i in range(0, images, batch)), input_shape=(3, 224, 224), options=options, normalization=norm, device=device)
net.to(device); mean, std = mean.to(device), std.to(device)
if device.type == "cuda":
    ann()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device); ann(); ann_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    torch.cuda.reset_peak_memory_stats(device); t = time.perf_counter(); snn, _ = convert(); torch.cuda.synchronize(device); conv_s = time.perf_counter() - t
    conv_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
else:
    ann_mb = _peak_mb(ann)  # the first pass, as before: one-time costs included
    ann_plain_mb = _peak_mb(ann_plain)
    out = {{}}
    t = time.perf_counter(); conv_mb = _peak_mb(lambda: out.setdefault("snn", convert()[0])); conv_s = time.perf_counter() - t
    snn = out["snn"]
ann_s, plain_s = [], []
for _ in range(3):  # interleaved
    t = time.perf_counter(); ann(); ann_s.append(time.perf_counter() - t)
    t = time.perf_counter(); ann_plain(); plain_s.append(time.perf_counter() - t)
row = {{"model": name, "images": images, "ann_pass_s": statistics.median(ann_s), "conversion_s": conv_s, "time_ratio": conv_s / statistics.median(ann_s),
       "ann_peak_mb": ann_mb, "conversion_peak_mb": conv_mb, "memory_ratio": conv_mb / ann_mb}}
if device.type == "cpu":
    row.update(ann_pass_plain_s=statistics.median(plain_s), ann_peak_plain_mb=ann_plain_mb)
if device.type == "cuda":
    snn = snn.to(device); xs = x.to(device)
    with torch.no_grad():
        simulate(snn, xs, [32]); torch.cuda.synchronize(device)
        t = time.perf_counter(); simulate(snn, xs, [32]); torch.cuda.synchronize(device)
    row["simulate_T32_images_per_s"] = images / (time.perf_counter() - t)
print(json.dumps(row))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import commit, machine

    import torch

    code = CHILD.format(bench=str(ROOT / "benchmarks"))
    rows = []
    for name in args.models.split(","):
        done = subprocess.run([sys.executable, "-c", code, name, args.device, str(args.images)], capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"model": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    device = torch.device(args.device)
    data = {"what": "default pipeline (threshold+step-bias, N=32, readout delay auto) on torchvision models at 224x224, RANDOM weights, noise images",
            "device": args.device, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "images": args.images, "bias_images": max(1, args.images // 4), "delay_images": max(1, args.images // 4), "rows": rows, "targets": {"time_ratio": "<= 40", "memory_ratio": "<= 2"},
            "command": "python benchmarks/imagenet_cost.py " + " ".join(sys.argv[1:]), "machine": machine(), "commit": commit()}
    out = ROOT / "benchmarks" / "results" / f"imagenet_cost_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
