"""Multi-process evaluation with torch.distributed (launched by ``torchrun``).

Batches are dealt round-robin: rank r analyses batches r, r + W, r + 2W, ... of the
same deterministic loader, so no sample is padded or repeated. Each rank's
:class:`~annsnn.analyzer.Analyzer` state is gathered on every rank and merged by
batch index; counts are integers held in float64, so the merged result equals a
single-process run exactly. gloo on CPU, nccl on CUDA.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["world", "init_from_env", "gather_objects", "shutdown"]


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
