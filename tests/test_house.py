"""The house rules of the package's layout, checked on the source (no import of the package).

* no module -- package, tests, benchmarks, scripts, tools, examples -- reaches another module's
  ``_private`` name (``from m import _x`` or ``m._x`` where ``m`` is one of our modules);
* no file of the package is longer than about 400 lines;
* ``docs/reading_order.md`` and the README's layout table name every file of the package, and
  every ``minimamba_core/...`` path they name exists;
* the lesson floor never imports from the folders above it except through the engine's door.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minimamba_core"
OURS = ("minimamba_core", "benchmarks")  # modules whose private names are private
MAX_LINES = 400
SOURCES = sorted(p for folder in ("minimamba_core", "tests", "benchmarks", "scripts", "tools", "examples")
                 for p in (ROOT / folder).rglob("*.py"))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(source: str, package: str = "") -> list[str]:
    """``from m import _x`` and ``m._x`` (``m`` one of our modules) in ``source``, as text."""
    tree = ast.parse(source)
    modules: set[str] = set()  # local names bound to one of our modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").split(".")[0] in OURS
            if not ours:
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                modules.add(alias.asname or alias.name)  # a submodule or a name: both checked below
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _is_private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            found.append(f"{node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_reached_across_modules(path):
    found = private_reaches(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(ROOT)} reaches private names of other modules: {found}"


@pytest.mark.parametrize("source, expected", [
    ("from minimamba_core.scan import _finish", ["from minimamba_core.scan import _finish"]),
    ("from . import chunk_ops\nchunk_ops._helper()", ["chunk_ops._helper"]),
    ("import minimamba_core.fast_scan as fs\nfs._CHUNK", ["fs._CHUNK"]),
    ("from minimamba_core import fast_scan\nfast_scan.settings.chunk", []),
    ("import torch\ntorch._dynamo.reset()", []),                      # not ours
    ("class A:\n    def f(self):\n        return self._x", []),       # own attribute
    ("from minimamba_core import viz\nviz.__name__", []),              # dunder
])
def test_private_reach_detector(source, expected):
    assert private_reaches(source) == expected


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_package_file_over_400_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines; split it by concept (at most {MAX_LINES})"


def _package_files() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("doc", ["docs/reading_order.md", "README.md"])
def test_layout_docs_match_the_tree(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    for rel in re.findall(r"minimamba_core/[\w/]+(?:\.py)?", text):
        assert (ROOT / rel).exists(), f"{doc} names {rel}, which does not exist"
    missing = []
    for rel in _package_files():
        folder, name = (rel.rsplit("/", 1) if "/" in rel else ("", rel))
        named = (f"minimamba_core/{rel}" in text or (folder and f"{folder}/{name}" in text)
                 or (folder and f"minimamba_core/{folder}/" in text
                     and (name in text or f"`{name[:-3]}`" in text or name == "__init__.py"))
                 or (not folder and f"`{name}`" in text))
        if not named:
            missing.append(rel)
    assert not missing, f"{doc} does not mention {missing}"


LESSON = ["config.py", "norm.py", "checks.py", "scan.py", "mixer.py", "model.py", "cache.py", "generate.py",
          "devices.py"]


@pytest.mark.parametrize("name", LESSON)
def test_the_lesson_reaches_the_engine_only_through_its_door(name):
    tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            top = node.module.split(".")[0]
            assert top not in ("interop", "training", "viz"), f"{name} imports from {node.module}: not the lesson"
            assert not node.module.startswith("fast_scan."), (
                f"{name} imports {node.module}: the lesson uses the engine's door, `from . import fast_scan`")
