"""The user's model in eval mode for a while, and as it was afterwards.

Conversion, counting and the equivalence check run the model in eval mode (BatchNorm on its
running statistics, dropout off). A training script that converts or counts mid-training
must get its model back as it gave it: every submodule's own ``training`` flag is restored,
including a mix (a frozen BatchNorm inside a model being trained).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

__all__ = ["evaluating"]


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; each submodule's flag as before after it."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
