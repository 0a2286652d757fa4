"""How layers are named to users: one label in every table, plot and export."""
from __future__ import annotations

__all__ = ["layer_label"]


def layer_label(name: str) -> str:
    """A layer's name as every table, plot and NIR export shows it: its name in the user's
    model (the ``model.`` prefix of annsnn's input-normalization wrapper dropped)."""
    return name[len("model."):] if name.startswith("model.") else name
