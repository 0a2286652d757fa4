"""Imports of third-party modules that warn at import time about their own internals.

fvcore's ``fvcore.nn`` calls ``torch.jit.script`` at import (its focal loss), which
torch 2.14 answers with a ``FutureWarning`` that says nothing about annsnn or the user's
model. :func:`import_fvcore_nn` imports it with exactly that warning silenced (any other
warning still shows), so that importing annsnn or counting a model prints nothing.
"""
from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

__all__ = ["import_fvcore_nn"]


def import_fvcore_nn() -> ModuleType:
    """``fvcore.nn`` (and its ``jit_handles``), imported without torch's jit.script notice."""
    if "fvcore.nn.jit_handles" not in sys.modules:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
            importlib.import_module("fvcore.nn")
            importlib.import_module("fvcore.nn.jit_handles")
    return sys.modules["fvcore.nn"]
