"""An SNN file opened for a run, with the data it is evaluated on.

:func:`open_snn_run` resolves the SNN (a path, or the last conversion of the working
directory), names it (:class:`~annsnn.workspace.SnnFile`: path and SHA-256), checks its
recorded input shape and memory, and builds the unshuffled loader of the data set it
records (or the one asked for). :func:`open_foreign_run` does the same for an SNN annsnn
did not convert. Every result of ``evaluate``, ``energy`` and ``robustness`` is labelled
with the :class:`SnnRun` it came from.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader

from .errors import UsageError
from .evaluation import DataSpec
from .snn import SpikingNetwork
from .workspace import SnnFile

__all__ = ["SnnRun", "open_snn_run", "open_foreign_run", "calibrated_T", "check_data_shape"]


@dataclass(frozen=True)
class SnnRun:
    """What a run evaluates: the file, the network, and the data (name, split, loader)."""

    file: SnnFile
    network: SpikingNetwork
    dataset: str
    split: str
    loader: DataLoader
    data: DataSpec
    held_out: bool = True  # False: the scored images are the ones calibration reads (annsnn.data.held_out)

    def header(self) -> dict:
        """The fields every JSON result starts with (the batch size too: Poisson spikes are
        drawn per batch)."""
        return {"snn": self.file.to_dict(), "dataset": self.dataset, "split": self.split, "batch_size": self.data.batch_size}


def calibrated_T(snn: SpikingNetwork) -> int | None:
    """The latency N the SNN was calibrated for (None: plain normalization)."""
    value = snn.record.calibration.T
    return int(value) if value else None


def open_snn_run(path: str | os.PathLike | None, data: str | None, data_root: str | os.PathLike | None, download: bool,
                 split: str, samples: int | None, batch_size: int) -> SnnRun:
    """The SNN at ``path`` (None: :func:`~annsnn.workspace.last_snn`) and its data loader."""
    from .artifact import load_snn
    from .data import held_out, load_dataset, make_loader
    from .evaluation import data_spec_for
    from .memory_estimate import check_fits
    from .workspace import last_snn, snn_file

    file = Path(path) if path else last_snn()
    identity = snn_file(file)
    snn = load_snn(file)
    shape = list(snn.record.input_shape)
    check_fits(snn.ann, shape, batch_size)
    name = data or (snn.record.dataset or {}).get("name")
    if not name:
        raise UsageError("the SNN records no dataset; pass --data NAME")
    from .data import Preprocess

    preprocess = Preprocess.from_dict(snn.meta.get("preprocess"))  # how convert read the images (resize/crop)
    if preprocess is not None:
        preprocess.check_gives(shape)
    loader = make_loader(load_dataset(name, split, data_root, download, preprocess), batch_size, samples)  # type: ignore[arg-type]
    check_data_shape(loader, tuple(shape))
    return SnnRun(identity, snn, name, split, loader, data_spec_for(name, split, samples, batch_size, data_root), held_out(name, split))  # type: ignore[arg-type]


def check_data_shape(loader: DataLoader, shape: tuple[int, ...]) -> None:
    """The first sample has the shape the network takes (checked before any progress bar)."""
    first = loader.dataset[0][0]  # type: ignore[index]
    if tuple(first.shape) != tuple(shape):
        raise UsageError(f"the data has shape {tuple(first.shape)}, the SNN expects {tuple(shape)}")


def open_foreign_run(model_path: str | os.PathLike, trust: bool, dt: float | None, input_shape: tuple[int, ...] | None, data: str | None,
                     data_root: str | os.PathLike | None, download: bool, split: str, samples: int | None, batch_size: int) -> SnnRun:
    """An SNN annsnn did not convert (:func:`annsnn.foreign_snn.load_foreign`) and its data loader."""
    from .data import load_dataset, make_loader
    from .evaluation import data_spec_for
    from .foreign_snn_files import load_foreign
    from .workspace import snn_file

    identity = snn_file(model_path)
    network = load_foreign(model_path, trust=trust, dt=dt, input_shape=input_shape)
    name = data or (network.meta.get("dataset") or {}).get("name")
    if not name:
        raise UsageError("the model records no dataset; pass --data NAME")
    loader = make_loader(load_dataset(name, split, data_root, download), batch_size, samples)  # type: ignore[arg-type]
    return SnnRun(identity, network, name, split, loader, data_spec_for(name, split, samples, batch_size, data_root))
