"""torch.fx's ``ShapeProp``, quiet: a node that fails prints its traceback to stderr
(``traceback.print_exc`` in ``ShapeProp.run_node``) before the error reaches the caller,
which turns it into one line. Here the error still propagates; the print does not."""
from __future__ import annotations

import contextlib
import io

from torch import Tensor, fx
from torch.fx.passes.shape_prop import ShapeProp

__all__ = ["propagate_shapes"]


def propagate_shapes(module: fx.GraphModule, *example: Tensor) -> object:
    """``ShapeProp(module).propagate(*example)`` without its stderr traceback."""
    with contextlib.redirect_stderr(io.StringIO()):
        return ShapeProp(module).propagate(*example)
