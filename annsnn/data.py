"""Datasets by name. Every loader yields images scaled to [0, 1]; normalization
is part of the model (:class:`~annsnn.layers.Normalize`), so Poisson coding sees
real pixel intensities.

Names: ``digits`` (scikit-learn's bundled 8x8 digits, no download), ``mnist``,
``fashion-mnist``, ``cifar10``, ``cifar100``, ``flowers102`` (torchvision),
``imagefolder:PATH`` (class folders, or ``train/`` and ``test/``/``val/`` of
class folders), and ``imagenet:ROOT`` (torchvision's ``ImageNet`` layout, with its
``meta.bin``, or ``train/`` + ``val/`` of class folders; the test split is ``val``).

Image folders are read as they are (``ToTensor``) unless a :class:`Preprocess` says how to
resize and crop them: ``--resize/--crop``, the weights' own ``transforms()`` for
``torchvision:NAME --weights W``, or timm's data config for ``timm:NAME``
(:func:`preprocess_for`). Images of different sizes without one are one clear error
(:func:`check_same_size`), never a failed ``torch.stack``.

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

__all__ = ["Preprocess", "preprocess_for", "check_same_size", "DatasetSpec", "dataset_spec", "load_dataset", "make_loader", "select_batches", "data_root", "DATASET_NAMES", "spread_indices", "IMAGENET_MEAN", "IMAGENET_STD", "held_out"]

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
DATASET_NAMES = tuple(_SPECS) + ("imagefolder:PATH", "imagenet:ROOT", "tonic:NAME[:T]")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize`` (``interpolation``, antialiased), then
    centre-crop ``crop`` x ``crop``, then scale to [0, 1]. Normalization stays in the model.
    ``source`` says where it came from; the record travels in the SNN file, so ``evaluate``
    reads images exactly as ``convert`` calibrated on them."""

    resize: int | None
    crop: int | None
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    source: str = "--resize/--crop"

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"invalid --{name} {value!r}: use a number of pixels >= 1")
        if self.resize is None and self.crop is None:
            raise UsageError("preprocessing needs --resize N, --crop N or both")
        if self.interpolation not in ("bilinear", "bicubic", "nearest"):
            raise UsageError(f"invalid interpolation {self.interpolation!r}: use bilinear, bicubic or nearest")

    def check_gives(self, shape: Sequence[int]) -> None:
        """The images this preprocessing makes have ``shape`` [C, H, W]'s sides: the crop is
        H = W, and a resize alone sets the shorter side. Checked on an SNN file's record
        before any image is read (a damaged one could ask for any size)."""
        sides = tuple(int(v) for v in shape[-2:])
        if len(sides) != 2:
            raise UsageError("the SNN file's preprocessing record is for images, but its input shape is not [C, H, W]: the file is damaged")
        fits = sides == (self.crop, self.crop) if self.crop is not None else min(sides) == self.resize
        if not fits or (self.crop is not None and self.resize is not None and self.resize > 16 * self.crop):
            raise UsageError(f"the SNN file's preprocessing record (resize {self.resize}, crop {self.crop}) does not make its {sides[1]}×{sides[0]} inputs: the file is damaged")

    def transform(self):
        from torchvision import transforms

        mode = {"bilinear": transforms.InterpolationMode.BILINEAR, "bicubic": transforms.InterpolationMode.BICUBIC, "nearest": transforms.InterpolationMode.NEAREST}[self.interpolation]
        steps = []
        if self.resize is not None:
            steps.append(transforms.Resize(self.resize, interpolation=mode, antialias=True))
        if self.crop is not None:
            steps.append(transforms.CenterCrop(self.crop))
        return transforms.Compose([*steps, transforms.ToTensor()])

    def output_size(self) -> int | None:
        """The side of every output image (crop, else None: a resize alone keeps the aspect)."""
        return self.crop

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict | None) -> "Preprocess | None":
        if data is None:
            return None
        if not isinstance(data, dict) or set(data) != {"resize", "crop", "interpolation", "source"}:
            raise UsageError("the SNN file's preprocessing record is damaged")
        return Preprocess(**data)


