"""Score an STDP checkpoint on training images only (issue 28): labels assigned on 10,000
training images, accuracy on 10,000 other training images (a fixed seeded permutation;
learning off). This is how the default number of training images was chosen without the
test set. Also gives two other votes (BindsNET's proportion weighting, and proportions
over all neurons) for comparison; annsnn's readout is the "all" vote.

    OMP_NUM_THREADS=1 python benchmarks/stdp_validate.py CHECKPOINT [DATA_ROOT]
"""
from __future__ import annotations

import sys
import time

import torch

from annsnn.data import load_dataset
from annsnn.zoo.stdp import StdpConfig, _images, predict, responses


def votes(counts_a, ya, counts_v, yv, classes: int = 10) -> dict:
    onehot = torch.nn.functional.one_hot(ya, classes).double()
    rates = (onehot.T @ counts_a.double()) / onehot.sum(0).unsqueeze(1)  # [C, N]
    assign = rates.argmax(0)
    prop = rates / rates.sum(0, keepdim=True).clamp_min(1e-12)
    mask = torch.nn.functional.one_hot(assign, classes).T.double()
    n = mask.sum(1, keepdim=True).clamp_min(1)
    return {
        "all": float((predict(counts_v, assign, classes) == yv).float().mean()),
        "proportion": float((((mask * prop) / n) @ counts_v.double().T).argmax(0).eq(yv).float().mean()),
        "prop_all": float((prop @ counts_v.double().T).argmax(0).eq(yv).float().mean()),
    }


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    payload = torch.load(argv[0], weights_only=True)
    root = argv[1] if len(argv) > 1 else "../shared/data"
    config = StdpConfig(**{k: v for k, v in payload["config"].items() if k in StdpConfig.__dataclass_fields__})
    gen = torch.Generator().manual_seed(123)
    train = load_dataset("mnist", "train", root)
    perm = torch.randperm(len(train), generator=gen).tolist()
    ax, ay = _images(train, perm[:10000])
    vx, vy = _images(train, perm[10000:20000])
    cpu = time.process_time()
    ca = responses(payload["weight"], payload["theta"], ax, config, gen)
    cv = responses(payload["weight"], payload["theta"], vx, config, gen)
    print(f"cpu {time.process_time() - cpu:.1f} s")
    print("validation (train images, assignment on other train images):", votes(ca, ay, cv, vy), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
