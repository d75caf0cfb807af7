"""Every widget of every notebook, moved in a real browser (JupyterLab + headless Chromium).

nbval never sees the front end, so a widget it accepts can still be dead where users drag it.
Here one JupyterLab server (127.0.0.1, free port, random token, ``MINIMAMBA_QUICK=1``) and one
Debian Chromium driven by Playwright open each notebook that has widgets, run all cells through
the menus, and move every control of every widget as a person would; the figure each widget
controls must change and no error output may appear. The machinery is in
``tests/browser_harness.py`` (it also runs on its own: ``python tests/browser_harness.py``).

- Notebooks are found when the tests are collected (any ``notebooks/*.ipynb`` whose code
  mentions widgets) and widgets in the browser page (every ``.widget-interact`` container):
  new notebooks and widgets are covered without editing this file.
- Screenshots before/after every move go to ``$MINIMAMBA_SCREENSHOTS`` or a folder under the
  pytest temporary directory; the folder is printed. ``MINIMAMBA_WIDGET_DOCS=docs/widgets``
  also writes one picture per notebook there, for ``docs/widgets.md``.
- Every selected notebook is queued when the server starts; ``$MINIMAMBA_BROWSER_WORKERS``
  (default 2) notebooks are checked at once, each in its own Chromium (one server for all).
- The failure check starts a second server with ``MINIMAMBA_WIDGET_NOOP=<plot function>`` for
  the first widget of the notebook with the fewest code cells; exactly that widget must be
  reported dead.
- The last test stops everything and asserts that no jupyter/kernel/chromium process is left.
- No Chromium: the tests fail when ``CI`` is set and are skipped otherwise, saying why.
  Chromium is ``$MINIMAMBA_CHROMIUM`` or ``chromium`` on PATH (Debian's package; never
  ``playwright install``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import browser_harness as bh

NOTEBOOKS = bh.widget_notebooks()


def _say(config, text: str) -> None:
    """Print to the terminal even when pytest captures output."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(text, flush=True)
    else:
        print(text, flush=True)


@pytest.fixture(scope="module")
def chromium():
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "the Python package `playwright` is missing (pip install -e '.[browser]')"
    path = bh.find_chromium()
    if why is None and path is None:
        why = (f"no Chromium found: set ${bh.CHROMIUM_ENV} or install Debian's package "
               "(`apt-get install -y chromium`, as .ci/run does); never `playwright install`")
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"real-browser widget test cannot run in CI: {why}", pytrace=False)
        pytest.skip(f"real-browser widget test skipped: {why}")
    return path


@pytest.fixture(scope="module")
def shots(request, tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MINIMAMBA_SCREENSHOTS")
                  or tmp_path_factory.getbasetemp() / "browser-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    _say(request.config, f"\n[browser] screenshots before/after each widget move: {folder}")
    return folder


def _selected(request) -> tuple[list[Path], bool]:
    """The notebooks whose test is selected (``-k`` may deselect some) and whether the
    failure check is: all of them are queued at once, so the workers never wait for pytest."""
    notebooks, noop = [], False
    for item in request.session.items:
        # nbval's notebook cells share the session but are not Python functions
        if getattr(item, "module", None) is not request.module:
            continue
        if item.originalname == "test_every_widget_moves_its_figure":
            notebooks.append(item.callspec.params["notebook"])
        noop |= item.originalname == "test_check_reports_a_dead_widget"
    return notebooks, noop


@pytest.fixture(scope="module")
def session(request, chromium, shots):
    """One JupyterLab server + ``$MINIMAMBA_BROWSER_WORKERS`` Chromiums (default 2) for every
    notebook; every selected check is queued at once; all stopped whatever happens."""
    t0 = time.perf_counter()
    s = bh.BrowserSession(chromium, shots, workers=int(os.environ.get(bh.WORKERS_ENV, 2)))
    request.addfinalizer(s.close)        # runs even if start() fails halfway
    s.start()
    notebooks, noop = _selected(request)
    s.futures = {nb: s.submit(nb) for nb in notebooks}
    s.noop = None
    target = _noop_target() if noop else None
    if target:
        nb, name = target
        lab = s.start_lab({bh.NOOP_ENV: name}, "lab-noop")
        s.noop = (nb, name, lab, s.submit(nb, lab, shots=shots / "noop"))
    yield s
    s.close()
    left = s.leftovers()
    _say(request.config, f"[browser] session total {time.perf_counter() - t0:.1f} s with "
                         f"{s.n_workers} worker(s); "
                         f"{', '.join(f'{k} {v:.1f} s' for k, v in s.timings.items())}")
    (shots / "reports.json").write_text(json.dumps([r.to_json() for r in s.reports], indent=1))
    assert not left, f"processes left behind: {left}"


def _doc_picture(report: bh.NotebookReport, docs: Path) -> None:
    """The last 'after' picture of the notebook's first widget, copied for docs/widgets.md."""
    for w in report.widgets:
        afters = [p for p in w.shots if "__0_before" not in p]
        if afters:
            bh.save_doc_shot(Path(afters[-1]), docs / f"{Path(report.notebook).stem}.png")
            return


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebook with widgets yet")
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_widget_moves_its_figure(request, session, notebook):
    report = session.futures[notebook].result()
    _say(request.config, "\n[browser] " + report.describe())
    if os.environ.get("MINIMAMBA_WIDGET_DOCS"):
        _doc_picture(report, Path(os.environ["MINIMAMBA_WIDGET_DOCS"]))
    expected = bh.scan_notebook(notebook).n_widgets      # widget(...) calls in the source
    assert len(report.widgets) >= expected, report.describe()
    assert report.ok, report.describe()


def _noop_target() -> tuple[Path, str] | None:
    """The first ``widget(...)`` call of the notebook with the fewest code cells (cheap to run)."""
    best = None
    for path in NOTEBOOKS:
        info = bh.scan_notebook(path)
        if not info.calls:
            continue
        n_code = sum(1 for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        if best is None or n_code < best[0]:
            best = (n_code, path, info.calls[min(info.calls)][0])
    return best and best[1:]


def test_check_reports_a_dead_widget(request, session):
    """A second server runs with ``MINIMAMBA_WIDGET_NOOP=<one plot function>`` (that widget's
    callback does nothing): the check must name exactly that widget as dead."""
    if session.noop is None:
        pytest.skip("no notebook with a widget(...) call yet")
    notebook, name, lab, future = session.noop
    report = future.result()
    lab.stop()
    left = bh.processes_mentioning(str(lab.scratch))
    _say(request.config, f"\n[browser] failure check ({bh.NOOP_ENV}={name}):\n" + report.describe())
    assert not left, f"processes left behind: {left}"
    expected = [w.id for w in report.widgets if w.name == name]
    assert expected, f"{name} not found in {notebook.name}:\n{report.describe()}"
    assert report.dead == expected, report.describe()
    dead = next(w for w in report.widgets if w.name == name)
    assert "no figure rendered after Run All" in dead.problems, report.describe()
    assert all(c.problem == "no figure after the move" for c in dead.controls), report.describe()
    assert not report.problems, report.describe()


def test_browser_leaves_no_process(session):
    """Last: stop the shared server and browser, then nothing of theirs may still run."""
    import psutil

    session.close()
    left = session.leftovers()
    kids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(
                    k in " ".join(p.cmdline()).lower() for k in ("jupyter", "chrom", "playwright")):
                kids.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    assert not left, f"processes left behind: {left}"
    assert not kids, f"child processes left behind: {kids}"
