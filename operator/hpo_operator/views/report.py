"""``hpo report``: one self-contained HTML page of an experiment.

Plots are inline PNG data URIs, the table's sorting a few lines of inline
JavaScript, the style inline CSS; the page's Content-Security-Policy allows
nothing else, so it opens the same with no network. Pure: figures come in as
PNG bytes.
"""

from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime, timezone
from typing import Any, Optional

import yaml

from hpo_operator.resources import TrialPhase
from hpo_operator.views.model import ExperimentSnapshot, fmt_value, ranked, rung_counts
from hpo_operator.views.text import fmt_config, fmt_duration

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #222;
       margin: 0 auto; max-width: 1180px; padding: 18px 28px 48px; }
h1 { font-size: 22px; margin: 6px 0 2px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #666; margin: 0 0 14px; }
.phase { display: inline-block; padding: 1px 9px; border-radius: 10px; font-weight: 600; font-size: 13px; }
.Succeeded, .Completed { background: #dcebf7; color: #064b7a; } .Failed { background: #fbe2d5; color: #8a3100; }
.Running, .Pending { background: #fdf0cf; color: #7a5600; } .Paused { background: #e3f3fc; color: #1f5f80; }
.Stopped, .Interrupted { background: #ececec; color: #444; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 10px; }
.card { border: 1px solid #e3e3e3; border-radius: 8px; padding: 8px 12px; }
.card b { display: block; font-size: 20px; } .card span { color: #666; font-size: 12px; }
img.plot { width: 100%; height: auto; border: 1px solid #eee; border-radius: 6px; margin: 6px 0; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th { position: sticky; top: 0; background: #f7f7f7; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
tr.best td { font-weight: 600; background: #f3f8fc; }
.scroll { overflow-x: auto; max-height: 70vh; border: 1px solid #eee; border-radius: 6px; }
pre { background: #f7f7f7; padding: 10px 12px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
ul.warn li { margin: 2px 0; } .muted { color: #777; }
"""

# Click a header: sort by that column (numbers as numbers, empty cells last), click again: reverse.
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[col], v = cell.getAttribute('data-sort');
        if (v === null) v = cell.textContent;
        if (v === '') return null;
        var n = Number(v);
        return isNaN(n) ? v.toLowerCase() : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
        var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === 'number' ? -1 : 1);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _sort_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return str(v)


def _cell(v: Any, sort: Any = None, numeric: bool = False) -> str:
    shown = fmt_value(v) if isinstance(v, float) or (numeric and v is None) else ("-" if v is None else v)
    return (f'<td{" class=num" if numeric else ""} data-sort="{_e(_sort_value(v if sort is None else sort))}">'
            f"{_e(shown)}</td>")


def trials_table(s: ExperimentSnapshot) -> str:
    params = sorted({k for t in s.trials for k in t.config})
    heads = ([("trial", False), ("phase", False), ("epochs", True), (f"last {s.metric}", True),
              (f"best {s.metric}", True), ("runs", True), ("failures", True)]
             + [(p, True) for p in params] + [("message", False)])
    head_html = "".join(f'<th{" class=num" if num else ""} scope="col">{_e(h)}</th>' for h, num in heads)
    rows = []
    best = s.best.trial if s.best else None
    for t in ranked(s):
        cells = [_cell(t.name), f'<td><span class="phase {_e(t.phase)}">{_e(t.phase)}</span></td>',
                 _cell(t.last_epoch, numeric=True), _cell(t.last_value, numeric=True),
                 _cell(t.best_value(s.mode), numeric=True), _cell(t.attempts, numeric=True),
                 _cell(t.failures, numeric=True)]
        for p in params:
            v = t.config.get(p)
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(_cell(f"{v:.4g}" if isinstance(v, float) else v, sort=v if number else None, numeric=number))
        cells.append(_cell(t.message or ""))
        rows.append(f'<tr{" class=best" if t.name == best else ""}>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table class="sortable" id="trials"><thead><tr>{head_html}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _cards(s: ExperimentSnapshot) -> str:
    c = s.counts()
    items = [(f"{len(s.trials)}" + (f" / {s.max_trials}" if s.max_trials else ""), "trials"),
             (c[TrialPhase.COMPLETED], "completed"), (c[TrialPhase.PAUSED], "paused"), (c[TrialPhase.STOPPED], "stopped"),
             (c[TrialPhase.RUNNING] + c[TrialPhase.PENDING], "running or pending"), (c[TrialPhase.FAILED], "failed"),
             (sum(t.last_epoch for t in s.trials), "epochs trained")]
    if s.elapsed_s is not None:
        items.append((fmt_duration(s.elapsed_s), "wall time"))
    return '<div class="cards">' + "".join(f"<div class=card><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                           for v, k in items) + "</div>"


def _outcome(s: ExperimentSnapshot) -> str:
    parts = []
    if s.best:
        parts.append(f"<p>Best trial <b>{_e(s.best.trial)}</b>: {_e(s.metric)} = <b>{_e(fmt_value(s.best.value))}</b>"
                     f" at epoch {s.best.epoch}{'' if s.best.complete else ' (not fully trained)'}.<br>"
                     f"Configuration: <code>{_e(fmt_config(s.best.config))}</code>"
                     + (f"<br>Checkpoint: <code>{_e(s.best.checkpoint)}</code>" if s.best.checkpoint else "")
                     + "</p>")
    else:
        parts.append("<p class=muted>No trial has reported an epoch yet.</p>")
    if s.message:
        parts.append(f"<p>{_e(s.message)}</p>")
    rungs = rung_counts(s)
    rows = "".join(f"<tr><td class=num>{r.level}{' (max)' if i == len(rungs) - 1 else ''}</td>"
                   f"<td class=num>{r.reached}</td><td class=num>{r.went_on if i < len(rungs) - 1 else '-'}</td></tr>"
                   for i, r in enumerate(rungs))
    parts.append('<table style="width:auto"><thead><tr><th class=num>epoch (rung)</th><th class=num>trials reached'
                 f'</th><th class=num>went on</th></tr></thead><tbody>{rows}</tbody></table>')
    return "".join(parts)


def _warnings(s: ExperimentSnapshot) -> str:
    if not s.warnings:
        return ""
    items = "".join(f"<li><span class=muted>{_e(w.time)}</span> {_e(w.object)} <b>{_e(w.reason)}</b>"
                    f"{f' (x{w.count})' if w.count > 1 else ''}: {_e(w.message)}</li>" for w in s.warnings)
    return f"<h2>Recent warnings</h2><ul class=warn>{items}</ul>"


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render(s: ExperimentSnapshot, plots: list[tuple[str, bytes]], now: Optional[datetime] = None) -> str:
    """``plots``: (alt text, PNG bytes) in page order."""
    now = now or datetime.now(timezone.utc)
    images = "".join(f'<img class="plot" alt="{_e(alt)}" src="{png_data_uri(png)}">' for alt, png in plots)
    spec = yaml.safe_dump(s.spec, sort_keys=False, default_flow_style=False)
    phase = f'<span class="phase {_e(s.phase)}">{_e(s.phase)}</span>' + (f" {_e(s.reason)}" if s.reason else "")
    data = json.dumps({"experiment": s.name, "phase": s.phase, "trials": len(s.trials)})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(s.name)}: HPO experiment report</title>
<style>{STYLE}</style></head>
<body data-summary="{_e(data)}">
<h1>{_e(s.name)} {phase}</h1>
<p class="sub">{_e(s.where)}; objective {_e(s.metric)} ({_e(s.mode)}); report written {_e(now.strftime('%Y-%m-%d %H:%M UTC'))}
by <code>hpo report</code></p>
{_cards(s)}
<h2>Outcome</h2>
{_outcome(s)}
<h2>Plots</h2>
{images}
<h2>Trials</h2>
<p class=muted>Click a column to sort by it, again to reverse. The best trial is in bold.</p>
{trials_table(s)}
{_warnings(s)}
<h2>Spec</h2>
<pre>{_e(spec)}</pre>
<script>{SCRIPT}</script>
</body></html>
"""
