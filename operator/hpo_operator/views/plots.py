"""Figures of one experiment (learning curves, best so far) and of ``hpo simulate`` traces (matplotlib).

Figures are built with matplotlib's object API (no pyplot): nothing global
changes, and no display is needed.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from matplotlib import rc_context
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from hpo_operator.resources import TrialPhase
from hpo_operator.views.model import ExperimentSnapshot, fmt_value, progress
from hpo_operator.views.text import fmt_config

# Okabe-Ito colours: told apart with every common colour-vision deficiency.
PHASE_STYLE = {  # phase: (colour, end marker, drawing order)
    TrialPhase.STOPPED: ("#999999", "x", 0),
    TrialPhase.PAUSED: ("#56B4E9", "o", 1),
    TrialPhase.FAILED: ("#D55E00", "X", 2),
    TrialPhase.PENDING: ("#E69F00", ">", 3),
    TrialPhase.RUNNING: ("#E69F00", ">", 3),
    TrialPhase.COMPLETED: ("#0072B2", "o", 4),
}
BEST_COLOUR = "#000000"
RUNG_COLOUR = "#009E73"


def _style(fig: Figure) -> None:
    fig.set_facecolor("white")
    for ax in fig.axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, which="major", color="#e5e5e5", linewidth=0.7)
        ax.set_axisbelow(True)


def _line_alpha(n: int) -> float:
    # Hundreds of curves stay readable: each fainter as there are more, where they overlap the band darkens.
    return float(np.clip(6.0 / math.sqrt(max(n, 1)), 0.12, 0.85))


def _wants_log(values: Sequence[float]) -> bool:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 8


def _log_y(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def learning_curves(s: ExperimentSnapshot, *, width: float = 9.0, height: float = 5.4) -> Figure:
    """Every trial's objective against epoch: phase by colour and end marker, rungs as vertical lines, the best
    trial in black on top."""
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_subplot()
    n = len(s.trials)
    alpha = _line_alpha(n)
    width_line = 1.3 if n <= 60 else 0.8
    best_name = s.best.trial if s.best else None
    all_values = [p.value for t in s.trials for p in t.points]
    counts: dict[str, int] = {}
    order = sorted(s.trials, key=lambda t: PHASE_STYLE.get(t.phase, PHASE_STYLE[TrialPhase.RUNNING])[2])
    segments: dict[str, list] = {}
    ends: dict[str, list] = {}
    for t in order:
        counts[t.phase] = counts.get(t.phase, 0) + 1
        pts = [(p.epoch, p.value) for p in t.points if p.value is not None and math.isfinite(p.value)]
        if not pts or t.name == best_name:
            continue
        if len(pts) > 1:
            segments.setdefault(t.phase, []).append(pts)
        ends.setdefault(t.phase, []).append(pts[-1])
    for phase, segs in sorted(segments.items(), key=lambda kv: PHASE_STYLE.get(kv[0], PHASE_STYLE[TrialPhase.RUNNING])[2]):
        colour = PHASE_STYLE.get(phase, PHASE_STYLE[TrialPhase.RUNNING])[0]
        a = min(1.0, alpha * (1.6 if phase == TrialPhase.COMPLETED else 1.0))
        ax.add_collection(LineCollection(segs, colors=colour, linewidths=width_line, alpha=a,
                                         rasterized=n > 300, zorder=2))
    for phase, pts in ends.items():
        colour, marker, _ = PHASE_STYLE.get(phase, PHASE_STYLE[TrialPhase.RUNNING])
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=14 if n <= 100 else 7, marker=marker, color=colour, alpha=min(1.0, alpha + 0.2),
                   linewidths=1.0, zorder=3, rasterized=n > 300,
                   facecolors="none" if phase == TrialPhase.PAUSED else colour)
    best = next((t for t in s.trials if t.name == best_name), None)
    if best is not None:
        pts = [(p.epoch, p.value) for p in best.points if p.value is not None and math.isfinite(p.value)]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=BEST_COLOUR, linewidth=2.4, zorder=5, solid_capstyle="round")
            ax.plot(xs[-1:], ys[-1:], "o", color=BEST_COLOUR, markersize=6, zorder=6)
    max_r = s.max_resource
    rungs = s.rungs(0)
    log_x = max_r >= 9 and bool(rungs)
    if log_x:
        ax.set_xscale("log")
        ticks = sorted(set(rungs + [max_r] + [1]))
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0.85 if min(ticks) <= 1 else min(ticks) * 0.85, max_r * 1.12)
    else:
        ax.set_xlim(0.5, max_r + 0.5)
    for r in rungs + [max_r]:
        ax.axvline(r, color=RUNG_COLOUR, linewidth=1.0, linestyle=(0, (4, 3)) if r != max_r else "-",
                   alpha=0.7, zorder=1)
    if _wants_log(all_values):
        _log_y(ax)
    ax.autoscale(axis="y")
    ax.set_xlabel("epoch" + (" (log scale; green lines: rungs, solid: maxResource)" if rungs else ""))
    ax.set_ylabel(f"{s.metric} ({'lower' if s.mode == 'min' else 'higher'} is better)")
    ax.set_title(f"{s.name}: learning curves of {n} trials ({s.phase})", loc="left", fontsize=12)
    handles = []
    for phase in (TrialPhase.COMPLETED, TrialPhase.RUNNING, TrialPhase.PAUSED, TrialPhase.STOPPED, TrialPhase.FAILED):
        c = counts.get(phase, 0) + (counts.get(TrialPhase.PENDING, 0) if phase == TrialPhase.RUNNING else 0)
        if c:
            colour, marker, _ = PHASE_STYLE[phase]
            handles.append(Line2D([], [], color=colour, marker=marker, markersize=5, linewidth=1.5,
                                  markerfacecolor="none" if phase == TrialPhase.PAUSED else colour,
                                  label=f"{phase.lower()} ({c})"))
    if best is not None and best.points:
        handles.append(Line2D([], [], color=BEST_COLOUR, linewidth=2.4, marker="o", markersize=5,
                              label=f"best: {best.name}\n{s.metric}={fmt_value(best.last_value)} @ epoch "
                              f"{best.last_epoch}"))
    ax.legend(handles=handles, loc="upper right" if s.mode == "min" else "lower right", fontsize=8.5,
              frameon=True, framealpha=0.9, edgecolor="#dddddd")
    if s.best:
        fig.text(0.01, 0.01, f"best config: {fmt_config(s.best.config)}", fontsize=7.5, color="#444444",
                 ha="left", va="bottom", wrap=True)
    _style(fig)
    fig.tight_layout(rect=(0, 0.04 if s.best else 0, 1, 1))
    return fig


def _time_axis(seconds: list[float]) -> tuple[list[float], str]:
    top = max(seconds, default=0.0)
    if top >= 3 * 3600:
        return [x / 3600 for x in seconds], "hours"
    if top >= 180:
        return [x / 60 for x in seconds], "minutes"
    return list(seconds), "seconds"


def best_so_far(s: ExperimentSnapshot, *, width: float = 9.0, height: float = 3.8) -> Figure:
    """The best value so far against wall time and against epochs spent (all trials together)."""
    fig = Figure(figsize=(width, height), dpi=100)
    p = progress(s)
    if p is None:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no epoch times recorded (results written by an older hpo run or sidecar)",
                ha="center", va="center", fontsize=10, color="#555555")
        return fig
    left, right = fig.subplots(1, 2, sharey=True)
    xs_time, unit = _time_axis(p.seconds)
    for ax, xs, label in ((left, xs_time, f"wall time ({unit})"), (right, p.epochs, "epochs trained, all trials")):
        ax.step(xs, p.best_any, where="post", color="#56B4E9", linewidth=1.6, label="best at any epoch")
        if any(v is not None for v in p.best_full):
            ax.step(xs, p.best_full, where="post", color=BEST_COLOUR, linewidth=2.2, marker="none")
            # a dot where a newly completed trial became the best: visible even when it is the last epoch
            new = [(x, v) for i, (x, v) in enumerate(zip(xs, p.best_full))
                   if v is not None and (i == 0 or p.best_full[i - 1] != v)]
            ax.plot([x for x, _ in new], [v for _, v in new], "o", color=BEST_COLOUR, markersize=6,
                    label=f"best trained to {s.max_resource} epochs", zorder=4)
        ax.set_xlabel(label)
        ax.set_xlim(0, max(xs) * 1.02 if xs else 1)
    if _wants_log([v for v in p.best_any if v is not None]):
        _log_y(left)
    left.set_ylabel(f"best {s.metric} so far")
    right.legend(loc="upper right" if s.mode == "min" else "lower right", fontsize=8.5, framealpha=0.9,
                 edgecolor="#dddddd")
    final = next((v for v in reversed(p.best_full) if v is not None), None)
    fig.suptitle(f"{s.name}: best {s.metric} so far" + (f" (final {fmt_value(final)})" if final is not None else ""),
                 x=0.01, ha="left", fontsize=12)
    _style(fig)
    fig.tight_layout()
    return fig


def simulate_traces(doc: dict, *, width: float = 9.0, height: float = 5.0, points: int = 300) -> Figure:
    """Each scheduler's best fully trained value so far against simulated time: the median over seeds and the
    band between the 25th and 75th percentiles. A seed without a fully trained trial yet counts as worst."""
    fig = Figure(figsize=(width, height), dpi=100)
    ax = fig.add_subplot()
    mode = doc["mode"]
    worst = math.inf if mode == "min" else -math.inf
    runs = doc["schedulers"]
    firsts = [r["best"][0][0] for rs in runs.values() for r in rs if r["best"]]
    ends = [r["end_time"] for rs in runs.values() for r in rs]
    if not firsts:
        raise ValueError("the traces hold no fully trained trial; simulate more trials (--max-trials)")
    # Up to where nine runs in ten have ended: one slow seed would otherwise stretch every line flat.
    grid = np.geomspace(max(min(firsts), 1e-9), max(float(np.quantile(ends, 0.9)), max(firsts)) * 1.1, points)
    medians = []
    palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442"]
    for i, (name, rs) in enumerate(runs.items()):
        curves = np.full((len(rs), len(grid)), worst)
        for j, r in enumerate(rs):
            if not r["best"]:
                continue
            times = np.array([t for t, _ in r["best"]])
            values = np.array([v for _, v in r["best"]])
            idx = np.searchsorted(times, grid, side="right") - 1
            curves[j] = np.where(idx >= 0, values[np.clip(idx, 0, None)], worst)
        # Quantiles that pick a seed's value (no interpolation): a seed with no trained trial yet is infinite.
        low, median, high = np.quantile(curves, [0.25, 0.5, 0.75], axis=0, method="inverted_cdf")
        medians.append(median)
        shown = np.isfinite(median)
        is_random = name == "random"
        colour = "#555555" if is_random else palette[i % len(palette)]
        hours = grid / 3600
        ax.plot(hours[shown], median[shown], color=colour, linewidth=2.4 if not is_random else 1.8,
                linestyle="--" if is_random else "-", label=f"{name} (median of {len(rs)} seeds)", zorder=3)
        band = np.isfinite(low) & np.isfinite(high)
        ax.fill_between(hours[band], low[band], high[band], color=colour, alpha=0.15, linewidth=0, zorder=2)
    for key, label in (("top1", "top 1%"), ("top5", "top 5%")):
        value = (doc.get("thresholds") or {}).get(key)
        if value is not None:
            ax.axhline(value, color="#888888", linewidth=0.9, linestyle=":", zorder=1)
            ax.annotate(f"table's {label}", (1.0, value), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", fontsize=8, color="#666666")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("simulated wall time (hours, log scale)")
    ax.set_ylabel(f"best fully trained {doc.get('metric', 'objective')}")
    _clip_y(ax, medians, runs, mode, doc.get("thresholds") or {})
    s = doc.get("settings") or {}
    ax.set_title(f"{doc.get('table', '')}: best so far, {s.get('workers', '?')} workers; shaded: 25th to 75th "
                 f"percentile over seeds", loc="left", fontsize=11)
    ax.legend(fontsize=8.5, loc="upper right" if mode == "min" else "lower right", framealpha=0.9,
              edgecolor="#dddddd")
    _style(fig)
    fig.tight_layout()
    return fig


def _clip_y(ax, medians: list[np.ndarray], runs: dict, mode: str, thresholds: dict) -> None:
    """Zoom on where the schedulers differ: from the first moment every median line exists (its worst value
    then) to the best value any run reached."""
    firsts = [int(np.argmax(np.isfinite(m))) for m in medians if np.isfinite(m).any()]
    if not firsts:
        return
    at = max(firsts)
    start = [float(m[at]) for m in medians if np.isfinite(m[at])]
    lasts = [r["best"][-1][1] for rs in runs.values() for r in rs if r["best"]]
    best = min(lasts) if mode == "min" else max(lasts)
    values = start + [best] + [v for v in thresholds.values() if v is not None]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.06 or abs(hi) * 0.05 or 0.05
    ax.set_ylim(lo - pad, hi + pad)


def save(fig: Figure, path, dpi: Optional[int] = None) -> None:
    # SVG text stays text (searchable, smaller) instead of glyph outlines.
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(path, dpi=dpi or 110)
