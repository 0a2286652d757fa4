"""Datasets by name. Every loader yields images scaled to [0, 1]; normalization
is part of the model (:class:`~annsnn.layers.Normalize`), so Poisson coding sees
real pixel intensities.

Names: ``digits`` (scikit-learn's bundled 8x8 digits, no download), ``mnist``,
``fashion-mnist``, ``cifar10``, ``cifar100``, ``flowers102`` (torchvision), and
``imagefolder:PATH`` (class folders, or ``train/`` and ``test/``/``val/`` of
class folders).

Where data lives: ``--data-root DIR``, else ``$ANNSNN_DATA_ROOT``, else ``./data``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .errors import UsageError

__all__ = ["DatasetSpec", "dataset_spec", "load_dataset", "make_loader", "select_batches", "data_root", "DATASET_NAMES", "spread_indices", "IMAGENET_MEAN", "IMAGENET_STD"]

Split = Literal["train", "test"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """Name, input shape, class count and standard normalization of a dataset."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data


_SPECS = {
    "digits": DatasetSpec("digits", (1, 8, 8), 10, (0.3054,), (0.3761,)),
    "mnist": DatasetSpec("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetSpec("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,)),
    "cifar10": DatasetSpec("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": DatasetSpec("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "flowers102": DatasetSpec("flowers102", (3, 224, 224), 102, IMAGENET_MEAN, IMAGENET_STD),
}
DATASET_NAMES = tuple(_SPECS) + ("imagefolder:PATH", "tonic:NAME[:T]")


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("ANNSNN_DATA_ROOT")
    return Path(env) if env else Path("data")


def dataset_spec(name: str, root: str | os.PathLike | None = None) -> DatasetSpec:
    """The spec of ``name``; for ``imagefolder:PATH`` this looks at the tree."""
    if name in _SPECS:
        return _SPECS[name]
    if name.startswith("tonic:"):
        from .events import event_spec

        shape, classes = event_spec(name)
        return DatasetSpec(name, shape, classes, (0.0,) * shape[0], (1.0,) * shape[0])
    if name.startswith("imagefolder:"):
        folder = _imagefolder_split(Path(name.split(":", 1)[1]), "test")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        sample = _image_dataset(folder)[0][0]
        return DatasetSpec(name, tuple(sample.shape), len(classes), (0.0,) * sample.shape[0], (1.0,) * sample.shape[0])
    raise UsageError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}")


def _digits(split: Split) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.data.astype(np.float32) / 16.0
    train_idx, test_idx = train_test_split(np.arange(len(images)), test_size=0.2, random_state=0, stratify=digits.target)
    idx = train_idx if split == "train" else test_idx
    x = torch.from_numpy(images[idx]).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(digits.target[idx]).long()
    return TensorDataset(x, y)


def _imagefolder_split(path: Path, split: Split) -> Path:
    if not path.is_dir():
        raise UsageError(f"image folder {str(path)!r} does not exist; check the path after imagefolder:")
    if (path / "train").is_dir() and any((path / s).is_dir() for s in ("test", "val")):
        if split == "train":
            return path / "train"
        return path / "test" if (path / "test").is_dir() else path / "val"
    return path


