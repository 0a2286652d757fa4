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


def test_which_environments_configure_the_allocator(monkeypatch):
    """heap_reuse leaves the allocator alone exactly when the environment sets glibc's
    map count, a threshold or the top pad (GLIBC_TUNABLES first, then MALLOC_*_), with
    values read as glibc reads them (hex too); an unrelated or unreadable tunable does
    not count. When it applies, the exit sets glibc's default map count and the
    thresholds its dynamic rule settles at (checked in a fresh process above)."""
    for name in ("GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"):
        monkeypatch.delenv(name, raising=False)
    assert free_heap._SETTLED == {free_heap._M_MMAP_MAX: 65536, free_heap._M_MMAP_THRESHOLD: 32 * 2**20, free_heap._M_TRIM_THRESHOLD: 64 * 2**20}
    assert free_heap.environment_sets_allocator() is False
    cases = [
        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2", False),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=lots", False),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0x1000", True),
        ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576", True),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0", True),
        ("GLIBC_TUNABLES", "glibc.malloc.top_pad=0", True),
        ("MALLOC_MMAP_MAX_", "7", True),
        ("MALLOC_TRIM_THRESHOLD_", "4096", True),
        ("MALLOC_TOP_PAD_", "0", True),
    ]
    for name, value, expected in cases:
        monkeypatch.setenv(name, value)
        assert free_heap.environment_sets_allocator() is expected, (name, value)
        assert free_heap.heap_reuse_applies() is (not expected), (name, value)
        monkeypatch.delenv(name)
    assert free_heap._parse_size("0x1000") == 4096 and free_heap._parse_size("010") == 8 and free_heap._parse_size("lots") is None and free_heap._parse_size(str(2**31)) is None
