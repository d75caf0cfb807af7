"""Real-browser widget check: JupyterLab + Debian's headless Chromium, driven by Python Playwright.

Used by ``tests/test_browser.py``; also runs on its own for a person who wants to look::

    python tests/browser_harness.py [notebooks/NN_name.ipynb ...] [--shots DIR]

What one notebook check does (:meth:`NotebookCheck.run`; :class:`BrowserSession` runs one
JupyterLab server and a few Chromiums that check several notebooks at once):

1. opens the notebook in a fresh page (``?reset``: no restored tabs), waits for its kernel
   through the server's sessions API, then for the toolbar's indicator;
2. *Edit -> Clear Outputs of All Cells*, then *Run -> Run All Cells* through the menus (cells
   tagged ``skip-execution``/``nbval-skip`` need a network or a GPU: they are left out, the rest
   run with *Run All Above Selected Cell* / *Run Selected Cells*), and waits until every code
   cell meant to run has a new execution count, or the run stopped on an error;
3. finds every widget generically: each ``.widget-interact`` container (what
   ``minimamba_core.viz.widget`` / ``ipywidgets.interact`` renders) in the visible notebook panel,
   its controls (sliders, dropdowns, selects, toggle/radio buttons, checkboxes, buttons, text
   boxes) and its figure (the ``<img>``/``<canvas>`` inside the container's output area);
   the widgets are named after the plot function of the matching ``widget(...)`` call in the
   cell's source;
4. for every control: moves it as a person would (mouse drag of a slider handle, choosing
   another option of a dropdown, a click on a button or check box), checks that the control's
   value changed and that the figure it controls changed (``<img>`` data URL compared before
   and after), saving screenshots of the container before and after;
5. checks that no error output appeared anywhere in the notebook (cells tagged
   ``raises-exception`` may show their deliberate error, nothing else may).

A widget whose callback does nothing (``MINIMAMBA_WIDGET_NOOP=<plot function>``, honoured by
``minimamba_core.viz.widget``) shows no figure and none appears after a move: it is reported dead.

Traps handled here (see ``../shared/recipes/browser_check.py`` for where they were found): root
needs ``--allow-root``; the news toast needs a user-settings override; the toolbar says "idle"
before the kernel exists; hidden tabs stay in the DOM (selectors are scoped to the visible panel);
``MPLBACKEND=agg`` from ``make test`` would reach the kernels and hide every inline figure (it is
removed from the server's environment); autosave is off so the notebooks on disk never change.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
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


# ------------------------------------------------------------------------------ processes
def process_tree(pid: int) -> list:
    """``pid`` and all its descendants (psutil processes; empty if gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def processes_mentioning(marker: str) -> list[str]:
    """``"pid cmdline"`` of every live process whose command line contains ``marker``."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and p.info["pid"] != os.getpid():
            found.append(f"{p.info['pid']} {cmd[:160]}")
    return found


def processes_by_marker(marker: str) -> list:
    """psutil processes (still alive) whose command line contains ``marker``."""
    import psutil

    out = []
    for line in processes_mentioning(marker):
        try:
            out.append(psutil.Process(int(line.split()[0])))
        except psutil.NoSuchProcess:
            pass
    return out


def kill_all(procs: list, timeout: float = 10) -> None:
    """SIGTERM, wait, then SIGKILL whatever of ``procs`` is still alive."""
    import psutil

    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


# ------------------------------------------------------------------------------ server
def _resolve_prctl():
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _resolve_prctl()     # resolved here: the forked child only calls it, imports nothing


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM it when the thread that started it ends,
    even by SIGKILL, so a killed test run leaves no server behind (the server then shuts its
    kernels down). Start servers from the main thread. Elsewhere a no-op."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)          # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """One ``jupyter lab`` on 127.0.0.1, a free port, a random token, clean settings in ``scratch``.

    ``env`` entries are added to (``None``: removed from) the server's environment, which the
    kernels inherit. :meth:`stop` is idempotent and also ends the kernels, even orphaned ones
    (found by the scratch path in their command line).
    """

    def __init__(self, root: Path, scratch: Path, env: dict[str, str | None] | None = None):
        self.root, self.scratch = Path(root), Path(scratch)
        self.port, self.token = free_port(), secrets.token_urlsafe(24)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.scratch / "lab.log"
        self._env = env or {}

    def start(self) -> "LabServer":
        self.scratch.mkdir(parents=True, exist_ok=True)
        cfg = self.scratch / "jupyter_config"
        cfg.mkdir(exist_ok=True)
        (cfg / "jupyter_server_config.py").write_text(
            "c.LabApp.news_url = None\n"
            "c.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"
            "c.LabApp.extension_manager = 'readonly'\n"
            # JupyterLab makes a checkpoint when it opens a file: keep it out of notebooks/
            f"c.FileCheckpoints.checkpoint_dir = {str(self.scratch / 'checkpoints')!r}\n")
        settings = self.scratch / "lab_settings" / "@jupyterlab"
        overrides = {
            # no news toast, no update check (outside traffic); the config alone is not enough
            "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
            # every cell attached to the DOM, so selectors always find it
            "notebook-extension/tracker": {"windowingMode": "none"},
            # never write the notebooks under test back to disk
            "docmanager-extension/plugin": {"autosave": False},
        }
        for name, value in overrides.items():
            f = settings / f"{name}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(value))
        env = dict(os.environ,
                   JUPYTER_CONFIG_DIR=str(cfg),
                   JUPYTERLAB_SETTINGS_DIR=str(self.scratch / "lab_settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(self.scratch / "lab_workspaces"),
                   JUPYTER_RUNTIME_DIR=str(self.scratch / "runtime"),
                   IPYTHONDIR=str(self.scratch / "ipython"),
                   MINIMAMBA_QUICK="1")
        env.pop("MPLBACKEND", None)    # `make test` sets agg: the kernels would draw nothing inline
        # One torch thread per kernel: the workers run kernels side by side on a 2-core box, and
        # oversubscribed intra-op threads make the tiny models' small ops ~10x slower (measured:
        # 50 decoding steps of the shipped Shakespeare model, 0.17 s CPU with 1 thread against
        # 2.6 s with 2 on a busy 2-core machine).
        env.setdefault("OMP_NUM_THREADS", "1")
        env.pop(NOOP_ENV, None)
        for k, v in self._env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}"]
        if os.geteuid() == 0:          # CI runs as root: JupyterLab refuses without this
            cmd.append("--allow-root")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.time() + T_SERVER
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/status?token={self.token}",
                                            timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"jupyter lab did not answer within {T_SERVER} s:\n{self.log_tail()}")

    def api(self, path: str):
        with urllib.request.urlopen(f"{self.base}/api/{path}?token={self.token}", timeout=10) as r:
            return json.load(r)

    def kernel_state(self, notebook: str) -> str | None:
        """``execution_state`` of the kernel of the session whose path is ``notebook``."""
        for sess in self.api("sessions"):
            if sess["path"] == notebook:
                return sess["kernel"]["execution_state"]
        return None

    def log_tail(self, n: int = 30) -> str:
        try:
            return "".join(self.log_path.read_text().splitlines(True)[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the server's process group (it shuts its kernels down), then make sure."""
        if self.proc is None:
            return
        tree = process_tree(self.proc.pid)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # kernels run in their own sessions: end any left (descendants seen, or by command line)
        left = [p for p in tree if p.is_running()] + processes_by_marker(str(self.scratch))
        if left:
            kill_all(left)
        self.proc = None


# ------------------------------------------------------------------------------ reports
@dataclass
class ControlReport:
    kind: str                 # slider, dropdown, checkbox, ...
    label: str                # the control's description
    action: str               # what was done to it
    value_before: str
    value_after: str
    figure_changed: bool
    seconds: float
    problem: str = ""


@dataclass
class WidgetReport:
    notebook: str
    cell: int                 # index of the cell in the notebook
    name: str                 # plot function of the widget(...) call
    rendered: bool            # controls and a figure were shown after Run All
    controls: list[ControlReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    shots: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(not c.problem for c in self.controls)

    @property
    def id(self) -> str:
        return f"{self.notebook}:cell{self.cell}:{self.name}"


@dataclass
class NotebookReport:
    notebook: str
    run: str = ""                                          # how the cells were run
    widgets: list[WidgetReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)     # not tied to one widget
    stderr: list[str] = field(default_factory=list)       # warnings seen (not failures)
    timings: dict[str, float] = field(default_factory=dict)
    shots: list[str] = field(default_factory=list)

    @property
    def dead(self) -> list[str]:
        """Ids of the widgets that failed any check."""
        return [w.id for w in self.widgets if not w.ok]

    @property
    def ok(self) -> bool:
        return not self.problems and not self.dead

    def describe(self) -> str:
        lines = [f"{self.notebook}: {len(self.widgets)} widget(s), {self.run}; "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        for w in self.widgets:
            lines.append(f"  {'ok  ' if w.ok else 'DEAD'} {w.id}"
                         + "".join(f"\n      PROBLEM: {p}" for p in w.problems))
            for c in w.controls:
                lines.append(f"      {c.kind} {c.label!r}: {c.action}; value {c.value_before!r} -> "
                             f"{c.value_after!r}; figure changed: {c.figure_changed} "
                             f"({c.seconds:.1f} s)" + (f"  PROBLEM: {c.problem}" if c.problem else ""))
        lines += [f"  stderr (not a failure): {s[:200]!r}" for s in self.stderr]
        return "\n".join(lines)

    def to_json(self) -> dict:
        d = asdict(self)
        d["dead"] = self.dead
        return d


# ------------------------------------------------------------------------------ page scripts
# Scan the visible notebook panel; returns {cells: [{index, empty, prompt, errors, stderr,
# interacts: [{controls: [{kind, label}]}]}], stray: n}. Tags the DOM with data-mm-* ids.
_SCAN_JS = r"""
([controlSel, errorRe]) => {
  const nb = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => p.offsetParent !== null);
  if (!nb) return null;
  const kindOf = (el) => {
    const c = el.classList;
    if (c.contains('widget-slider')) return 'slider';
    if (c.contains('widget-dropdown')) return 'dropdown';
    if (c.contains('widget-select')) return 'select';
    if (c.contains('widget-toggle-buttons')) return 'toggle-buttons';
    if (c.contains('widget-radio')) return 'radio';
    if (c.contains('widget-checkbox')) return 'checkbox';
    if (c.contains('widget-toggle-button')) return 'toggle-button';
    if (c.contains('widget-button')) return 'button';
    if (c.contains('widget-textarea')) return 'textarea';
    if (c.contains('widget-text')) return 'text';
    if (c.contains('widget-play')) return 'play';
    return 'unknown';
  };
  const clean = (t) => (t || '').replace(/\u200b/g, '').trim();
  const labelOf = (el) => {
    const l = [...el.querySelectorAll('.widget-label, .widget-label-basic, label')]
      .map(x => clean(x.textContent)).find(t => t);
    return (l || clean(el.textContent)).slice(0, 60);
  };
  const outText = (o) => (o.querySelector('.jp-RenderedText, pre') || o).textContent || '';
  const cells = [...nb.querySelectorAll('.jp-Cell')].map((cell, index) => {
    const isCode = cell.classList.contains('jp-CodeCell');
    const src = isCode ? (cell.querySelector('.cm-content')?.textContent || '') : '';
    const prompt = isCode ? (cell.querySelector('.jp-InputPrompt')?.textContent || '').trim() : '';
    const errors = [], stderr = [];
    for (const o of cell.querySelectorAll('.jp-OutputArea-output')) {
      if (o.getAttribute('data-mime-type') !== 'application/vnd.jupyter.stderr') continue;
      const t = outText(o);
      // an error output (traceback) or a warning written to stderr
      if (new RegExp(errorRe, 'm').test(t)) errors.push(t.slice(0, 2000));
      else stderr.push(t.slice(0, 500));
    }
    const interacts = [...cell.querySelectorAll('.widget-interact')].map((box, k) => {
      box.setAttribute('data-mm-widget', `${index}-${k}`);
      const controls = [...box.querySelectorAll(controlSel)]
        .filter(el => !el.parentElement.closest('.widget-toggle-buttons, .widget-radio'))
        .map((el, j) => {
          el.setAttribute('data-mm-control', `${index}-${k}-${j}`);
          return {kind: kindOf(el), label: labelOf(el)};
        });
      return {controls};
    });
    return {index, isCode, empty: src.trim() === '', prompt, errors, stderr, interacts};
  });
  const stray = [...nb.querySelectorAll(controlSel)].filter(el => !el.closest('.widget-interact')).length;
  return {cells, stray};
}
"""

# Figure signature of an interact container: data URLs of its output's images/canvases + text.
_FIGURE_JS = r"""
(box) => {
  const outs = [...box.querySelectorAll('.widget-output')];
  const imgs = [], text = [];
  for (const o of outs) {
    for (const i of o.querySelectorAll('img')) imgs.push(i.src || '');
    for (const c of o.querySelectorAll('canvas')) { try { imgs.push(c.toDataURL()); } catch (e) { imgs.push('canvas'); } }
    text.push(o.innerText || '');
  }
  return {imgs, text: text.join('\n')};
}
"""

# The value a person reads off a control.
_VALUE_JS = r"""
(el) => {
  const c = el.classList;
  if (c.contains('widget-slider')) {
    const r = el.querySelector('.widget-readout');
    if (r && r.textContent.trim()) return r.textContent.trim();
    return [...el.querySelectorAll('.noUi-handle')].map(h => h.getAttribute('aria-valuenow')).join(',');
  }
  const sel = el.querySelector('select');
  if (sel) return [...sel.selectedOptions].map(o => o.textContent).join(',');
  const checked = el.querySelector('input[type=checkbox], input[type=radio]:checked');
  if (c.contains('widget-checkbox') && checked) return String(checked.checked);
  if (c.contains('widget-radio') && checked) return checked.parentElement.textContent.trim();
  const active = el.querySelectorAll('.mod-active');
  if (c.contains('widget-toggle-buttons')) return [...active].map(b => b.textContent.trim()).join(',');
  if (c.contains('widget-toggle-button')) return String(c.contains('mod-active'));
  const inp = el.querySelector('input, textarea');
  if (inp) return inp.value;
  return el.textContent.trim();
}
"""


def _digest(sig: dict | None) -> str:
    if not sig:
        return ""
    return hashlib.sha1(("\0".join(sig["imgs"]) + "\0" + sig["text"]).encode()).hexdigest()[:12]


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:40] or "x"


# ------------------------------------------------------------------------------ one notebook
class NotebookCheck:
    """The check of one notebook (module doc, steps 1-5) in browser context ``ctx`` against
    server ``lab``; screenshots go to ``shots``."""

    def __init__(self, ctx, lab: LabServer, shots: Path):
        self.ctx, self.lab, self.shots = ctx, lab, Path(shots)

    def _panel(self, page):
        return page.locator(".jp-NotebookPanel:visible")

    def _shot(self, target, name: str, report) -> None:
        path = self.shots / f"{name}.png"
        try:
            target.screenshot(path=str(path))
            report.shots.append(str(path))
        except Exception as exc:       # a picture is a help, never the verdict
            print(f"screenshot {name} failed: {exc}")

    def _wait_kernel(self, page, rel: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while self.lab.kernel_state(rel) != "idle":
            if time.time() > deadline:
                raise TimeoutError(f"kernel of {rel} not idle after {timeout:.0f} s")
            time.sleep(POLL)
        self._panel(page).locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
            timeout=timeout * 1000)

    def _menu(self, page, menu: str, item: str | re.Pattern, focus: bool = True) -> None:
        if focus:
            self._panel(page).locator(".jp-Notebook").click(position={"x": 5, "y": 5})
        page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
        # exact: 'Restart Kernel and Run All Cells…' also contains 'Run All Cells'
        page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).click()

    def _scan(self, page) -> dict:
        return page.evaluate(_SCAN_JS, [CONTROL_SELECTOR, ERROR_RE.pattern])

    def _wait_run_all(self, page, rel: str, info: NotebookInfo, report: NotebookReport) -> dict:
        """Wait until every code cell meant to run has a new execution count, or the run has
        stopped: an error output (outside ``raises-exception`` cells) aborts the kernel's queue,
        and the aborted cells keep their '[*]'. Returns the last scan."""
        deadline = time.time() + T_RUN_ALL
        changed_at, last_prompts = time.time(), None
        while True:
            scan = self._scan(page)
            code = [c for c in scan["cells"] if c["isCode"] and not c["empty"]
                    and c["index"] not in info.skip]
            pending = [c["index"] for c in code if not re.fullmatch(r"\[\d+\]:", c["prompt"])]
            if not pending:
                return scan
            now = time.time()
            prompts = [c["prompt"] for c in code]
            if prompts != last_prompts:
                changed_at, last_prompts = now, prompts
            failed = any(c["errors"] for c in scan["cells"] if c["index"] not in info.raises)
            if failed and now - changed_at > STALL:
                report.problems.append(f"the run stopped on an error: cells {pending} never ran")
                return scan
            if now > deadline:
                report.problems.append(f"the run did not finish within {T_RUN_ALL:.0f} s: "
                                       f"cells {pending} still queued or running")
                return scan
            time.sleep(POLL * 2)

    def _run_all(self, page, info: NotebookInfo) -> str:
        """Run every cell through the Run menu, except cells tagged skip-execution/nbval-skip
        (a person skips those too: they need a network or a GPU). Returns what was done."""
        if not info.skip:
            self._menu(page, "Run", "Run All Cells")
            return "Run All Cells"
        cells = self._panel(page).locator(".jp-Cell")
        n = cells.count()
        segments, start = [], 0          # maximal runs of cells between skipped ones
        for i in sorted(info.skip) + [n]:
            if i > start:
                segments.append((start, i - 1))
            start = i + 1
        done = []
        for a, b in segments:
            if a == 0:                   # the usual case: everything above the first skipped cell
                if b + 1 < n:
                    cells.nth(b + 1).locator(".jp-InputPrompt").click()
                    self._menu(page, "Run", "Run All Above Selected Cell", focus=False)
                else:
                    self._menu(page, "Run", "Run All Cells")
            else:                        # a later stretch: select it, run the selected cells
                cells.nth(a).locator(".jp-InputPrompt").click()
                if b > a:
                    cells.nth(b).locator(".jp-InputPrompt").click(modifiers=["Shift"])
                self._menu(page, "Run", re.compile(r"^Run Selected Cells? and Do not Advance$"),
                           focus=False)
            done.append(f"cells {a}-{b}")
        return "Run menu on " + ", ".join(done) + f" (skipped tagged cells {sorted(info.skip)})"

    def _errors(self, scan: dict, info: NotebookInfo) -> tuple[list[str], list[str]]:
        errors, stderr = [], []
        for c in scan["cells"]:
            if c["errors"] and c["index"] not in info.raises:
                for e in c["errors"]:     # the exception line, then the traceback's last lines
                    lines = [x for x in e.strip().splitlines() if x.strip()]
                    errors.append(f"cell {c['index']}: {lines[-1] if lines else ''}\n    "
                                  + "\n    ".join(lines[-8:-1]))
            stderr += [f"cell {c['index']}: {s.strip()}" for s in c["stderr"]]
        return errors, stderr

    def run(self, path: Path) -> NotebookReport:
        """Open ``path`` (inside the server's root), run it, move every control; see module doc."""
        path = Path(path).resolve()
        rel = path.relative_to(self.lab.root.resolve()).as_posix()
        info = scan_notebook(path)
        report = NotebookReport(rel)
        stem = _safe(path.stem)
        t0 = time.perf_counter()
        page = self.ctx.new_page()
        try:
            self._check(page, path, rel, info, report, stem)
        except Exception as exc:
            report.problems.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            self._shot(page, f"{stem}__failure", report)
        finally:
            page.close()         # no beforeunload prompt: the page just goes
            self._shutdown_kernel(rel, report)
            report.timings["total"] = time.perf_counter() - t0
        return report

    def _shutdown_kernel(self, rel: str, report: NotebookReport) -> None:
        """End the notebook's session and kernel (one server serves every notebook), noting
        the CPU seconds the kernel used (on a shared machine, a better guide than wall time)."""
        import psutil

        try:
            for sess in self.lab.api("sessions"):
                if sess["path"] == rel:
                    for p in processes_by_marker(f"kernel-{sess['kernel']['id']}.json"):
                        try:
                            cpu = p.cpu_times()
                            report.timings["kernel cpu"] = cpu.user + cpu.system
                        except psutil.NoSuchProcess:
                            pass
                    req = urllib.request.Request(
                        f"{self.lab.base}/api/sessions/{sess['id']}?token={self.lab.token}",
                        method="DELETE")
                    urllib.request.urlopen(req, timeout=20).close()
        except OSError as exc:
            print(f"could not shut the kernel of {rel} down: {exc}")

    def _check(self, page, path: Path, rel: str, info: NotebookInfo, report: NotebookReport,
               stem: str) -> None:
        t0 = time.perf_counter()
        page.goto(f"{self.lab.base}/lab/tree/{rel}?reset&token={self.lab.token}")
        panel = self._panel(page)
        panel.locator(".jp-Cell").first.wait_for(timeout=T_OPEN * 1000)
        self._wait_kernel(page, rel, T_OPEN)
        report.timings["open"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        # stored outputs and execution counts must not count as this run's
        self._menu(page, "Edit", "Clear Outputs of All Cells")
        page.wait_for_function(
            """() => { const nb = [...document.querySelectorAll('.jp-NotebookPanel')]
                         .find(p => p.offsetParent !== null);
                       return nb && nb.querySelectorAll('.jp-OutputArea-output').length === 0
                         && [...nb.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                              .every(p => !/\\d/.test(p.textContent)); }""",
            timeout=15_000)
        report.run = self._run_all(page, info)
        # started: a cell queued/running, or (a tiny notebook) one already has a new count
        page.wait_for_function(
            """() => { const nb = [...document.querySelectorAll('.jp-NotebookPanel')]
                         .find(p => p.offsetParent !== null);
                       return [...nb.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                              .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent)); }""",
            timeout=30_000)
        scan = self._wait_run_all(page, rel, info, report)
        # widget views attach after their cell finished: wait for the expected containers
        # (and their first figures: a few seconds at most, else the widget is dead)
        deadline, fig_deadline = time.time() + (0 if report.problems else T_WIDGETS), None
        while True:
            counts = {c["index"]: len(c["interacts"]) for c in scan["cells"]}
            missing = {i: len(n) - counts.get(i, 0) for i, n in info.calls.items()
                       if counts.get(i, 0) < len(n)}
            if not missing:
                fig_deadline = fig_deadline or time.time() + T_FIRST_FIGURE
                figures = panel.locator(".widget-interact").evaluate_all(
                    f"bs => bs.map(b => ({_FIGURE_JS})(b).imgs.length)")
                if all(figures) or time.time() > fig_deadline:
                    break
            elif time.time() > deadline:
                break
            time.sleep(POLL * 2)
            scan = self._scan(page)
        report.timings["run all"] = time.perf_counter() - t0
        for i, n in missing.items():
            report.problems.append(f"cell {i}: {n} of {len(info.calls[i])} widget(s) "
                                   f"({', '.join(info.calls[i])}) never rendered")
        if scan["stray"]:
            report.problems.append(f"{scan['stray']} control(s) outside any interact container: "
                                   "no figure to map them to (extend tests/browser_harness.py)")
        errors, report.stderr = self._errors(scan, info)
        report.problems += [f"error output after Run All: {e}" for e in errors]
        self._shot(page, f"{stem}__1_after_run_all", report)

        t0 = time.perf_counter()
        for cell in scan["cells"]:
            names = info.calls.get(cell["index"], [])
            for k, box_info in enumerate(cell["interacts"]):
                name = names[k] if k < len(names) else f"interact{k}"
                w = WidgetReport(rel, cell["index"], name, rendered=False)
                report.widgets.append(w)
                self._check_widget(page, rel, cell["index"], k, box_info, w, stem)
        report.timings["widgets"] = time.perf_counter() - t0

        scan = self._scan(page)
        errors, report.stderr = self._errors(scan, info)
        report.problems += [f"error output after moving the widgets: {e}" for e in errors
                            if f"error output after Run All: {e}" not in report.problems]
        self._shot(page, f"{stem}__2_after_widgets", report)

    def _figure(self, box) -> dict:
        return box.evaluate(_FIGURE_JS)

    def _wait_redraw(self, box, rel: str, before: str, had_figure: bool) -> tuple[dict, bool]:
        """Poll until the container shows a figure other than ``before`` that then stays put
        for SETTLE s; or an error shows in it; or T_REDRAW passes. A widget that had no figure
        to begin with gets IDLE_GRACE s of kernel idleness, not T_REDRAW (its callback is dead).

        The server's ``execution_state`` is not trusted for a live widget: with ipykernel 7 the
        widget's own comm traffic can report 'idle' while a callback still runs."""
        start, idle_since = time.time(), None
        while True:
            sig = self._figure(box)
            now = time.time()
            if ERROR_RE.search(sig["text"]):
                return sig, False                      # the callback raised
            if sig["imgs"] and _digest(sig) != before:
                last, stable_since = _digest(sig), now
                while time.time() - stable_since < SETTLE and time.time() - start < T_REDRAW:
                    time.sleep(POLL)
                    d = _digest(self._figure(box))
                    if d != last:
                        last, stable_since = d, time.time()
                return self._figure(box), True
            if not had_figure:
                if self.lab.kernel_state(rel) == "idle":
                    idle_since = idle_since or now
                    if now - idle_since > IDLE_GRACE and now - start > 1.0:
                        return sig, False
                else:
                    idle_since = None
            if now - start > T_REDRAW:
                return sig, False
            time.sleep(POLL)

    def _check_widget(self, page, rel: str, cell: int, k: int, box_info: dict, w: WidgetReport,
                      stem: str) -> None:
        box = self._panel(page).locator(f"[data-mm-widget='{cell}-{k}']")
        tag = f"{stem}__cell{cell}_{_safe(w.name)}"
        box.scroll_into_view_if_needed()
        sig = self._figure(box)
        w.rendered = bool(box_info["controls"]) and bool(sig["imgs"])
        if not box_info["controls"]:
            w.problems.append("no controls rendered")
        if not sig["imgs"]:
            w.problems.append("no figure rendered after Run All")
        self._shot(box, f"{tag}__0_before", w)
        for j, ctl in enumerate(box_info["controls"]):
            el = box.locator(f"[data-mm-control='{cell}-{k}-{j}']")
            before_sig = self._figure(box)
            before = _digest(before_sig)
            value_before = el.evaluate(_VALUE_JS)
            t0 = time.perf_counter()
            try:
                action = self._move(page, el, ctl["kind"])
            except Exception as exc:
                w.controls.append(ControlReport(ctl["kind"], ctl["label"], "could not move",
                                                value_before, value_before, False,
                                                time.perf_counter() - t0,
                                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
                continue
            sig, changed = self._wait_redraw(box, rel, before, bool(before_sig["imgs"]))
            value_after = el.evaluate(_VALUE_JS)
            problem = ""
            if value_after == value_before and ctl["kind"] not in ("button", "play"):
                problem = "the control's value did not change"
            elif not sig["imgs"]:
                problem = "no figure after the move"
            elif not changed:
                problem = "the figure did not change"
            w.controls.append(ControlReport(ctl["kind"], ctl["label"], action, value_before,
                                            value_after, changed, time.perf_counter() - t0, problem))
            self._shot(box, f"{tag}__{j + 1}_after_{_safe(ctl['label'])}", w)

    def _move(self, page, el, kind: str) -> str:
        """Move one control the way a person would; returns what was done."""
        el.scroll_into_view_if_needed()
        if kind == "slider":
            handle = el.locator(".noUi-handle").first
            track = el.locator(".noUi-base, .noUi-target").first.bounding_box()
            hb = handle.bounding_box()
            x, y = hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2
            frac = (x - track["x"]) / max(track["width"], 1)
            target = 0.85 if frac < 0.5 else 0.15          # far from where it is: always a new step
            x1 = track["x"] + target * track["width"]
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x1, y, steps=1)     # one new value: one callback
            page.mouse.up()
            return f"mouse drag of the handle to {target:.0%} of the track"
        if kind in ("dropdown", "select"):
            sel = el.locator("select")
            options = sel.locator("option").all_text_contents()
            current = sel.evaluate("s => s.selectedIndex")
            pick = (current + 1) % len(options)
            # headless Chromium draws a native <select> popup outside the DOM: choosing an
            # option is Playwright's select_option (a real user-initiated change event)
            sel.select_option(index=pick)
            return f"chose option {options[pick]!r}"
        if kind == "toggle-buttons":
            btn = el.locator(".widget-toggle-button:not(.mod-active)").first
            text = btn.inner_text()
            btn.click()
            return f"clicked {text!r}"
        if kind == "radio":
            opt = el.locator("label:has(input:not(:checked))").first
            text = opt.inner_text()
            opt.click()
            return f"clicked {text.strip()!r}"
        if kind == "checkbox":
            el.locator("input[type=checkbox]").click()
            return "clicked the check box"
        if kind in ("button", "toggle-button"):
            (el if el.evaluate("e => e.tagName") == "BUTTON" else el.locator("button").first).click()
            return "clicked"
        if kind in ("text", "textarea"):
            box = el.locator("input, textarea").first
            if box.get_attribute("type") == "number":
                box.click()
                page.keyboard.press("ArrowUp")
                page.keyboard.press("Enter")
                return "ArrowUp + Enter in the number box"
            box.click()
            page.keyboard.press("End")
            page.keyboard.type("x")
            page.keyboard.press("Enter")
            return "typed 'x' + Enter"
        raise ValueError(f"no way to move a {kind!r} control yet (extend BrowserSession._move)")



# ------------------------------------------------------------------------------ session
def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


class BrowserSession:
    """One JupyterLab server and ``workers`` headless Chromiums (one Playwright per worker
    thread: its API is not thread-safe), started together, stopped together.

    ``with BrowserSession(chromium, shots) as s: report = s.check_notebook(path)``;
    :meth:`submit` queues a notebook and returns a future, so ``workers`` notebooks are
    checked at once (on 2 cores, one notebook's kernel computes while the other's page is
    driven). :meth:`close` is idempotent: it stops the workers and their browsers, then the
    servers, then kills anything of theirs still running (found by the scratch folder in their
    command lines).
    """

    def __init__(self, chromium: str, shots: Path, root: Path = NOTEBOOK_DIR,
                 env: dict[str, str | None] | None = None, scratch: Path | None = None,
                 workers: int = 1):
        self.chromium, self.shots, self.root = chromium, Path(shots), Path(root)
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="minimamba-browser-"))
        self.lab = LabServer(self.root, self.scratch / "lab", env)
        self.labs = [self.lab]
        self.n_workers = max(1, int(workers))
        self._jobs: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._ready: list[concurrent.futures.Future] = []
        self.timings: dict[str, float] = {}
        self.reports: list[NotebookReport] = []
        self._old_sigterm = None

    # -- lifecycle
    def __enter__(self) -> "BrowserSession":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "BrowserSession":
        self.shots.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)                  # a last net; close() is idempotent
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (e.g. from `timeout`) would end Python without any cleanup: turn it into
            # KeyboardInterrupt, so pytest tears its fixtures down and close() runs
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        t0 = time.perf_counter()
        self.lab.start()
        self.timings["server start"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(self.n_workers):
            ready: concurrent.futures.Future = concurrent.futures.Future()
            t = threading.Thread(target=self._worker, args=(i, ready), daemon=True,
                                 name=f"browser-worker-{i}")
            t.start()
            self._threads.append(t)
            self._ready.append(ready)
        for ready in self._ready:
            ready.result(timeout=T_SERVER)           # re-raises a launch failure here
        self.timings["browser launch"] = time.perf_counter() - t0
        return self

    def _worker(self, i: int, ready: concurrent.futures.Future) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    str(self.scratch / f"chromium-profile-{i}"), executable_path=self.chromium,
                    headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
                ready.set_result(True)
                try:
                    while True:
                        job = self._jobs.get()
                        if job is None:
                            break
                        future, path, lab, shots = job
                        if future.set_running_or_notify_cancel():
                            try:
                                shots.mkdir(parents=True, exist_ok=True)
                                future.set_result(NotebookCheck(ctx, lab, shots).run(path))
                            except BaseException as exc:
                                future.set_exception(exc)
                finally:
                    ctx.close()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                print(f"browser worker {i} stopped: {type(exc).__name__}: {exc}")

    def start_lab(self, env: dict[str, str | None], name: str) -> LabServer:
        """Another server (e.g. with a different environment for its kernels); stopped by
        :meth:`close` at the latest."""
        lab = LabServer(self.root, self.scratch / name, env).start()
        self.labs.append(lab)
        return lab

    def submit(self, path: Path, lab: LabServer | None = None,
               shots: Path | None = None) -> concurrent.futures.Future:
        """Queue the check of one notebook (on ``lab``, default: the session's server; pictures
        to ``shots``, default: the session's folder); the future's result is its
        :class:`NotebookReport`."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        future.add_done_callback(
            lambda f: f.cancelled() or f.exception() or self.reports.append(f.result()))
        self._jobs.put((future, Path(path), lab or self.lab, Path(shots or self.shots)))
        return future

    def check_notebook(self, path: Path, lab: LabServer | None = None) -> NotebookReport:
        """Check one notebook and wait for its report."""
        return self.submit(path, lab).result()

    def close(self) -> None:
        while True:                                  # drop jobs not started
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=60)
        self._threads = []
        left = processes_by_marker(str(self.scratch / "chromium-profile"))
        if left:
            kill_all(left)
        for lab in self.labs:
            lab.stop()
            if lab.log_path.is_file():                # keep the server logs with the pictures
                self.shots.mkdir(parents=True, exist_ok=True)
                shutil.copy(lab.log_path, self.shots / f"{lab.scratch.name}.log")
        if not self.leftovers():                      # profiles, settings, kernel files: tens of MB
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    def leftovers(self) -> list[str]:
        """Processes still alive that this session started (should be none after close)."""
        return processes_mentioning(str(self.scratch))


# ------------------------------------------------------------------------------ docs
def save_doc_shot(src: Path, dest: Path, max_bytes: int = 200_000) -> Path:
    """Copy a screenshot for docs/, quantized to a palette so it stays under ``max_bytes``."""
    from PIL import Image

    dest.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(src).convert("RGB")
    for colors in (256, 128, 64):
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
        if dest.stat().st_size <= max_bytes:
            break
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Move every widget of the notebooks in a real browser.")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: every widget notebook")
    ap.add_argument("--shots", type=Path, default=Path(tempfile.gettempdir()) / "minimamba-browser")
    ap.add_argument("--workers", type=int, default=int(os.environ.get(WORKERS_ENV, 2)))
    ap.add_argument("--json", type=Path, help="write the reports here")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if not chromium:
        print(f"no Chromium: install Debian's `chromium` or set {CHROMIUM_ENV}")
        return 2
    notebooks = args.notebooks or widget_notebooks()
    t0 = time.perf_counter()
    with BrowserSession(chromium, args.shots, workers=args.workers) as s:
        futures = [s.submit(nb) for nb in notebooks]
        reports = [f.result() for f in futures]
        for r in reports:
            print(r.describe(), flush=True)
        timings = s.timings
    print(f"total {time.perf_counter() - t0:.1f} s ({timings}); screenshots in {args.shots}")
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in reports], indent=1))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
