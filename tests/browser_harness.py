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

The check is split by concept: ``browser_notebooks.py`` (settings, which notebooks have
widgets), ``browser_server.py`` (processes, the JupyterLab server), ``browser_reports.py`` (what
is reported, the page scripts), ``browser_check.py`` (one notebook); this file runs a session.

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
import json
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from browser_check import NotebookCheck
from browser_notebooks import (CHROMIUM_ARGS, CHROMIUM_ENV, NOOP_ENV, NOTEBOOK_DIR, T_SERVER, WORKERS_ENV,  # noqa: F401
                               find_chromium, scan_notebook, widget_notebooks)
from browser_reports import NotebookReport
from browser_server import LabServer, kill_all, processes_by_marker, processes_mentioning

# what tests/test_browser.py takes from here (bh.*), besides BrowserSession and save_doc_shot
__all__ = ["BrowserSession", "CHROMIUM_ENV", "NOOP_ENV", "NotebookReport", "WORKERS_ENV", "find_chromium",
           "main", "processes_mentioning", "save_doc_shot", "scan_notebook", "widget_notebooks"]

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