def preprocess_for(arch: str | None, weights: str | None = None, resize: int | None = None, crop: int | None = None) -> Preprocess | None:
    """How to read images for ``arch``: ``--resize/--crop`` when given; else the torchvision
    weights' ``transforms()`` (``torchvision:NAME --weights W``: resize, crop, interpolation);
    else timm's ``resolve_data_config`` (``timm:NAME``: resize = floor(size / crop_pct), as
    timm's own eval transform); else ``None`` (images as they are)."""
    if resize is not None or crop is not None:
        if weights is not None:
            raise UsageError("--weights W takes the preprocessing of W; --resize/--crop set it by hand: pass one or the other")
        return Preprocess(resize, crop)
    library, _, name = (arch or "").partition(":")
    if weights is not None:
        if library != "torchvision" or not name:
            raise UsageError("--weights W names torchvision weights: it needs --arch torchvision:NAME")
        from .torchvision_timm import torchvision_weights

        chosen = torchvision_weights(name, weights)
        t = chosen.transforms()
        interpolation = str(t.interpolation.value)
        return Preprocess(int(t.resize_size[0]), int(t.crop_size[0]), interpolation, f"torchvision {name} {chosen.name}.transforms()")  # type: ignore[arg-type]
    if library == "timm" and name:
        import math

        try:
            import timm
            from timm.data import resolve_data_config
        except ImportError:  # pragma: no cover - optional dependency
            raise UsageError("--arch timm:NAME needs the timm package (pip install 'annsnn[formats]')") from None
        if not timm.is_model(name):
            raise UsageError(f"unknown timm architecture {name!r}: see timm.list_models()")
        config = resolve_data_config({}, model=timm.create_model(name, pretrained=False))
        size = int(config["input_size"][-1])
        if config.get("crop_mode", "center") != "center":
            raise UsageError(f"timm:{name} evaluates with crop mode {config['crop_mode']!r}; annsnn supports centre crops: pass --resize/--crop")
        interpolation = config.get("interpolation", "bilinear")
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            raise UsageError(f"timm:{name} evaluates with {interpolation!r} interpolation; annsnn supports bilinear, bicubic and nearest: pass --resize/--crop")
        return Preprocess(math.floor(size / float(config.get("crop_pct", 1.0))), size, interpolation, f"timm {name} resolve_data_config")
    return None


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("ANNSNN_DATA_ROOT")
    return Path(env) if env else Path("data")


def dataset_spec(name: str, root: str | os.PathLike | None = None, preprocess: Preprocess | None = None, *, split: Split = "train") -> DatasetSpec:
    """The spec of ``name``; for ``imagefolder:PATH`` and ``imagenet:ROOT`` this looks at the
    tree of ``split`` (the training images, which a conversion reads: never the test ones)
    and checks that the images it reads come out the same size."""
    if name in _SPECS:
        return _SPECS[name]
    if name.startswith("tonic:"):
        from .events import event_spec

        shape, classes = event_spec(name)
        return DatasetSpec(name, shape, classes, (0.0,) * shape[0], (1.0,) * shape[0])
    if name.startswith(("imagefolder:", "imagenet:")):
        dataset = load_dataset(name, split, root, preprocess=preprocess)
        shape = check_same_size(dataset, name)
        classes = len(dataset.classes)  # type: ignore[attr-defined]
        if name.startswith("imagenet:"):
            return DatasetSpec(name, shape, classes, IMAGENET_MEAN, IMAGENET_STD)
        return DatasetSpec(name, shape, classes, (0.0,) * shape[0], (1.0,) * shape[0])
    raise UsageError(f"unknown dataset {name!r}: use one of {', '.join(DATASET_NAMES)}")


