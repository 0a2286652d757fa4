"""Which readout-delay criterion, computed on the pipeline's 256 choice images, picks the delay
with the best accuracy on held-out training images? ResNet-20-JPEG, the default conversion at
each T (`annsnn convert` with no flags: 1,024 calibration images, 256 for the bias, the next
256 for the choice). Every delay k is scored from one simulation: agreement with the ANN's
class, the mean squared error of the mean readout against the ANN's output (MSE) and the KL
divergence from the ANN's softmax on the choice images; top-1 on the 1,024 held-out training
images of benchmarks/low_latency.py and on the first TEST test images (reporting only).

    ANNSNN_SHARED=../shared python benchmarks/delay_criteria.py 4,8,16,32,64 10000

Prints one table per T and the k each criterion picks. docs/low-latency.md has the results.
"""
import sys

import torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from low_latency import SHARED, WEIGHTS, ARCH, CIFAR_MEAN, CIFAR_STD, STUDY_BASELINE, heldout_indices, _options
from torch.utils.data import Subset
from annsnn.data import load_dataset, make_loader
from annsnn.model_files import load_model
from annsnn.pipeline import ann_to_snn
from annsnn.layerwise import run_layerwise
torch.manual_seed(0)
arch = "resnet20_jpeg"
root = f"imagefolder:{SHARED / 'data' / 'CIFAR10-jpeg'}"
net = load_model(SHARED / "models" / WEIGHTS[arch], ARCH[arch]).module.eval()
train, test = load_dataset(root, "train"), load_dataset(root, "test")
calib = [x for x, _ in make_loader(train, 128, 1024)]
images = torch.cat(calib)
choice = images[256:512]
held = list(make_loader(Subset(train, heldout_indices(len(train), 1024, 1024)), 256))
tests = list(make_loader(test, 500, int(sys.argv[2]) if len(sys.argv) > 2 else 10000))
norm = (list(CIFAR_MEAN), list(CIFAR_STD))
mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


def sums(snn, x, T):
    """S_t (float64), the output summed over the first t steps, for t = 1..T."""
    out = {}
    for i in range(0, x.shape[0], 256):
        part = {}
        def c(t, o, _p=part):
            _p[t + 1] = o.clone().double() if t == 0 else _p[t] + o.double()
        run_layerwise(snn, x[i:i + 256], T, batch=256, output_step=c)
        for t in part: out.setdefault(t, []).append(part[t])
    return {t: torch.cat(v) for t, v in out.items()}

for T in [int(t) for t in sys.argv[1].split(",")]:
    snn, _ = ann_to_snn(net, iter(calib), input_shape=(3, 32, 32), options=_options(STUDY_BASELINE, T), normalization=norm)  # bias [0:256], delay choice [256:512]
    chosen = int(snn.meta.get("readout_delay", 0))
    with torch.no_grad():
        ann_c = net((choice - mean) / std).double()
    S = sums(snn, choice, T)
    rows = []
    for k in range(T):
        r = S[T] - (S[k] if k else 0)
        m = r / (T - k)
        agree = float((r.argmax(1) == ann_c.argmax(1)).double().mean())
        mse = float(((m - ann_c) ** 2).mean())
        kl = float(torch.nn.functional.kl_div(torch.log_softmax(m, 1), torch.log_softmax(ann_c, 1), log_target=True, reduction="batchmean"))
        rows.append([k, agree, mse, kl])
    for name, batches in (("held", held), ("test", tests)):
        hits = [0] * T; n = 0
        for x, y in batches:
            Sx = sums(snn, x, T); n += len(y)
            for k in range(T):
                r = Sx[T] - (Sx[k] if k else 0)
                hits[k] += int((r.argmax(1) == y).sum())
        for k in range(T): rows[k].append(hits[k] / n)
    print(f"T={T} chosen delay {chosen}")
    print("k  agree%  mse     kl      held%   test%")
    for k, a, m, kl, h, te in rows:
        print(f"{k:<2} {100*a:6.2f} {m:7.4f} {kl:7.4f} {100*h:6.2f} {100*te:6.2f}")
    best = lambda i, sign: max(range(T), key=lambda k: sign * rows[k][i])
    print("pick: agree", best(1, 1), "mse", best(2, -1), "kl", best(3, -1), "| best held", best(4, 1), "best test", best(5, 1), flush=True)
