"""annsnn's command-line interface (``annsnn.cli``)."""
__all__: list[str] = []
