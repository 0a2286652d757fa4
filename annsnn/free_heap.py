"""Give the C heap's free memory back to the operating system between calibration passes.

CPU tensors come from the C allocator (glibc ``malloc`` on Linux). Memory a pass frees stays
in the process as free heap unless it lies at the heap's top, so the next pass starts from
the previous pass's peak instead of its live data. On the shared ResNet-20 (N = 32) the
step-bias fit's peak resident memory varied from 136 to 199 MB over runs of the same
conversion, depending on what the calibration and target passes had left behind; with the
free heap returned at the start of each pass it stayed between 167 and 172 MB
(``benchmarks/run.py calibration_cost``). glibc's ``malloc_trim(0)`` does this: it
releases the top of the heap and the unused whole pages inside it (man 3 malloc_trim).
:func:`annsnn.layerwise.run_layerwise` also calls it after each layer, so one layer's
temporaries do not stay resident beside the next one's. Over 5 fresh processes each
(``benchmarks/run.py calibration_cost``), the default conversion's peak (N = 32) went from
1.26 to 2.10 times the ANN pass's (median 1.93) to 1.30 to 1.58 times (median 1.50), before
:func:`heap_reuse` existed. It changes no value, only which pages stay resident. Elsewhere (macOS, Windows, musl)
:func:`release_free_heap` does nothing.

:func:`heap_reuse` is the other side: glibc serves every allocation over its mmap threshold
(at most 32 MiB) with a fresh mapping and unmaps it on free, so a loop that allocates and
frees large tensors, as a simulation step or a calibration pass does, faults every page
in again each time (PyTorch's CPU allocator keeps no cache). A CPU conversion of
torchvision's mobilenet_v2 at 224 x 224 (64 images, 1 thread) took 12.0 M minor page
faults and 24 s of its 72 s in the kernel; with the heap kept throughout (glibc tunables
set for the whole process), 1.5 M and 3.8 s, and the conversion went from 64.3 s to 45.3 s. An ANN pass pays the same (1.98 s against 1.13 s
for 64 images in batches of 8), so benchmarks time both under the same setting.
Inside it, ``mallopt(M_MMAP_MAX, 0)`` puts large blocks in the heap too and
``mallopt(M_TRIM_THRESHOLD, INT_MAX)`` keeps freed ones there; the outermost exit sets
both back and returns the free heap to the OS. It is process wide while it lasts (other
threads' large allocations come from the heap too). glibc's dynamic mmap threshold stays
off afterwards (any ``mallopt`` call turns it off), so the exit sets the thresholds that
rule settles at (``_SETTLED``). Where the environment configures the allocator itself,
heap_reuse does nothing (:func:`environment_sets_allocator`). A process forked inside the block keeps the setting. The price is
memory: freed blocks stay resident until reused or trimmed (run_layerwise still trims after
each layer), so a conversion's peak grows (mobilenet_v2 above: about 0.9 GB against 0.7 GB
over runs of the same conversion).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from typing import Iterator

__all__ = ["release_free_heap", "heap_reuse", "heap_reuse_applies", "environment_sets_allocator"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
_MMAP_THRESHOLD_MAX = 32 * 2**20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: where glibc's dynamic threshold stops
# what heap_reuse sets back (it applies only when the environment sets none of these): glibc's
# DEFAULT_MMAP_MAX, and the thresholds its dynamic rule reaches once a large block has been freed
# (mmap 32 MiB, trim twice that). mallopt turns that rule off for good, and glibc's start-up
# 128 KiB would map every tensor over 128 KiB afresh from then on. Values a program set itself
# with mallopt before are not known here and are not restored.
_SETTLED = {_M_MMAP_MAX: 65536, _M_MMAP_THRESHOLD: _MMAP_THRESHOLD_MAX, _M_TRIM_THRESHOLD: 2 * _MMAP_THRESHOLD_MAX}
_TUNABLES = {_M_MMAP_MAX: ("glibc.malloc.mmap_max", "MALLOC_MMAP_MAX_"), _M_MMAP_THRESHOLD: ("glibc.malloc.mmap_threshold", "MALLOC_MMAP_THRESHOLD_"),
             _M_TRIM_THRESHOLD: ("glibc.malloc.trim_threshold", "MALLOC_TRIM_THRESHOLD_")}


@functools.lru_cache(maxsize=1)
def _libc():
    """glibc, with ``malloc_trim`` and ``mallopt``; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def _malloc_trim():
    libc = _libc()
    return None if libc is None else libc.malloc_trim


def _tunables() -> dict[str, str]:
    tunables: dict[str, str] = {}
    for item in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = item.partition("=")
        tunables[name.strip()] = value.strip()
    return tunables


def _asked() -> dict[int, int | None]:
    tunables = _tunables()
    return {param: _parse_size(tunables.get(tunable, os.environ.get(variable, ""))) for param, (tunable, variable) in _TUNABLES.items()}


def environment_sets_allocator() -> bool:
    """True when the environment configures glibc's large-block policy: its map count, mmap
    or trim threshold or top pad (``GLIBC_TUNABLES`` or ``MALLOC_*_``). :func:`heap_reuse`
    then leaves the allocator as configured: the way to keep the lower memory peak of
    fresh mappings. ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864``
    fixes the thresholds where glibc's dynamic rule settles, which is how annsnn ran before
    heap_reuse (mobilenet_v2, 64 images: 10.1 M page faults, 0.72 GB peak growth). Setting
    only ``mmap_max`` would leave the mmap threshold at 128 KiB (any tunable turns the
    dynamic rule off: 55.6 M faults, 184 s against 98 s with the two thresholds, both beside other work)."""
    return any(value is not None for value in _asked().values()) or "glibc.malloc.top_pad" in _tunables() or "MALLOC_TOP_PAD_" in os.environ


def _parse_size(text: str) -> int | None:
    """A tunable's value as glibc reads it (decimal, 0x hex or 0 octal); None if unset or not a number."""
    text = text.strip()
    try:  # strtoul with base 0, as glibc: 0x.. hex, 0.. octal (Python's base 0 refuses "010")
        value = (int(text, 8) if len(text) > 1 and text[0] == "0" and text[1] not in "xX" else int(text, 0)) if text else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value <= _INT_MAX else None


class _Depth:
    """How many :func:`heap_reuse` blocks are open (the allocator is set on the first entry
    and set back on the last exit)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0


_DEPTH = _Depth()


def release_free_heap() -> bool:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim(0)``); True if any
    were released, False if none were or the C library has no such call."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def heap_reuse_applies() -> bool:
    """True where :func:`heap_reuse` changes anything: glibc, with an environment that does
    not configure the allocator itself (:func:`environment_sets_allocator`)."""
    return _libc() is not None and not environment_sets_allocator()


@contextlib.contextmanager
def heap_reuse() -> Iterator[None]:
    """Within the block, freed C heap memory is kept for the next allocation instead of
    being unmapped (the module docstring); the outermost exit sets the allocator back and
    returns the free heap to the OS. Nests; does nothing where the C library is not glibc,
    or where the environment configures the allocator (:func:`environment_sets_allocator`).
    Changes no value, only where memory comes from."""
    libc = _libc()
    if libc is None or environment_sets_allocator():
        yield
        return
    with _DEPTH.lock:
        _DEPTH.open += 1
        if _DEPTH.open == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
    try:
        yield
    finally:
        with _DEPTH.lock:
            _DEPTH.open -= 1
            if _DEPTH.open == 0:
                for param, value in _SETTLED.items():  # only reached when the environment set none of them
                    libc.mallopt(param, value)
                libc.malloc_trim(0)
