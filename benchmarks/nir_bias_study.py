"""Held-out study (docs/low-latency.md, issue 26): which constant bias ``--target nir`` should
fit. Negative result for the cheaper one: kept as the command that measured it.

ResNet-20-JPEG at N = T, readout delay 0 (NIR sums every output step), scored on the
1,024 held-out training images of the other studies:

* ``--target nir`` as it is: a constant per-channel bias fitted layer by layer
  (``threshold+bias``, one simulation per layer);
* the default's per-step bias (one layer-major run), averaged over the N steps into a
  constant: what NIR could take at the cost of the default fit;
* the per-step bias itself at delay 0 (NIR cannot take it), for scale.

    python benchmarks/nir_bias_study.py 8,16

Prints one line per row: T, row, conversion seconds, held-out top-1.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annsnn.data import make_loader  # noqa: E402
from annsnn.pipeline import ann_to_snn  # noqa: E402
from annsnn.simulate import simulate  # noqa: E402
from low_latency import CIFAR_MEAN, CIFAR_STD, STUDY_BASELINE, _options, heldout_indices, resnet20_jpeg_and_train  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    net, train = resnet20_jpeg_and_train()
    calib = [x for x, _ in make_loader(train, 128, 1024)]
    held = list(make_loader(Subset(train, heldout_indices(len(train), 1024, 1024)), 256))
    norm = (list(CIFAR_MEAN), list(CIFAR_STD))
    for T in (int(t) for t in sys.argv[1].split(",")):
        def convert(options):
            started = time.perf_counter()
            snn, _ = ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=options, normalization=norm)
            return snn, time.perf_counter() - started

        def held_out(snn) -> float:
            with torch.no_grad():
                return 100 * sum(int((simulate(snn, x, T).predictions(T) == y).sum()) for x, y in held) / 1024

        snn, seconds = convert(_options("nir", T))
        print(f"T={T} --target nir (threshold+bias): {seconds:.0f} s, held-out top-1 {held_out(snn):.2f} %", flush=True)
        snn, seconds = convert(_options(STUDY_BASELINE + ":delay=0", T))
        print(f"T={T} per-step bias, delay 0: {seconds:.0f} s, held-out top-1 {held_out(snn):.2f} %", flush=True)
        for module in snn.neuron_layers().values():
            module.set_step_bias(module.step_bias.mean(0, keepdim=True))
        print(f"T={T} per-step bias averaged into a constant, delay 0: held-out top-1 {held_out(snn):.2f} %", flush=True)


if __name__ == "__main__":
    main()
