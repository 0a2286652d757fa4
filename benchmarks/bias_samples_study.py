"""Held-out study (docs/low-latency.md): --bias-samples 256 (the default) against 768 of the
1,024 calibration images, on ResNet-20-JPEG at N = T, over three random calibration sets
(seeds 1..3: 1,024 calibration images, then 4,096 held-out training images, of one
permutation of the training set).

    python benchmarks/bias_samples_study.py 8      # T

Prints: seed, bias samples, chosen readout delay, held-out top-1.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch.utils.data import Subset
from annsnn.data import make_loader
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate
from low_latency import _options, CIFAR_MEAN, CIFAR_STD, resnet20_jpeg_and_train
torch.set_num_threads(1)
T = int(sys.argv[1])
net, train = resnet20_jpeg_and_train()
for seed in (1, 2, 3):
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
    calib = [x for x, _ in make_loader(Subset(train, perm[:1024]), 128, 1024)]
    held = list(make_loader(Subset(train, perm[1024:1024 + 4096]), 256))
    for bs in (256, 768):
        opts = _options(f"threshold+step-bias:readout=delay:samples={bs}", T)  # the delay readout, as measured before 01c6d14
        snn, _ = ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=opts, normalization=(list(CIFAR_MEAN), list(CIFAR_STD)))
        with torch.no_grad():
            hits = sum(int((simulate(snn, x, T).predictions(T) == y).sum()) for x, y in held)
        print(seed, bs, snn.record.calibration.readout_delay, hits / 4096, flush=True)
