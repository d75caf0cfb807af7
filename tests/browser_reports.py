"""The real-browser widget check, part 3: what it reports, and the scripts it runs in the page.

See ``browser_harness.py`` for what the check does.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field

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
SCAN_JS = r"""
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
FIGURE_JS = r"""
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
VALUE_JS = r"""
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


def digest(sig: dict | None) -> str:
    if not sig:
        return ""
    return hashlib.sha1(("\0".join(sig["imgs"]) + "\0" + sig["text"]).encode()).hexdigest()[:12]


def safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:40] or "x"
