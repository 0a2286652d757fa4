"""Regenerate tests/data/mobilenet_v2_w05_digits32.pt (a trained torchvision MobileNetV2).

    python tests/data/make_mobilenet_v2_digits32.py

Training runs in one thread so that it is reproducible; it takes about 2 minutes. The
fidelity test loads the result instead of training, so that its 99% agreement check
does not depend on how a given CPU or thread count rounds during training.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from annsnn.data import load_dataset  # noqa: E402
from test_convert import _digits32, _mobilenet_v2, _train_digits32  # noqa: E402

TARGET = HERE / "mobilenet_v2_w05_digits32.pt"


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    (xtr, ytr), (xte, yte) = (load_dataset("digits", split).tensors for split in ("train", "test"))  # type: ignore[attr-defined]
    model = _train_digits32(_mobilenet_v2(), _digits32(xtr), ytr, epochs=20)
    with torch.no_grad():
        top1 = float((model(_digits32(xte)).argmax(1) == yte).float().mean())
    torch.save({"state_dict": model.state_dict(), "test_top1": top1, "recipe": "tests/data/make_mobilenet_v2_digits32.py"}, TARGET)
    print(f"wrote {TARGET} (digits test top-1 {top1:.4f})")


if __name__ == "__main__":
    main()
