"""Event-camera datasets through tonic (Lenz et al., "Tonic: event-based datasets and
transformations", doi:10.5281/zenodo.5079802): ``--data tonic:NAME`` or ``tonic:NAME:T``.

tonic reads the files (its own readers, e.g. ``tonic.io.read_mnist_file`` for N-MNIST,
Orchard et al. 2015) and bins each sample's events into ``T`` frames of equal duration
with ``tonic.transforms.ToFrame(n_time_bins=T)``: frame ``t`` holds, per polarity and
pixel, the number of events in the t-th of T equal time bins (``[T, P, H, W]``).

Two views of one sample:

* ``frames`` (the SNN's input, ``--encoding events``): the T frames, one per time step.
  Every event is a spike: it reaches the first layer's synapses as accumulates (ACs),
  never as MACs, and a pixel with k events in a bin counts k.
* ``mean`` (the ANN's input, and what every other command sees): the frames averaged
  over time, ``(1/T) sum_t frame_t`` ``[P, H, W]``. We average rather than stack the
  frames as channels so that ANN and SNN share one architecture: over T steps the SNN's
  first layer integrates ``W sum_t frame_t = T W mean``, so a converted SNN meets its
  ANN's input exactly in the rate limit.

The real datasets are not on the project's machines; ``--download`` fetches them on a
user's machine (tonic checks the archive's md5). Without ``--download`` a missing
dataset is one clear error, never a download.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import UsageError

__all__ = ["EVENT_PREFIX", "DEFAULT_FRAMES", "EventName", "parse_event_name", "is_event_dataset", "event_spec", "EventFrames", "load_event_dataset", "ann_view"]

EVENT_PREFIX = "tonic:"
DEFAULT_FRAMES = 10
View = Literal["frames", "mean"]


@dataclass(frozen=True)
class EventName:
    """``tonic:NAME[:T]``: a tonic dataset class and the frames per sample."""

    dataset: str
    frames: int


def is_event_dataset(name: str) -> bool:
    return name.startswith(EVENT_PREFIX)


def parse_event_name(name: str) -> EventName:
    """``tonic:NMNIST`` (T = 10 frames) or ``tonic:NMNIST:20``."""
    if not is_event_dataset(name):
        raise UsageError(f"{name!r} is not an event dataset (tonic:NAME[:T])")
    parts = name[len(EVENT_PREFIX):].split(":")
    if not parts[0] or len(parts) > 2:
        raise UsageError(f"bad event dataset {name!r}: use tonic:NAME or tonic:NAME:T (e.g. tonic:NMNIST:10)")
    frames = DEFAULT_FRAMES
    if len(parts) == 2:
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise UsageError(f"bad frame count in {name!r}: T must be a positive integer")
        frames = int(parts[1])
    return EventName(parts[0], frames)


def _tonic_class(dataset: str) -> type:
    try:
        import tonic.datasets
    except ImportError:
        raise UsageError("event datasets need tonic: pip install tonic") from None
    classes = {n: getattr(tonic.datasets, n) for n in dir(tonic.datasets) if isinstance(getattr(tonic.datasets, n), type) and hasattr(getattr(tonic.datasets, n), "sensor_size")}
    readable = sorted(n for n, c in classes.items() if _camera_classification(c))
    split = [n for n in readable if "train" in inspect.signature(classes[n].__init__).parameters]
    offer = f"use one of {', '.join(split)} (train and test splits) or {', '.join(n for n in readable if n not in split)} (one split: evaluate only)"
    cls = classes.get(dataset)
    if cls is None:
        raise UsageError(f"unknown tonic dataset {dataset!r}: {offer}")
    if not _camera_classification(cls):
        raise UsageError(f"tonic dataset {dataset} is not a classification camera dataset annsnn reads (a fixed 2-D sensor size and named classes): {offer}")
    return cls


def _camera_classification(cls: type) -> bool:
    """A tonic dataset annsnn reads: a fixed sensor size ``(W, H, P)`` of a 2-D camera
    (P polarities) and named classes."""
    size = getattr(cls, "sensor_size", None)
    return (isinstance(size, tuple) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size) and min(size[:2]) > 1
            and bool(getattr(cls, "classes", None)))


def _shape(cls: type) -> tuple[int, int, int]:
    """``(P, H, W)`` from tonic's ``sensor_size = (W, H, P)`` (checked by :func:`_tonic_class`)."""
    size = tuple(int(s) for s in cls.sensor_size)
    return size[2], size[1], size[0]


def event_spec(name: str) -> tuple[tuple[int, int, int], int]:
    """The ANN view's input shape ``(P, H, W)`` and the class count of ``tonic:NAME[:T]``
    (:func:`annsnn.data.dataset_spec` makes its ``DatasetSpec``, no normalization)."""
    parsed = parse_event_name(name)
    cls = _tonic_class(parsed.dataset)
    shape = _shape(cls)
    classes = getattr(cls, "classes", None)
    if not classes:
        raise UsageError(f"tonic dataset {parsed.dataset} names no classes; annsnn needs a classification dataset")
    return shape, len(classes)


class EventFrames(Dataset):
    """A tonic dataset with its events binned into T frames (see the module docstring)."""

    def __init__(self, events: Dataset, sensor_size: tuple[int, ...], frames: int, view: View) -> None:
        from tonic.transforms import ToFrame

        if view not in ("frames", "mean"):
            raise UsageError(f"unknown event view {view!r}")
        self.events = events
        self.frames = int(frames)
        self.view = view
        self.to_frame = ToFrame(sensor_size=sensor_size, n_time_bins=self.frames)
        self.targets = list(getattr(events, "targets", []))

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int):
        events, label = self.events[index]
        frames = self.to_frame(events) if len(events) else np.zeros((self.frames, *reversed(self.to_frame.sensor_size)), dtype=np.float32)
        x = torch.from_numpy(np.asarray(frames, dtype=np.float32))
        if x.shape[0] != self.frames:  # tonic drops trailing empty bins of very short recordings
            x = torch.cat([x, x.new_zeros(self.frames - x.shape[0], *x.shape[1:])])
        return (x if self.view == "frames" else x.mean(0)), int(label)


def load_event_dataset(name: str, split: str, root: str | os.PathLike, download: bool = False, view: View = "mean") -> EventFrames:
    """``tonic:NAME[:T]`` under the folder ``root`` (tonic's ``save_to``; the files live in ``root/NAME``)."""
    parsed = parse_event_name(name)
    cls = _tonic_class(parsed.dataset)
    folder = Path(root)
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict = {}
    if "train" in params:
        kwargs["train"] = split == "train"
    elif split != "test":
        raise UsageError(f"tonic dataset {parsed.dataset} has no train/test split")
    if not download:
        def _refuse(self) -> None:
            raise UsageError(f"{parsed.dataset} not found under {folder / parsed.dataset} (tonic's layout); pass --download to fetch it (needs internet)")

        cls = type(cls.__name__, (cls,), {"download": _refuse})  # same name: same folder
    try:
        events = cls(str(folder), **kwargs)
    except UsageError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot read {parsed.dataset} under {folder} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    return EventFrames(events, tuple(cls.sensor_size), parsed.frames, view)


def ann_view(x: torch.Tensor) -> torch.Tensor:
    """The ANN's input from a batch of frames ``[B, T, P, H, W]``: the mean frame."""
    return x.mean(1)

