"""The package version (one place; annsnn/__init__.py re-exports it)."""

__version__ = "0.1.0"
