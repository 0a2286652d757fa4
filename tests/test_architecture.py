"""The layout's rules (issue 27): no import cycles, and op rules flow down from the schema.

* ``../shared/tools/import_cycles.py`` (static: every import counts, also inside functions
  and ``importlib.import_module`` with a literal name) finds no cycle;
* the schema (:mod:`annsnn.opspec`) imports no rule and no consumer; the rule modules
  (:mod:`annsnn.rules`, :mod:`annsnn.analog`) never import the built-in table
  (:mod:`annsnn.ops`) nor a module that reads it; nothing imports by ``importlib``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO, _need_shared

PACKAGE = REPO / "annsnn"


def _imports(path: Path) -> set[str]:
    """Every annsnn module ``path`` imports (module level or inside functions), absolute names."""
    tree = ast.parse(path.read_text())
    package = ["annsnn"] + list(path.relative_to(PACKAGE).parent.parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module.startswith("annsnn"):
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("annsnn"))
    return found


def _uses_importlib(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            return True
        if isinstance(node, ast.Name) and node.id == "__import__":
            return True
    return False


def test_import_cycles_tool_finds_no_cycle():
    tool = _need_shared("tools/import_cycles.py")
    done = subprocess.run([sys.executable, str(tool)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("0 cycle(s)"), done.stdout


def test_the_schema_imports_no_rule_and_no_consumer():
    assert _imports(PACKAGE / "opspec.py") <= {"annsnn.errors", "annsnn.errors.UsageError"}


def test_rule_modules_never_import_the_table_or_its_readers():
    readers = {"annsnn.ops", "annsnn.graph", "annsnn.convert", "annsnn.counting", "annsnn.snn", "annsnn.artifact", "annsnn.pipeline"}
    for path in [*(PACKAGE / "rules").glob("*.py"), PACKAGE / "analog.py"]:
        imported = {name for name in _imports(path) if any(name == r or name.startswith(r + ".") for r in readers)}
        assert not imported, f"{path.name} imports {sorted(imported)}"


def test_no_module_imports_by_importlib():
    offenders = [p.name for p in [*PACKAGE.rglob("*.py"), *(REPO / "cli").glob("*.py")] if _uses_importlib(p)]
    assert offenders == []


def test_lower_modules_take_the_registry_as_an_argument():
    """Only the entry points default the registry: a lower module that built its own
    copy would silently ignore the entries a user registered."""
    allowed = {"ops.py", "pipeline.py", "artifact.py", "graph.py", "foreign.py", "__init__.py"}  # entry points
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if path.name not in allowed:
            assert "default_registry()" not in text, f"{path.relative_to(REPO)} builds its own registry"


def test_importers_build_only_modules_the_registry_names():
    """The ONNX and ATen importers keep their own tables (a foreign format's op names), but
    every activation module they build is an entry of the op registry, under its own name."""
    from annsnn import lift, onnx_import
    from annsnn.ops import default_registry

    registry = default_registry()
    args = {"alpha": 1 / 6, "beta": 0.5}  # the only HardSigmoid torch's Hardsigmoid is
    for table in (lift._ACTIVATIONS, onnx_import._ACTIVATIONS):
        for foreign, factory in table.items():
            module = factory(args)
            spec = registry.for_module(module)
            assert spec is not None and spec.name == type(module).__name__, foreign
