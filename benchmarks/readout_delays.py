"""Issue 26: top-1 of a converted SNN at T = N for every readout delay k, from one simulation.

Reads the SNN's own readout delay choice (agreement with the ANN on its choice images) beside
the test accuracy each k would give, to show how sensitive a short latency is to the delay.

    annsnn convert ../shared/models/cifar10-resnet/resnet20-12fca82f.th --arch resnet20 --mode 99.99 --T 8 \\
        --data imagefolder:../shared/data/CIFAR10-jpeg --calib-samples 1024 --out r20_8.snn.pt
    python benchmarks/readout_delays.py r20_8.snn.pt --T 8 --test 1000
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from annsnn.artifact import load_snn
from annsnn.data import load_dataset, make_loader
from annsnn.record import Calibration
from annsnn.simulate import simulate

SHARED = Path(os.environ.get("ANNSNN_SHARED", "/work/shared"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("snn")
    parser.add_argument("--T", type=int, required=True)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    snn = load_snn(args.snn)
    cal = snn.record.calibration
    snn.record = snn.record.replace(calibration=Calibration(T=cal.T, method=cal.method, readout_delay=0, delay_choice=cal.delay_choice, bias_fit=cal.bias_fit))
    test = load_dataset(f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}", "test")
    T = args.T
    hits = torch.zeros(T, dtype=torch.float64)
    n = 0
    for x, y in make_loader(test, 200, args.test):
        result = simulate(snn, x, list(range(1, T + 1)))  # every prefix sum from one simulation
        for k in range(T):
            readout = result.outputs[T] - (result.outputs[k] if k else 0)
            hits[k] += float((readout.argmax(1) == y).sum())
        n += int(y.shape[0])
    print(f"chosen delay {cal.readout_delay}")
    print("delay k -> top-1 %:", [round(100 * float(h) / n, 1) for h in hits])
    if cal.delay_choice:
        print("agreement with the ANN on the choice images %:", [round(100 * a, 1) for a in cal.delay_choice["agreement"]])


if __name__ == "__main__":
    main()
