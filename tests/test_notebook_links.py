"""The Colab and Binder links and Colab's set-up cell (``tools/notebook_links.py``) all follow the one
repository address in ``pyproject.toml`` (``[project.urls] Repository``)."""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("notebook_links", ROOT / "tools" / "notebook_links.py")
links = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(links)
URL = links.repository_url()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_links_to_the_repository(path):
    nb = nbformat.read(path, as_version=4)
    assert not links.linked(nb, URL, path.name), (
        f"{path.name}: links or set-up cell differ from pyproject.toml's {URL}; run "
        f"python tools/notebook_links.py, then make refresh")
    assert links.MARK in nb.cells[0].source.split("\n")[1]  # right under the heading
    assert nb.cells[1].metadata["tags"] == [links.SETUP_TAG]


def test_a_planted_wrong_address_is_caught():
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    other = copy.deepcopy(nb)
    assert links.linked(other, "https://github.com/someone/else", NOTEBOOKS[0].name)  # it would rewrite
    assert "someone/else" in other.cells[0].source and "someone/else" in other.cells[1].source
    assert links.linked(other, URL, NOTEBOOKS[0].name)  # and back
    assert other.cells[0].source == nb.cells[0].source and other.cells[1].source == nb.cells[1].source


def test_readme_links_follow_the_same_address():
    readme = (ROOT / "README.md").read_text()
    assert links.badges(URL, NOTEBOOKS[0].name) in readme
    assert f"`{URL}`" in readme


def test_the_address_must_be_a_github_repository(tmp_path):
    for bad in ('Repository = "https://gitlab.com/a/b"', 'Repository = "https://github.com/only-owner"', "",
                'Repository = "https://github.com/a/b.git"'):
        pyproject = tmp_path / "pyproject.toml"
        pyproject.write_text(f'[project]\nname = "x"\n\n[project.urls]\n{bad}\n')
        with pytest.raises(ValueError, match=r"\[project.urls\] Repository"):
            links.repository_url(pyproject)


def test_the_setup_cell_does_nothing_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    where, path = os.getcwd(), list(sys.path)
    exec(links.setup_source(URL), {})
    assert os.getcwd() == where and sys.path == path


def test_only_its_own_lines_and_cell_are_touched():
    """Adversarial review (2026-12-08): a title line that merely mentioned the marker was deleted, and
    a set-up cell moved below another cell got a twin."""
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    nb.cells[0].source += f"\nA line that mentions {links.MARK} in passing."
    nb.cells.insert(1, nbformat.v4.new_markdown_cell("A note placed above the set-up cell."))
    assert links.linked(nb, URL, NOTEBOOKS[0].name)
    assert nb.cells[0].source.endswith(f"A line that mentions {links.MARK} in passing.")
    tagged = [c for c in nb.cells if links.SETUP_TAG in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and nb.cells[1] is tagged[0] and not links.linked(nb, URL, NOTEBOOKS[0].name)
    with pytest.raises(ValueError, match="first cell"):
        links.linked(nbformat.v4.new_notebook(), URL, "empty.ipynb")
