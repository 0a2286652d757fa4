"""Issue 26's depthwise check: train ``--arch mobilenet_v2_cifar`` on the CIFAR-10 JPEG
*train* split (../shared/data/CIFAR10-jpeg/train), for development of the conversion.

    python benchmarks/train_mobilenet_v2_jpeg.py --epochs 6 --out .annsnn/mobilenet_v2_cifar_jpeg.pt

Recipe (CPU-sized; the issue's own model was trained longer on a GPU): SGD, momentum 0.9,
Nesterov, weight decay 5e-4 (4e-5 on BatchNorm and biases), batch 128, one-cycle lr up
to 0.1, random crop (pad 4, reflect; one offset per batch) and horizontal flip, normalization mean (0.4914,
0.4822, 0.4465), std (0.2470, 0.2435, 0.2616). No test image is read. Writes a
``state_dict`` that ``annsnn convert FILE --arch mobilenet_v2_cifar --mean ... --std ...``
loads, and prints the training loss and accuracy per epoch (``--device cuda`` trains on a
GPU). On this session's 2 contended CPU cores one epoch took about an hour, so no
checkpoint of this recipe has been measured yet; ``--samples 512 --epochs 1`` is the
smoke run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def load_split(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.environ.get("ANNSNN_SHARED", str(ROOT.parent / "shared")))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=None, help="train on the first N training images only (a smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", default=str(ROOT / ".annsnn" / "mobilenet_v2_cifar_jpeg.pt"))
    args = parser.parse_args()
    from model_zoo.architectures import mobilenet_v2_cifar

    train_dir = Path(args.shared) / "data" / "CIFAR10-jpeg" / "train"
    if not train_dir.is_dir():
        parser.error(f"no CIFAR-10 JPEG training images at {train_dir}: pass --shared DIR (the folder that holds data/CIFAR10-jpeg) or set ANNSNN_SHARED")
    if args.epochs < 1 or args.batch < 1 or (args.samples is not None and args.samples < args.batch):
        parser.error("--epochs and --batch must be at least 1, and --samples at least --batch")
    torch.manual_seed(args.seed)
    x, y = load_split(train_dir)
    if args.samples is not None:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))[: args.samples]
        x, y = x[keep], y[keep]
    device = torch.device(args.device)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1).to(device), torch.tensor(STD).view(1, 3, 1, 1).to(device)
    model = mobilenet_v2_cifar().to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    other = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": other, "weight_decay": 4e-5}], lr=args.lr, momentum=0.9, nesterov=True)
    steps = args.epochs * (len(x) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        t0, seen, correct, loss_sum = time.time(), 0, 0, 0.0
        for i in range(0, len(x) - args.batch + 1, args.batch):
            idx = order[i : i + args.batch]
            xb = F.pad(x[idx].to(device).float() / 255, (4, 4, 4, 4), mode="reflect")
            dx, dy = torch.randint(0, 9, (2,), generator=g).tolist()
            xb = xb[:, :, dy : dy + 32, dx : dx + 32]
            flip = (torch.rand(len(idx), generator=g) < 0.5).to(device)
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            out = model((xb - mean) / std)
            target = y[idx].to(device)
            loss = F.cross_entropy(out, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((out.argmax(1) == target).sum())
            loss_sum += float(loss.detach()) * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / seen:.3f}, train top-1 {100 * correct / seen:.2f} %, {time.time() - t0:.0f} s", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
