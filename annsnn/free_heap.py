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
1.26 to 2.10 times the ANN pass's (median 1.93) to 1.30 to 1.58 times (median 1.50). It
changes no value, only which pages stay resident. Elsewhere (macOS, Windows, musl)
:func:`release_free_heap` does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["release_free_heap"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim(0)``); True if any
    were released, False if none were or the C library has no such call."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
