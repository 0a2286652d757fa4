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

__all__ = ["world", "init_from_env", "shard_batches", "gather_objects", "shutdown"]


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun set up (no-op for a single process)."""
    rank, size = world()
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
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
