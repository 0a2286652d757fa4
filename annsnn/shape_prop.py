"""torch.fx's ``ShapeProp``, quiet and to the point: a node that fails prints its traceback
to stderr (``traceback.print_exc`` in ``ShapeProp.run_node``) and is re-raised as
"ShapeProp error for: node=%... with meta={...}", which hides the cause. Here nothing is
printed, and the error names the failing layer and says what went wrong there."""
from __future__ import annotations

import contextlib
import io

from torch import Tensor, fx
from torch.fx.passes.shape_prop import ShapeProp

__all__ = ["propagate_shapes", "ShapePropagationError"]


class ShapePropagationError(RuntimeError):
    """A node of the graph failed on the example input: ``layer`` names it (its module for a
    ``call_module`` node) and the message is the cause's first line."""

    def __init__(self, layer: str, cause: BaseException) -> None:
        text = str(cause).strip()
        self.layer = layer
        super().__init__(f"layer {layer}: {text.splitlines()[0] if text else type(cause).__name__}")


class _NamedShapeProp(ShapeProp):
    def run_node(self, n: fx.Node):
        try:
            return super().run_node(n)
        except Exception as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            layer = f"{n.target} ({type(self.module.get_submodule(str(n.target))).__name__})" if n.op == "call_module" else n.name
            raise ShapePropagationError(layer, cause) from cause


def propagate_shapes(module: fx.GraphModule, *example: Tensor) -> object:
    """``ShapeProp(module).propagate(*example)`` without its stderr traceback; a failing node
    raises :class:`ShapePropagationError`."""
    with contextlib.redirect_stderr(io.StringIO()):
        return _NamedShapeProp(module).propagate(*example)
