"""The real-browser widget check, part 4: one notebook opened, run and every widget moved.

See ``browser_harness.py`` for what the check does (steps 1-5 there are :meth:`NotebookCheck.run`).
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from browser_notebooks import (CONTROL_SELECTOR, ERROR_RE, IDLE_GRACE, POLL, SETTLE, STALL, T_FIRST_FIGURE, T_OPEN,
                               T_REDRAW, T_RUN_ALL, T_WIDGETS, NotebookInfo, scan_notebook)
from browser_reports import FIGURE_JS, SCAN_JS, VALUE_JS, ControlReport, NotebookReport, WidgetReport, digest, safe
from browser_server import LabServer, processes_by_marker

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
        return page.evaluate(SCAN_JS, [CONTROL_SELECTOR, ERROR_RE.pattern])

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
        stem = safe(path.stem)
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
                    f"bs => bs.map(b => ({FIGURE_JS})(b).imgs.length)")
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
        return box.evaluate(FIGURE_JS)

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
            if sig["imgs"] and digest(sig) != before:
                last, stable_since = digest(sig), now
                while time.time() - stable_since < SETTLE and time.time() - start < T_REDRAW:
                    time.sleep(POLL)
                    d = digest(self._figure(box))
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
        tag = f"{stem}__cell{cell}_{safe(w.name)}"
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
            before = digest(before_sig)
            value_before = el.evaluate(VALUE_JS)
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
            value_after = el.evaluate(VALUE_JS)
            problem = ""
            if value_after == value_before and ctl["kind"] not in ("button", "play"):
                problem = "the control's value did not change"
            elif not sig["imgs"]:
                problem = "no figure after the move"
            elif not changed:
                problem = "the figure did not change"
            w.controls.append(ControlReport(ctl["kind"], ctl["label"], action, value_before,
                                            value_after, changed, time.perf_counter() - t0, problem))
            self._shot(box, f"{tag}__{j + 1}_after_{safe(ctl['label'])}", w)

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
