"""The corpus ships inside the repository, and nothing in the project reads the workspace's shared folder.

The project was set up next to a folder ``shared/`` (one level up) that held the original copy of
Tiny Shakespeare. A clean clone has no such folder, so every path the project opens must lie inside
the repository. This test scans the code for that path: string literals of Python files and
notebook code cells (docstrings and comments may mention where a file came from), and every
non-comment line of shell, make, YAML and TOML files.
"""

from __future__ import annotations

import ast
import hashlib
import json
import subprocess
from pathlib import Path

from minimamba_core.training import data as D

ROOT = Path(__file__).resolve().parents[1]
# The forbidden folder, built so that this file does not contain it literally.
SHARED = ("..", "shared")
PATTERNS = ("/".join(SHARED), "\\".join(SHARED), "/work/" + SHARED[1])
# sha256 of karpathy/char-rnn data/tinyshakespeare/input.txt (1,115,394 bytes), the file we ship
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def _project_files() -> list[Path]:
    """Tracked and untracked-but-not-ignored files (what a commit would hold)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if line and (ROOT / line).is_file()]


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _python_strings(source: str) -> list[str]:
    """Every string literal of ``source`` that is not a docstring (f-string parts included)."""
    tree = ast.parse(source)
    skip = _docstring_nodes(tree)
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def _notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            lines += [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def _offenders(path: Path) -> list[str]:
    suffix = path.suffix
    if suffix == ".py":
        texts = _python_strings(path.read_text(encoding="utf-8"))
    elif suffix == ".ipynb":
        texts = _python_strings(_notebook_code(path))
    elif suffix in (".sh", ".toml", ".yml", ".yaml", ".cfg", ".ini", ".txt") or path.name in ("Makefile",) \
            or path.parent.name == ".ci":
        if suffix == ".txt" and path.parent.name == "data":
            return []
        texts = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()
                 if not ln.lstrip().startswith("#")]
    else:
        return []
    return [t for t in texts if any(p in t for p in PATTERNS)]


def test_scanner_catches_a_read_from_the_shared_folder():
    bad = 'open("' + PATTERNS[0] + '/data/tinyshakespeare.txt")\n'
    assert _python_strings(bad) and any(PATTERNS[0] in s for s in _python_strings(bad))
    fine = '"""Copied from ' + PATTERNS[0] + '/data."""\nx = 1  # see ' + PATTERNS[0] + '\n'
    assert not any(PATTERNS[0] in s for s in _python_strings(fine))


def test_nothing_in_the_project_reads_the_shared_folder():
    files = _project_files()
    assert len(files) > 20, "git ls-files found too few files; is this a checkout?"
    offenders = {str(p.relative_to(ROOT)): hits for p in files if (hits := _offenders(p))}
    assert not offenders, f"files that use the workspace's shared folder (copy what you need into the repo): {offenders}"


def test_tiny_shakespeare_ships_in_the_repository():
    path = D.TINY_SHAKESPEARE
    assert path.resolve().is_relative_to(ROOT), path
    raw = path.read_bytes()
    assert len(raw) == D.TINY_SHAKESPEARE_CHARS == 1_115_394
    assert hashlib.sha256(raw).hexdigest() == SHAKESPEARE_SHA256
    assert len(D.load_text()) == 1_115_394  # pure ASCII: characters == bytes