def _open_image(path: str):
    """Read one image as RGB; an unreadable file is a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # PIL raises all of these on damaged files
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read image {path!r} ({reason}); remove or replace the file") from None


def _size(shape) -> str:
    """``W×H`` of a ``[C, H, W]`` image tensor shape."""
    return f"{int(shape[-1])}×{int(shape[-2])}"


def _image_dataset(folder: Path) -> Dataset:
    from torchvision import datasets, transforms

    class SameSizeImageFolder(datasets.ImageFolder):
        """Images that must all have the first image's size (a batch stacks them): an
        image of another size is a one-line error naming it and both sizes."""

        def __getitem__(self, index: int):
            image, label = super().__getitem__(index)
            if not hasattr(self, "_reference"):
                first = super().__getitem__(0)[0] if index else image
                self._reference = (tuple(first.shape), self.samples[0][0])
            shape, first_path = self._reference
            if tuple(image.shape) != shape:
                raise UsageError(f"image {self.samples[index][0]!r} is {_size(image.shape)}, but {first_path!r} is {_size(shape)}: "
                                 "the images of a folder must share one size (resize them first)")
            return image, label

    try:
        return SameSizeImageFolder(str(folder), loader=_open_image, transform=transforms.ToTensor())
    except (FileNotFoundError, RuntimeError) as exc:
        raise UsageError(f"no images found under {str(folder)!r} ({str(exc).splitlines()[0]}); it needs one folder of images per class") from None


def load_dataset(name: str, split: Split = "test", root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """A dataset of ``(image in [0, 1], label)`` pairs."""
    if split not in ("train", "test"):
        raise UsageError(f"unknown split {split!r}: use train or test")
    if name == "digits":
        return _digits(split)
    if name.startswith("imagefolder:"):
        return _image_dataset(_imagefolder_split(Path(name.split(":", 1)[1]), split))
    if name.startswith("tonic:"):  # event data (annsnn.events): the ANN's view, frames averaged over time
        from .events import load_event_dataset

        return load_event_dataset(name, split, data_root(root), download)
    if name not in _SPECS:
        raise UsageError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}")
    from torchvision import datasets, transforms

    base = data_root(root)
    to_tensor = transforms.ToTensor()
    constructors = {
        "mnist": lambda: datasets.MNIST(str(base), train=split == "train", download=download, transform=to_tensor),
        "fashion-mnist": lambda: datasets.FashionMNIST(str(base), train=split == "train", download=download, transform=to_tensor),
        "cifar10": lambda: datasets.CIFAR10(str(base), train=split == "train", download=download, transform=to_tensor),
        "cifar100": lambda: datasets.CIFAR100(str(base), train=split == "train", download=download, transform=to_tensor),
        "flowers102": lambda: datasets.Flowers102(
            str(base), split="train" if split == "train" else "test", download=download,
            transform=transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), to_tensor]),
        ),
    }
    try:
        return constructors[name]()
    except RuntimeError as exc:
        if "not found" in str(exc).lower() or "download" in str(exc).lower():
            raise UsageError(f"dataset {name} not found under {str(base)!r}; pass --data-root DIR (or set ANNSNN_DATA_ROOT), or --download") from None
        raise
    except OSError as exc:
        raise UsageError(f"dataset {name} could not be read under {str(base)!r} ({exc.__class__.__name__}); pass --data-root DIR or --download") from None


def spread_indices(length: int, samples: int) -> list[int]:
    """``samples`` evenly spaced indices in ``range(length)``, in order.

    Folder datasets are sorted by class, so the first N items would all be one
    class; evenly spaced items cover every class in proportion.
    """
    if samples >= length:
        return list(range(length))
    return [int(i * length // samples) for i in range(samples)]


def select_batches(loader: DataLoader, batch_indices: Sequence[int]) -> DataLoader:
    """A loader that yields only batches ``batch_indices`` of an unshuffled ``loader``, in that
    order, loading nothing else. The batches are the loader's own (its batch sampler's)."""
    batches = list(loader.batch_sampler)  # type: ignore[arg-type]
    return DataLoader(loader.dataset, batch_sampler=[batches[i] for i in batch_indices], collate_fn=loader.collate_fn, num_workers=0)


def make_loader(dataset: Dataset, batch_size: int, samples: int | None = None, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """Deterministic loader over ``samples`` evenly spaced items (all if None)."""
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if samples is not None:
        if samples < 1:
            raise UsageError("--samples must be at least 1")
        dataset = Subset(dataset, spread_indices(len(dataset), samples))  # type: ignore[arg-type]
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise UsageError("the dataset is empty")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