def check_same_size(dataset: Dataset, name: str, probes: int = 64) -> tuple[int, ...]:
    """The image shape of a folder dataset, read at ``probes`` evenly spread images (the first
    of every class among them); images of different sizes raise one :class:`UsageError` that
    says how to preprocess them. Batches are stacked, so one size is required."""
    files = [path for path, _ in dataset.samples]  # type: ignore[attr-defined]
    if not files:
        raise UsageError(f"no images found in {name}")
    firsts: dict[int, int] = {}
    for i, (_, label) in enumerate(dataset.samples):  # type: ignore[attr-defined]
        firsts.setdefault(label, i)
    picks = sorted(set(spread_indices(len(files), probes)) | set(list(firsts.values())[:probes]) | {0})
    first = None
    for i in picks:
        shape = tuple(dataset[i][0].shape)
        if first is None:
            first = shape
        elif shape != first:
            raise _odd_size(files[i], shape, files[0], first)
    return first


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
    """``PATH/train`` and ``PATH/test`` (or ``val``) when PATH has them, else PATH for both."""
    if not path.is_dir():
        raise UsageError(f"image folder {str(path)!r} does not exist; check the path after imagefolder:")
    if not (path / "train").is_dir():
        return path
    test = next((path / s for s in ("test", "val") if (path / s).is_dir()), None)
    if test is None:
        if split == "test":
            raise UsageError(f"image folder {str(path)!r} has train/ but no test/ or val/ folder: the test images score the SNN, the training images only calibrate it")
        return path / "train"
    _same_classes(path / "train", test)
    return path / "train" if split == "train" else test


def held_out(name: str, split: Split) -> bool:
    """Whether ``split`` of ``name`` is kept apart from the training split that calibration
    reads. False only for the test split of an ``imagefolder:PATH`` without ``train/``: one
    folder serves both, so a score on it is on the calibration images."""
    if split != "test" or not name.startswith("imagefolder:"):
        return True
    path = Path(name.split(":", 1)[1])
    return _imagefolder_split(path, "test") != _imagefolder_split(path, "train")  # the layout rule, in one place


def _class_folders(folder: Path) -> set[str]:
    """The class names ImageFolder finds: the sub-folders (it numbers them in sorted order)."""
    return {entry.name for entry in os.scandir(folder) if entry.is_dir()}


def _same_classes(train: Path, test: Path) -> None:
    """Each split is numbered by its own sorted class folders, so a class missing from one
    shifts every later label: the two lists must be equal."""
    a, b = _class_folders(train), _class_folders(test)
    if a != b:
        only = [f"{', '.join(sorted(names)[:5])}{' ...' if len(names) > 5 else ''} only in {where}/" for names, where in ((a - b, train.name), (b - a, test.name)) if names]
        raise UsageError(f"the class folders of {train.name}/ and {test.name}/ differ: {'; '.join(only)} (under {str(train.parent)!r}); "
                         "each split needs the same class folders, or its labels shift")


