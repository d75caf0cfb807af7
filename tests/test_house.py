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
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minimamba_core"
OURS = ("minimamba_core", "benchmarks")  # modules whose private names are private
MAX_LINES = 400
SOURCES = sorted([p for folder in ("minimamba_core", "tests", "benchmarks", "scripts", "tools", "examples")
                  for p in (ROOT / folder).rglob("*.py")]
                 + sorted(ROOT.glob("*.py")) + sorted((ROOT / "notebooks").glob("*.ipynb")))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None for anything that is not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def private_reaches(source: str) -> list[str]:
    """Private names of our modules reached from ``source``, as text.

    Caught: ``from m import _x``; ``m._x`` and ``m.sub._x`` where ``m`` was bound by importing one
    of our modules (a class on the way, ``m.MambaMixer._apply``, is a class's own business and not
    counted); ``getattr/setattr/hasattr(m, "_x")`` and ``monkeypatch.setattr(m, "_x", ...)``.
    """
    tree = ast.parse(source)
    modules: set[str] = set()  # local names bound to one of our modules (or a name imported from one)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if not (node.level > 0 or (node.module or "").split(".")[0] in OURS):
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    found.append(f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                modules.add(alias.asname or alias.name)

    def reaches(parts: list[str] | None) -> bool:
        if not parts or parts[0] not in modules or parts[0][:1].isupper():
            return False
        for part in parts[1:]:
            if part[:1].isupper():  # a class: its private members are its own
                return False
            if _is_private(part):
                return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            parts = _chain(node)
            if reaches(parts) and not (isinstance(node.value, ast.Attribute) and reaches(_chain(node.value))):
                found.append(".".join(parts))
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            name = ".".join(_chain(node.func) or [])
            target, attr = node.args[0], node.args[1]
            if (name in ("getattr", "setattr", "hasattr", "delattr") or name.endswith("monkeypatch.setattr")) \
                    and isinstance(attr, ast.Constant) and isinstance(attr.value, str) and _is_private(attr.value) \
                    and reaches([*(_chain(target) or ["?"]), attr.value]):
                found.append(f"{name}({'.'.join(_chain(target))}, {attr.value!r})")
    return found


def _code(path: Path) -> str:
    """A file's Python: a notebook's code cells (IPython ``%``/``!`` lines left out), else the text."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(line for line in "".join(c["source"]).splitlines(keepends=True)
                             if not line.lstrip().startswith(("%", "!")))
                     for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_reached_across_modules(path):
    found = private_reaches(_code(path))
    assert not found, f"{path.relative_to(ROOT)} reaches private names of other modules: {found}"


@pytest.mark.parametrize("source, expected", [
    ("from minimamba_core.scan import _finish", ["from minimamba_core.scan import _finish"]),
    ("from . import chunk_ops\nchunk_ops._helper()", ["chunk_ops._helper"]),
    ("import minimamba_core.fast_scan as fs\nfs._CHUNK", ["fs._CHUNK"]),
    ("from minimamba_core import fast_scan\nfast_scan.settings.chunk", []),
    ("import torch\ntorch._dynamo.reset()", []),                      # not ours
    ("class A:\n    def f(self):\n        return self._x", []),       # own attribute
    ("from minimamba_core import viz\nviz.__name__", []),              # dunder
    ("import minimamba_core as mm\nmm.scan._finish(1)", ["mm.scan._finish"]),  # through the package
    ("import minimamba_core.fast_scan.compile\nminimamba_core.fast_scan.compile._compile",
     ["minimamba_core.fast_scan.compile._compile"]),
    ("from minimamba_core import fast_scan\ngetattr(fast_scan, '_x')", ["getattr(fast_scan, '_x')"]),
    ("from minimamba_core import model\nmonkeypatch.setattr(model, '_y', 1)", ["monkeypatch.setattr(model, '_y')"]),
    ("from minimamba_core.mixer import MambaMixer\nMambaMixer._apply", []),  # a class's own member
    ("import minimamba_core as mm\nmm.MambaMixer._apply", []),
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
        def says(word):  # the word on its own, not inside a longer name (test_compat.py)
            return re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w-])", text) is not None
        named = (says(f"minimamba_core/{rel}") or (folder and says(f"{folder}/{name}"))
                 or (folder and f"minimamba_core/{folder}/" in text
                     and (says(name) or f"`{name[:-3]}`" in text or name == "__init__.py"))
                 or (not folder and f"`{name}`" in text))
        if not named:
            missing.append(rel)
    assert not missing, f"{doc} does not mention {missing}"


LESSON = ["config.py", "norm.py", "checks.py", "scan.py", "ssd.py", "mixer.py", "mixer2.py", "mamba3.py", "mixer3.py", "attention.py", "model.py", "cache.py", "generate.py",
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
