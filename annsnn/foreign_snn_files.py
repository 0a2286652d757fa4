"""Load an SNN file that annsnn did not convert, whatever its format.

A ``.nir`` file (:mod:`annsnn.nir_io`), a directly trained checkpoint (weights only,
:func:`annsnn.foreign_snn.network_from_direct`), or, with ``trust``, a pickled SpikingJelly
``nn.Sequential`` (:func:`annsnn.foreign_snn.from_spikingjelly`). This dispatcher sits above
both readers, so neither imports the other.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .errors import UsageError
from .foreign_snn import from_spikingjelly, network_from_direct, network_from_stdp
from .model_files import holds_pickled_objects, sniff, unpickle_trusted_module
from .nir_io import load_nir
from .snn import SpikingNetwork
from .files import load_weights_only

__all__ = ["load_foreign"]


def load_foreign(path: str, *, trust: bool = False, dt: float | None = None, input_shape: tuple[int, ...] | None = None) -> SpikingNetwork:
    """An SNN that annsnn did not convert: a ``.nir`` file, a directly trained checkpoint
    (weights only), or, with ``trust``, a pickled SpikingJelly ``nn.Sequential``. ``dt``
    discretises a NIR graph's neurons (default 1); the other kinds run in steps of their
    own, so a ``dt`` for them is refused rather than ignored."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"model file {str(file)!r} does not exist")
    if file.suffix.lower() == ".nir" or sniff(file) == "hdf5":  # by content: a NIR graph named .pt is still one
        return load_nir(file, dt=1.0 if dt is None else dt, input_shape=input_shape)
    if dt is not None:
        raise UsageError(f"--dt discretises a NIR graph's neurons; {str(file)!r} is not a NIR file, and its network runs in steps of its own")
    try:
        payload = load_weights_only(str(file), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - not weights-only: a pickle (refused unless trusted), or a damaged or foreign file (refused)
        holds_pickled_objects(exc, file)
        payload = None
    if isinstance(payload, dict) and payload.get("format") == "annsnn-direct-snn":
        return network_from_direct(payload)
    if isinstance(payload, dict) and payload.get("format") == "annsnn-stdp-snn":
        return network_from_stdp(payload)
    if payload is not None:
        raise UsageError(f"{str(file)!r} is neither a NIR file, a directly trained (or STDP) SNN checkpoint nor a pickled SpikingJelly network")
    if not trust:
        raise UsageError(f"{str(file)!r} is a pickled module; loading it runs code from the file: pass --trust if you trust it")
    module = unpickle_trusted_module(file)
    if input_shape is None:
        raise UsageError("a pickled network records no input shape; pass --input-shape C,H,W")
    return from_spikingjelly(module, tuple(input_shape), {"source": "spikingjelly", "path": str(file)})