def _open_image(path: str):
    """Read one image as RGB; an unreadable file is a one-line error naming it. A 16-bit
    grey image (PIL mode ``I;16``, or ``I`` as PNG reads it) keeps its levels: v·255/65535,
    rounded (PIL's own ``convert`` clips it to 0 or 255). 32-bit and float images, whose
    range the file does not state, are refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            if image.mode.startswith("I") or image.mode == "F":
                levels = np.asarray(image)
                if image.mode == "F" or levels.dtype.kind not in "iu" or int(levels.min(initial=0)) < 0 or int(levels.max(initial=0)) > 65535:
                    raise UsageError(f"image {path!r} has {image.mode} pixels ({levels.dtype}, no stated range): annsnn reads 8- and 16-bit images; convert it to one")
                scaled = (levels.astype(np.uint32) * 255 + 32767) // 65535  # round(v·255/65535), exact in integers
                return Image.fromarray(scaled.astype(np.uint8)).convert("RGB")
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:  # PIL raises all of these on damaged files
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read image {path!r} ({reason}); remove or replace the file") from None


def _size(shape) -> str:
    """``W×H`` of a ``[C, H, W]`` image tensor shape."""
    return f"{int(shape[-1])}×{int(shape[-2])}"


SIZE_HINT = "the images of a folder must share one size: pass --resize N --crop M, or --arch torchvision:NAME --weights W / timm:NAME for the model's own preprocessing"


def _odd_size(path: str, shape, first_path: str, first_shape) -> UsageError:
    return UsageError(f"image {path!r} is {_size(shape)}, but {first_path!r} is {_size(first_shape)}: {SIZE_HINT}")


def _image_dataset(folder: Path, preprocess: Preprocess | None = None) -> Dataset:
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
                raise _odd_size(self.samples[index][0], image.shape, first_path, shape)
            return image, label

    transform = preprocess.transform() if preprocess is not None else transforms.ToTensor()
    try:
        return SameSizeImageFolder(str(folder), loader=_open_image, transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        empty = _empty_class_folders(folder)
        if empty:
            raise UsageError(f"class folder(s) {', '.join(repr(name) for name in empty)} under {str(folder)!r} hold no images (empty of {', '.join(datasets.folder.IMG_EXTENSIONS)} files): "
                             "give each class at least one image, or remove the folder") from None
        raise UsageError(f"no images found under {str(folder)!r} ({str(exc).splitlines()[0]}); it needs one folder of images per class") from None


def _empty_class_folders(folder: Path) -> list[str]:
    """The class folders under ``folder`` that hold no image file at any depth (torchvision's
    ``ImageFolder`` refuses a set with one, naming the class but not why)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not folder.is_dir():
        return []
    classes = sorted(entry for entry in folder.iterdir() if entry.is_dir())
    return [c.name for c in classes if not any(f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS) for f in c.rglob("*"))]


def _imagenet(path: Path, split: Split, preprocess: Preprocess | None) -> Dataset:
    """``train/`` + ``val/`` class folders (the test split is ``val``); with torchvision's
    ``meta.bin`` (its ``ImageNet`` layout) the classes carry its names. Read as
    torchvision's ``ImageNet`` reads them (an ``ImageFolder`` per split), with the size check."""
    if not path.is_dir():
        raise UsageError(f"ImageNet folder {str(path)!r} does not exist; check the path after imagenet:")
    part = "train" if split == "train" else "val"
    if not (path / part).is_dir():
        raise UsageError(f"{str(path)!r} has no {part}/ folder: imagenet:ROOT needs ROOT/train/ and ROOT/val/ of class folders (torchvision's ImageNet layout)")
    if (path / "train").is_dir() and (path / "val").is_dir():
        _same_classes(path / "train", path / "val")
    dataset = _image_dataset(path / part, preprocess)
    if (path / "meta.bin").is_file():  # torchvision's ImageNet: the same folders, classes named by its wnid table
        from torchvision.datasets.imagenet import load_meta_file

        try:
            wnid_to_classes = load_meta_file(str(path))[0]
            dataset.classes = [wnid_to_classes[wnid] for wnid in dataset.classes]  # type: ignore[attr-defined]
        except (RuntimeError, OSError, KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read {str(path / 'meta.bin')!r} ({type(exc).__name__}): torchvision's ImageNet meta file, mapping each wnid folder to its class names") from None
    return dataset


def load_dataset(name: str, split: Split = "test", root: str | os.PathLike | None = None, download: bool = False, preprocess: Preprocess | None = None) -> Dataset:
    """A dataset of ``(image in [0, 1], label)`` pairs; image folders and ImageNet read through
    ``preprocess`` when given (see :class:`Preprocess`)."""
    if split not in ("train", "test"):
        raise UsageError(f"unknown split {split!r}: use train or test")
    if name == "digits":
        return _digits(split)
    if name.startswith("imagefolder:"):
        return _image_dataset(_imagefolder_split(Path(name.split(":", 1)[1]), split), preprocess)
    if name.startswith("imagenet:"):
        return _imagenet(Path(name.split(":", 1)[1]), split, preprocess)
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
