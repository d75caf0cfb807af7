"""The real-browser widget check, part 1: its settings, and which notebooks have widgets.

See ``browser_harness.py`` for what the check does; this module reads notebooks only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"

#: Environment variable naming the Chromium binary; otherwise ``chromium`` /
#: ``chromium-browser`` on PATH (Debian's package). Never Playwright's own download.
CHROMIUM_ENV = "MINIMAMBA_CHROMIUM"
#: How many notebooks are checked at once (each in its own Chromium, one server for all).
WORKERS_ENV = "MINIMAMBA_BROWSER_WORKERS"
#: The switch ``minimamba_core.viz.widget`` honours (a plot function's name -> no-op callback).
NOOP_ENV = "MINIMAMBA_WIDGET_NOOP"

# Headless, root-safe, and no background traffic (CI has no outside network).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

# Waits, in seconds. They bound failures only: every wait polls and returns as soon as it can.
T_SERVER = 60          # JupyterLab answers /api/status
T_OPEN = 90            # notebook shown and its kernel idle
T_RUN_ALL = float(os.environ.get("MINIMAMBA_BROWSER_RUN_TIMEOUT", 300))   # Run All finishes
T_WIDGETS = 20         # interact containers attached after the cells finished
T_FIRST_FIGURE = 5     # ... and their first figures shown
T_REDRAW = 120         # a moved control's figure redrawn (notebook 10's takes ~45 s here)
IDLE_GRACE = 1.5       # kernel idle this long and no new figure: the widget is dead
STALL = 3.0            # an error shown and no prompt changing this long: the run stopped
SETTLE = 0.75          # a new figure must stay the same this long (a late redraw may follow)

# An error output (a traceback), as opposed to a warning on stderr.
ERROR_RE = re.compile(r"Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b", re.M)
POLL = 0.25

# ipywidgets 8 control roots (the ``widget-*`` classes are what its views put on the DOM).
CONTROL_SELECTOR = ", ".join([
    ".widget-slider", ".widget-dropdown", ".widget-select", ".widget-toggle-buttons",
    ".widget-radio", ".widget-checkbox", ".widget-toggle-button",
    ".widget-button", ".widget-text", ".widget-textarea", ".widget-play",
])

# Cells never run in CI (they need a network or a GPU): the browser skips them as well.
SKIP_TAGS = {"skip-execution", "nbval-skip"}

# `widget(plot_fn, ...)` (minimamba_core.viz) or `interact(fn, ...)` in a cell's source.
_CALL = re.compile(r"(?<!def )\b(?:widget|interact(?:_manual)?)\(\s*([A-Za-z_][\w.]*)")
_MENTIONS_WIDGETS = re.compile(r"\bwidget\(|\binteract|ipywidgets")


# ------------------------------------------------------------------------------ discovery
@dataclass
class NotebookInfo:
    """What the notebook file says: its widget calls per cell and its deliberate errors."""

    path: Path
    calls: dict[int, list[str]]       # cell index -> plot functions of its widget(...) calls
    raises: set[int]                  # indices of cells tagged raises-exception
    skip: set[int] = field(default_factory=set)   # tagged skip-execution / nbval-skip

    @property
    def n_widgets(self) -> int:
        return sum(len(v) for v in self.calls.values())


def _code_without_comments(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))


def scan_notebook(path: Path) -> NotebookInfo:
    """Parse ``path`` (nbformat 4 JSON) for ``widget(...)``/``interact(...)`` calls."""
    nb = json.loads(Path(path).read_text())
    calls: dict[int, list[str]] = {}
    raises: set[int] = set()
    skip: set[int] = set()
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = _code_without_comments("".join(cell["source"]))
        names = [m.group(1).rsplit(".", 1)[-1] for m in _CALL.finditer(src)]
        if names:
            calls[i] = names
        tags = cell.get("metadata", {}).get("tags", [])
        if "raises-exception" in tags:
            raises.add(i)
        if SKIP_TAGS & set(tags):
            skip.add(i)
    return NotebookInfo(Path(path), calls, raises, skip)


def widget_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Every ``*.ipynb`` in ``folder`` whose code mentions widgets, sorted by name."""
    out = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        nb = json.loads(path.read_text())
        code = "\n".join(_code_without_comments("".join(c["source"]))
                         for c in nb["cells"] if c["cell_type"] == "code")
        if _MENTIONS_WIDGETS.search(code):
            out.append(path)
    return out


def find_chromium() -> str | None:
    """``$MINIMAMBA_CHROMIUM`` if set (must exist), else Debian's ``chromium`` on PATH."""
    env = os.environ.get(CHROMIUM_ENV)
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return shutil.which("chromium") or shutil.which("chromium-browser")
