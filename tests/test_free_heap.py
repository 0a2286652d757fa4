"""The C heap around annsnn's runs (annsnn.free_heap): inside :func:`heap_reuse` large
tensors come from the heap (glibc maps none afresh), and after it the allocator maps
large blocks again, with the thresholds glibc's own rule would have reached."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from annsnn import free_heap

_GLIBC = sys.platform.startswith("linux") and free_heap._libc() is not None and hasattr(free_heap._libc(), "mallinfo2")
pytestmark = pytest.mark.skipif(not _GLIBC, reason="glibc >= 2.33 only (mallopt, mallinfo2); elsewhere heap_reuse does nothing")


_PROBE = r"""
import ctypes, json, sys
import torch
from annsnn.free_heap import heap_reuse

class Mallinfo2(ctypes.Structure):  # glibc >= 2.33, <malloc.h>
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2

def mapped(mib):
    # more blocks glibc has mapped (mallinfo2().hblks) while a tensor of `mib` MiB is alive
    before = libc.mallinfo2().hblks
    x = torch.ones(mib * 2**18)
    during = libc.mallinfo2().hblks
    del x
    return during - before

seen = []
for step in sys.argv[1].split(","):
    if step == "enter":
        seen.append(None); stack = getattr(sys, "_blocks", []); cm = heap_reuse(); cm.__enter__(); stack.append(cm); sys._blocks = stack
    elif step == "exit":
        seen.append(None); sys._blocks.pop().__exit__(None, None, None)
    elif step == "raise":
        seen.append(None)
        try:
            with heap_reuse():
                raise RuntimeError("boom")
        except RuntimeError:
            pass
    else:
        seen.append(mapped(int(step)))
print(json.dumps([s for s in seen if s is not None]))
"""


def _mapped(steps: str, tunables: str | None = None) -> list[int]:
    """In a fresh process (a heap with no free blocks left by other tests, which glibc would
    hand out before mapping): for each number in ``steps``, how many blocks glibc mapped
    (``mallinfo2().hblks``) while a tensor of that many MiB was alive; ``enter``/``exit``
    open and close a heap_reuse block, ``raise`` runs one that raises."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    done = subprocess.run([sys.executable, "-c", _PROBE, steps], capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_inside_heap_reuse_a_large_tensor_is_not_mapped_afresh():
    """glibc serves a block over its mmap threshold (at most 32 MiB) with its own mapping
    and unmaps it on free: every large tensor faults all its pages in again, which cost
    a CPU conversion of mobilenet_v2 24 s of 72 in the kernel. Inside heap_reuse no block
    is mapped (M_MMAP_MAX = 0): it comes from the heap, where freed memory is kept. After
    it, a block larger than any the heap has freed is mapped again."""
    assert _mapped("64,enter,64,exit,128") == [1, 0, 1]


def test_an_allocator_the_environment_configures_is_left_as_it_is():
    """The opt-out for memory-bound machines is glibc's own: with the map count (or a
    threshold) set in GLIBC_TUNABLES, heap_reuse changes nothing, so large blocks are
    still mapped inside it; with an unrelated tunable it applies as usual."""
    assert _mapped("enter,64,exit", tunables="glibc.malloc.mmap_max=65536") == [1]
    assert _mapped("enter,64,exit", tunables="glibc.malloc.arena_max=2") == [0]


def test_heap_reuse_nests_and_restores_once_the_outermost_exits():
    assert _mapped("enter,enter,exit,64,exit,128") == [0, 1]


def test_heap_reuse_restores_after_an_exception():
    assert _mapped("raise,64") == [1]


def test_after_heap_reuse_a_block_below_the_settled_threshold_comes_from_the_heap():
    """mallopt turns glibc's dynamic mmap threshold off for good, so the exit sets the
    32 MiB it settles at: a 16 MiB tensor comes from the heap, as it would have without
    heap_reuse once a large block had been freed, instead of being mapped afresh every
    time (the 128 KiB start-up threshold, had the exit set glibc's defaults back)."""
    assert _mapped("enter,exit,16,64") == [0, 1]


def test_restored_values_follow_the_environment(monkeypatch):
    """What the allocator is set back to: glibc's default of 65,536 mappings and the
    thresholds its dynamic rule settles at (mmap 32 MiB, trim 64 MiB), or what
    GLIBC_TUNABLES / MALLOC_*_ asked for at start-up."""
    for name in ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    MAX, MMAP, TRIM = free_heap._M_MMAP_MAX, free_heap._M_MMAP_THRESHOLD, free_heap._M_TRIM_THRESHOLD
    assert free_heap._restored_settings() == {MAX: 65536, MMAP: 32 * 2**20, TRIM: 64 * 2**20}
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "7")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=4096")
    assert free_heap._restored_settings() == {MAX: 7, MMAP: 1048576, TRIM: 4096}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
    assert free_heap._restored_settings()[MAX] == 0


def test_a_threshold_set_at_start_up_keeps_glibc_defaults_for_the_others(monkeypatch):
    """Setting any of them at start-up turns glibc's dynamic rule off from the start, so the
    thresholds not set stay at glibc's 128 KiB; values may be hex, as glibc reads them."""
    for name in ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"):
        monkeypatch.delenv(name, raising=False)
    MAX, MMAP, TRIM = free_heap._M_MMAP_MAX, free_heap._M_MMAP_THRESHOLD, free_heap._M_TRIM_THRESHOLD
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0x1000")
    assert free_heap._restored_settings() == {MAX: 65536, MMAP: 128 * 1024, TRIM: 4096}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.top_pad=0")
    assert free_heap._restored_settings() == {MAX: 65536, MMAP: 128 * 1024, TRIM: 128 * 1024}
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=lots")  # not a number: as if unset
    assert free_heap._restored_settings() == {MAX: 65536, MMAP: 32 * 2**20, TRIM: 64 * 2**20}
