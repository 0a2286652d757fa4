"""One short STDP training run (annsnn.zoo.stdp) with the parameters given as KEY=VALUE:
top-1 on evenly spaced test images, CPU time per training image. The issue-28 sweep that
chose the defaults (docs/stdp-and-events.md lists every run's arguments and result):

    ANNSNN_SHARED=../shared OMP_NUM_THREADS=1 python benchmarks/stdp_sweep.py dt_ms=2.0 rate_hz=128 batch_size=64

Defaults here: 400 neurons, 8,000 training images, labels from 5,000 of them, 2,000 test
images, batch 32; any StdpConfig field can be set.
"""
from __future__ import annotations

import os
import sys
import time

import torch

from annsnn.zoo.stdp import StdpConfig, train_stdp


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    root = os.path.join(os.environ.get("ANNSNN_SHARED", "../shared"), "data")
    kw: dict = dict(neurons=400, train_samples=8000, assign_samples=5000, test_samples=2000, batch_size=32, data_root=root)
    fields = StdpConfig.__dataclass_fields__
    for arg in argv:
        key, value = arg.split("=", 1)
        if key not in fields:
            raise SystemExit(f"unknown StdpConfig field {key!r}")
        default = fields[key].default
        kw[key] = int(value) if default is None or isinstance(default, int) else type(default)(value)
    config = StdpConfig(**kw)
    wall, cpu = time.time(), time.process_time()
    h = train_stdp(config).history[0]
    print(argv, f"top1 {h['test_top1']:.4f} train_cpu {h['epoch_cpu_s']:.1f}s ({1000 * h['epoch_cpu_s'] / h['train_images']:.2f} ms/img) "
          f"wall {h['epoch_time_s']:.1f} spikes {h['spikes_per_image']:.1f} total_cpu {time.process_time() - cpu:.1f} total_wall {time.time() - wall:.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
