"""Held-out study behind --finetune-epochs (docs/low-latency.md), written before the option:
fine-tune the default SNN's differentiable twin (surrogate gradients, BPTT over N steps) to
the ANN's outputs on the 1,024 calibration images, and score held-out training images after
every epoch. MODE "all" trains conv/linear weights and biases (what the option does), "bias"
only the biases and the per-step biases.

    python benchmarks/finetune_study.py 8 2048 all 1e-4 4    # T, held-out images, MODE, lr, epochs
"""
import sys, time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch import nn
from annsnn.robustness import SurrogateSNN
from low_latency import CIFAR_MEAN, CIFAR_STD, resnet20_jpeg_study
torch.set_num_threads(1); torch.manual_seed(0)
T = int(sys.argv[1]); H = int(sys.argv[2]); mode = sys.argv[3]; lr = float(sys.argv[4]); epochs = int(sys.argv[5])
net, train, calib, held, snn = resnet20_jpeg_study(T, H)
twin = SurrogateSNN(snn, T)
mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
X = torch.cat(calib)
with torch.no_grad():
    A = torch.cat([net((X[i:i + 256] - mean) / std) for i in range(0, len(X), 256)])
params = []
for name, m in twin.runner.named_modules():
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        if mode == "all":
            m.weight.requires_grad_(True); params.append(m.weight)
        if m.bias is not None:
            m.bias.requires_grad_(True); params.append(m.bias)
    if hasattr(m, "step_bias") and isinstance(getattr(m, "step_bias"), torch.Tensor) and mode in ("all", "bias"):
        p = nn.Parameter(m.step_bias.clone()); del m.step_bias; m.step_bias = p; params.append(p)
print("params", sum(p.numel() for p in params), flush=True)
opt = torch.optim.Adam(params, lr=lr)
def heldout():
    with torch.no_grad():
        return sum(int((twin(x).argmax(1) == y).sum()) for x, y in held) / H
print("epoch 0 held-out", heldout(), flush=True)
for ep in range(1, epochs + 1):
    t0 = time.time(); perm = torch.randperm(len(X)); tot = 0
    for i in range(0, len(X), 64):
        idx = perm[i:i + 64]
        loss = ((twin(X[idx]) - A[idx]) ** 2).mean()
        opt.zero_grad(); loss.backward(); opt.step(); tot += float(loss) * len(idx)
    print(f"epoch {ep} loss {tot / len(X):.4f} held-out {heldout():.4f} ({time.time() - t0:.0f} s)", flush=True)
