"""Evaluate an SNN over a data set: sharding, resume and merging, as a library call.

:func:`evaluate` owns the loop that ``annsnn evaluate`` and ``annsnn energy`` run. It never
prints; progress is reported as typed events to ``on_event`` (the CLI draws a bar from
them), and the result is a typed :class:`EvalOutcome`.

**Resume.** With a :class:`ProgressStore`, the accumulated state is saved after every
batch together with a *run key*: a dict of everything that changes the numbers -- the
SNN's content hash (graph, every tensor, and its metadata, so the conversion options and
the scales are covered), the data identity (dataset, resolved root, split, samples, batch
size, number of batches and samples), and the evaluation spec (T list, encoding, seed,
energy models, counting, chunk, device). A saved state whose key differs in any field is
discarded (a :class:`ProgressDiscarded` event names the fields) and the run starts afresh,
so two different runs are never merged.

**Nothing that can fail runs after the simulation.** Before the first batch is simulated,
the ANN's op counts (fvcore) are computed once and the input shape is checked, so an
unsupported model fails in seconds, not after the expensive part.

Under ``torchrun``, each rank simulates only its shard of the batches
(:func:`annsnn.distributed.shard_batches`); the states are gathered and merged by batch
index, so the result equals a single-process run.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import torch
from torch.utils.data import DataLoader
from torch import Tensor

from .analyzer import AnalysisResult, Analyzer
from .energy import EnergyModel
from .errors import UsageError
from .snn import SpikingNetwork
from .files import load_weights_only

__all__ = [
    "check_device",
    "DataSpec", "EvalSpec", "EvalOutcome", "ProgressStore", "evaluate", "run_key", "snn_fingerprint", "tensor_bytes",
    "Event", "Planned", "Resumed", "ProgressDiscarded", "BatchDone", "data_spec_for", "analyze",
]


@dataclass(frozen=True)
class DataSpec:
    """Which samples are evaluated: part of the resume key."""

    dataset: str
    split: str
    samples: int | None  # None: the whole split
    batch_size: int
    root: str | None = None  # resolved data root (None for bundled data)

    def key(self, loader: DataLoader) -> dict:
        data = asdict(self)
        data["num_samples"] = len(loader.dataset)  # type: ignore[arg-type]
        data["num_batches"] = len(loader)
        return data


@dataclass(frozen=True)
class EvalSpec:
    """How the SNN is simulated and counted: part of the resume key."""

    T: tuple[int, ...]
    encoding: str = "direct"
    seed: int = 0
    energy_models: tuple[Union[str, EnergyModel], ...] = ("45nm-fp32",)
    count: bool = True
    chunk: int | None = None
    device: str = "cpu"

    def key(self) -> dict:
        return {
            "T": [int(t) for t in self.T], "encoding": self.encoding, "seed": int(self.seed),
            "energy_models": [m if isinstance(m, str) else json.dumps(asdict(m), sort_keys=True, default=str) for m in self.energy_models],
            "count": bool(self.count), "chunk": self.chunk, "device": self.device,
        }


# --- events ------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """Simulation is about to start: ``todo`` of ``total`` batches run in this process."""

    todo: int
    total: int
    max_T: int
    todo_images: int = 0  # images in the batches this process runs (a progress bar counts these)


@dataclass(frozen=True)
class Resumed:
    done: int
    total: int


@dataclass(frozen=True)
class ProgressDiscarded:
    """A saved state belonged to another run (``changed`` lists the differing key fields)."""

    path: str
    changed: tuple[str, ...]


@dataclass(frozen=True)
class BatchDone:
    index: int
    done: int  # batches finished in this process
    todo: int
    images: int = 0  # images in this batch


Event = Union[Planned, Resumed, ProgressDiscarded, BatchDone]


def _ignore(event: Event) -> None:
    return None


@dataclass
class EvalOutcome:
    """The merged result, and how it was obtained."""

    result: AnalysisResult
    rank: int
    world_size: int
    resumed_batches: int
    discarded: tuple[str, ...] = field(default_factory=tuple)  # key fields that forced a fresh start


# --- resume -------------------------------------------------------------------


def tensor_bytes(tensor: Tensor) -> bytes:
    """A tensor's values as bytes, in C order (numpy's ``tobytes``), for any shape and dtype.

    Flattened first: ``Tensor.view(dtype)`` to a smaller element size refuses 0-dim tensors
    ("self.dim() cannot be 0 to view Float as Byte"), and a scalar buffer is a valid SNN part."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def snn_fingerprint(snn: SpikingNetwork) -> str:
    """SHA-256 of everything an SNN file holds: both graphs, every tensor, and the metadata
    (conversion options, scales, calibration data). Two SNNs that can give different
    numbers have different fingerprints."""
    from .artifact import graph_to_spec
    from .errors import UsageError

    def structure(gm) -> object:
        try:
            return graph_to_spec(gm, snn.registry)
        except UsageError:  # not an annsnn file (a foreign SNN): its generated code and module configurations
            return {"code": gm.code, "modules": {name: repr(m) for name, m in gm.named_modules()}}

    digest = hashlib.sha256()
    for part in (structure(snn.graph), structure(snn.ann)):
        digest.update(json.dumps(part, sort_keys=True).encode())
    digest.update(json.dumps(snn.meta, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)).encode())
    for module in (snn.graph, snn.ann):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
            digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def run_key(snn: SpikingNetwork, loader: DataLoader, data: DataSpec, spec: EvalSpec) -> dict:
    """Everything that changes the numbers of a run (see the module docstring)."""
    return {"snn_sha256": snn_fingerprint(snn), "data": data.key(loader), "eval": spec.key()}


