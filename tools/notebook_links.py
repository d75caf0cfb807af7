"""Write the "Open in Colab" and Binder links, and Colab's set-up cell, into every notebook.

Usage: python tools/notebook_links.py [--check] [notebooks/*.ipynb]

The repository's address lives in one place, ``[project.urls] Repository`` in ``pyproject.toml``
(a placeholder until the project is published). From it this script writes, in each notebook:

* a line of two badges right after the title (the first markdown cell's first line), marked
  ``<!-- links -->``: Colab opens the notebook from the repository on GitHub, Binder builds the
  repository from ``environment.yml`` and opens the notebook in JupyterLab;
* a code cell right after the title, tagged ``colab-setup``: in Colab (``google.colab`` is
  imported there) it clones the repository, whose ``data/`` and ``models/`` the notebooks read,
  installs the package from it without its extras (so Colab's own torch stays), and moves into
  ``notebooks/``; anywhere else it does nothing and prints nothing.

Running it again changes nothing unless the address changed. ``--check`` writes nothing and exits
1 when a notebook is not what this script would write (tests/test_notebook_links.py does the same).
After writing, re-run tools/refresh_outputs.py: the new cell shifts the execution counts.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- links -->"
SETUP_TAG = "colab-setup"
CLONE_DIR = "/content/minimamba"


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """``[project.urls] Repository`` of ``pyproject.toml``: ``https://github.com/<owner>/<name>``.

    Raises:
        ValueError: the key is missing, or not a GitHub repository address.
    """
    try:
        import tomllib  # Python 3.11+

        url = tomllib.loads(pyproject.read_text())["project"].get("urls", {}).get("Repository", "")
    except ModuleNotFoundError:  # Python 3.10: the one line, read plainly
        found = re.search(r'^\[project\.urls\][^\[]*?^Repository\s*=\s*"([^"]*)"', pyproject.read_text(), re.M | re.S)
        url = found.group(1) if found else ""
    url = url.rstrip("/")
    parts = url.removeprefix("https://github.com/").split("/")
    if (not url.startswith("https://github.com/") or len(parts) != 2 or not all(parts)
            or url.endswith(".git")):  # Colab and Binder take the bare owner/name
        raise ValueError(f"pyproject.toml [project.urls] Repository must be https://github.com/<owner>/<name> "
                         f"(no .git), got {url!r}")
    return url


def badges(url: str, name: str, branch: str = "main") -> str:
    """The badge line for notebook file ``name`` (``00_overview_and_setup.ipynb``)."""
    slug = url.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{slug}/blob/{branch}/notebooks/{name}"
    binder = f"https://mybinder.org/v2/gh/{slug}/{branch}?labpath=notebooks%2F{name}"
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Launch Binder](https://mybinder.org/badge_logo.svg)]({binder}) {MARK}")


def setup_source(url: str) -> str:
    """The source of the ``colab-setup`` cell for the repository at ``url``."""
    return f'''# In Colab: get the repository (the notebooks read its data/ and models/), install the package from it
# (its own needs only: Colab's torch stays), and work in its notebooks/ folder. Elsewhere: nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("{CLONE_DIR}"):
        subprocess.run(["git", "clone", "--depth", "1", "{url}", "{CLONE_DIR}"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "{CLONE_DIR}"], check=True)
    sys.path.insert(0, "{CLONE_DIR}")  # the running kernel does not see a fresh editable install
    os.chdir("{CLONE_DIR}/notebooks")'''


def linked(nb, url: str, name: str) -> bool:
    """Give ``nb`` its badge line and set-up cell for ``url``; True when something changed."""
    changed = False
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        raise ValueError(f"{name}: the first cell must be the markdown title")
    title = nb.cells[0]
    ours = lambda line: line.startswith("[![Open in Colab](") and line.endswith(MARK)  # noqa: E731
    kept = [line for line in title.source.split("\n") if not ours(line)]  # only the line this script wrote
    new = "\n".join([kept[0], badges(url, name)] + kept[1:])  # the badges right under the heading
    if title.source != new:
        title.source, changed = new, True
    tagged = [i for i, c in enumerate(nb.cells) if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    if len(tagged) > 1:
        raise ValueError(f"{name}: {len(tagged)} cells are tagged {SETUP_TAG!r} (cells {tagged}); keep one")
    if tagged != [1]:  # missing, or moved away from its place under the title
        cell = nb.cells.pop(tagged[0]) if tagged else nbformat.v4.new_code_cell("", metadata={"tags": [SETUP_TAG]})
        nb.cells.insert(1, cell)
        changed = True
    if nb.cells[1].source != setup_source(url):
        nb.cells[1].source, changed = setup_source(url), True
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a notebook would change")
    args = p.parse_args(argv)
    url = repository_url()
    stale = []
    for path in args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if linked(nb, url, path.name):
            stale.append(path)
            if not args.check:
                nbformat.write(nb, path)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
