"""Multi-process evaluation with torch.distributed (launched by ``torchrun``).

The test set is sharded by batch: a :class:`~torch.utils.data.DistributedSampler` over
the batch indices of one deterministic loader gives rank r the batches r, r + W,
r + 2W, ...; the sampler's padding (repeated batches that even out the shards) is
dropped, so no sample is evaluated twice, and each rank loads only its own batches. Each rank's
:class:`~annsnn.analyzer.Analyzer` state is gathered on every rank and merged by
batch index; counts are integers held in float64, so the merged result equals a
single-process run exactly. gloo on CPU, nccl on CUDA.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["world", "rank_device", "init_from_env", "shard_batches", "gather_objects", "shutdown"]


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by it. A
    value that is not 0 <= RANK < WORLD_SIZE is a one-line error naming the variables."""
    from .errors import UsageError

    raw = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    try:
        rank, size = int(raw[0]), int(raw[1])
    except ValueError:
        rank = size = -1
    if size < 1 or not 0 <= rank < size:
        raise UsageError(f"RANK={raw[0]!r} and WORLD_SIZE={raw[1]!r} in the environment: torchrun sets whole numbers with 0 <= RANK < WORLD_SIZE; unset them to run one process")
    return rank, size


def rank_device(device: str) -> str:
    """This rank's device: under torchrun with several processes, ``--device cuda`` gives
    each rank its own GPU, ``cuda:LOCAL_RANK`` (``torchrun --nproc-per-node N`` on a machine
    with N GPUs); ``cpu`` stays ``cpu``. One process: ``device`` unchanged."""
    from .errors import UsageError

    rank, size = world()
    if size == 1 or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise UsageError(f"--device {device} under torchrun: pass --device cuda, and each rank takes its own GPU (cuda:LOCAL_RANK)")
    local = int(os.environ.get("LOCAL_RANK", rank))
    count = torch.cuda.device_count()
    if local >= count:
        raise UsageError(f"rank {rank} (local rank {local}) has no GPU of its own: this machine has {count}; run torchrun --nproc-per-node {max(count, 1)} or fewer")
    return f"cuda:{local}"


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun set up (no-op for a single process): gloo on the
    CPU; nccl on CUDA, with this rank's GPU made current first (:func:`rank_device`), so
    the collectives run on it and not all on GPU 0."""
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.set_device(torch.device(rank_device(device)))
            dist.init_process_group(backend="nccl")
        else:
            dist.init_process_group(backend="gloo")
    return rank, size


def shard_batches(num_batches: int, rank: int, size: int) -> list[int]:
    """Batch indices for ``rank`` of ``size``: DistributedSampler(shuffle=False) without its padding.

    The sampler pads the index list to a multiple of ``size`` by repeating its head; the
    item at position k of rank r's shard is padding when r + k·size >= num_batches.
    """
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(num_batches), num_replicas=size, rank=rank, shuffle=False, drop_last=False)  # type: ignore[arg-type]
    return [index for position, index in enumerate(sampler) if rank + position * size < num_batches]


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (single process: ``[obj]``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