def _changed(saved: Any, current: dict) -> tuple[str, ...]:
    if not isinstance(saved, dict):
        return ("format",)
    changed = []
    for group, value in current.items():
        old = saved.get(group)
        if isinstance(value, dict) and isinstance(old, dict):
            changed += [f"{group}.{k}" for k in sorted(set(value) | set(old)) if value.get(k) != old.get(k)]
        elif old != value:
            changed.append(group)
    return tuple(changed)


@dataclass(frozen=True)
class ProgressStore:
    """A progress file, written atomically after every batch and removed when the run ends."""

    path: Path

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            saved = load_weights_only(str(self.path))
        except Exception:  # noqa: BLE001 - a damaged progress file is just not resumable
            return {"key": None, "state": None}
        return saved if isinstance(saved, dict) else {"key": None, "state": None}

    def save(self, key: dict, state: dict) -> None:
        from .files import atomic_path

        with atomic_path(self.path) as tmp:
            torch.save({"key": json.dumps(key, sort_keys=True), "state": state}, str(tmp))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


# --- the loop -----------------------------------------------------------------


def check_device(name: str) -> torch.device:
    """The torch device ``name`` (cpu, cuda, cuda:N, ...), refused in one line when torch
    does not know it or it is not available here."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: annsnn runs on cpu or cuda")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if device.type == "cpu" and device.index not in (None, 0):
        raise UsageError(f"--device {name}: the CPU is one device; use --device cpu")
    return device


def _preflight(snn: SpikingNetwork, spec: EvalSpec) -> None:
    """Everything after the simulation that could fail, run once before it."""
    from .counting import count_ann

    check_device(spec.device)
    count_ann(snn.ann, snn.record.input_shape)


def evaluate(
    snn: SpikingNetwork,
    loader: DataLoader,
    data: DataSpec,
    spec: EvalSpec,
    *,
    store: ProgressStore | None = None,
    resume: bool = False,
    on_event: Callable[[Event], None] = _ignore,
) -> EvalOutcome:
    """Simulate ``snn`` on every batch of the unshuffled ``loader`` and score it beside its ANN.

    ``store`` saves progress after every batch (single process only); ``resume`` continues
    from it when its run key matches, else starts afresh. Under torchrun each rank runs its
    shard and every rank returns the merged result.
    """
    from .data import select_batches
    from .distributed import gather_objects, init_from_env, rank_device, shard_batches

    _preflight(snn, spec)
    device = rank_device(spec.device)  # under torchrun: each rank its own GPU
    rank, size = init_from_env(spec.device)
    if size > 1 and resume:
        raise UsageError("--resume works in a single process; rerun without torchrun or without --resume")
    key = run_key(snn, loader, data, spec)
    expected = snn.record.input_shape
    options = dict(encoding=spec.encoding, seed=spec.seed, energy_models=spec.energy_models, count=spec.count, chunk=spec.chunk)
    resumed, discarded = 0, ()
    with Analyzer(snn, list(spec.T), device=device, **options) as analyzer:  # type: ignore[arg-type]
        saved = store.load() if (store is not None and resume) else None
        if saved is not None:
            saved_key = json.loads(saved["key"]) if isinstance(saved.get("key"), str) else None
            discarded = _changed(saved_key, key)
            if discarded:
                on_event(ProgressDiscarded(str(store.path), discarded))  # type: ignore[union-attr]
            else:
                analyzer.load_state_dict(saved["state"])
                resumed = len(analyzer.done_batches())
                on_event(Resumed(resumed, len(loader)))
        done = analyzer.done_batches()
        mine = [index for index in shard_batches(len(loader), rank, size) if index not in done]
        sizes = [len(batch) for batch in loader.batch_sampler]  # type: ignore[arg-type]
        on_event(Planned(len(mine), len(loader), max(spec.T), sum(sizes[i] for i in mine)))
        for count, (index, (x, y)) in enumerate(zip(mine, select_batches(loader, mine)), start=1):
            if tuple(x.shape[2 if spec.encoding == "events" else 1:]) != expected:  # events: [B, frames, ...]
                raise UsageError(f"the data has shape {tuple(x.shape[1:])}, the SNN expects {expected}")
            analyzer.run(x, y, batch_index=index)
            if store is not None and size == 1:
                store.save(key, analyzer.state_dict())
            on_event(BatchDone(index, count, len(mine), int(x.shape[0])))
        if size > 1:
            states = gather_objects(analyzer.state_dict())
            merged = Analyzer(snn.cpu(), list(spec.T), **options)  # type: ignore[arg-type]
            for state in states:
                merged.load_state_dict(state)  # type: ignore[arg-type]
            analyzer = merged
        result = analyzer.report()
    if store is not None:
        store.clear()
    return EvalOutcome(result, rank, size, resumed, discarded)


def analyze(snn: SpikingNetwork, batches: Iterable, T: Sequence[int], **options: Any) -> AnalysisResult:
    """Simulate ``snn`` on every batch for the time steps ``T`` and score it beside its ANN:
    the loop of :func:`evaluate` for batches already in hand, with no data spec, sharding or
    resume. ``batches`` yields ``(x, y)`` pairs, or ``x`` alone (no labels: no accuracy);
    ``options`` go to :class:`~annsnn.analyzer.Analyzer` (``count``, ``energy_models``,
    ``encoding``, ``device``, ...)."""
    with Analyzer(snn, list(T), **options) as analyzer:
        for batch in batches:
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            analyzer.run(x, y)
        return analyzer.report()


def data_spec_for(name: str, split: str, samples: int | None, batch_size: int, root: str | os.PathLike | None) -> DataSpec:
    """A :class:`DataSpec` with the data root resolved (the same name under another root is
    other data)."""
    from .data import data_root

    if name == "digits":
        resolved = None
    elif name.startswith(("imagefolder:", "imagenet:")):
        resolved = str(Path(name.split(":", 1)[1]).resolve())
    else:
        resolved = str(data_root(root).resolve())
    return DataSpec(name, split, samples, batch_size, resolved)

