"""The views on a real local run (the curve trainer as real processes, ASHA pausing and resuming them):
`hpo run`'s progress on a pipe and on a terminal, `hpo status`, `hpo plot`, `hpo report` opened in a real
headless chromium, and `hpo plot` of `hpo simulate --traces`."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
import pytest
import yaml

from support.browser import chromium, screenshot_pixels
from support.curve_manifests import curve_manifest
from support.paths import REPO, TABLES

pytestmark = pytest.mark.timeout(240)
TRIALS = 14


def hpo(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpo_operator.cli.main", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=180, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One real run through a pipe (not a terminal): its folder, results and what it printed."""
    tmp = tmp_path_factory.mktemp("views")
    doc = curve_manifest(name="views", trials=TRIALS, parallelism=2, max_resource=9, seconds=0.03, seed=4)
    path = tmp / "views.yaml"
    path.write_text(yaml.safe_dump(doc))
    done = hpo("run", path, "--out", tmp / "runs", env={"HPO_PROGRESS_INTERVAL": "0.5"})
    assert done.returncode == 0, done.stderr
    run_dir = tmp / "runs" / "views"
    return run_dir, json.loads((run_dir / "results.json").read_text()), done


def test_progress_on_a_pipe_is_plain_lines(run):
    _, results, done = run
    lines = [line for line in done.stderr.splitlines() if line.startswith("[") and "epochs |" in line]
    assert len(lines) >= 2, done.stderr
    assert "\r" not in done.stderr and "\033" not in done.stderr
    created = [int(re.search(r"trials (\d+)/(\d+):", line).group(1)) for line in lines]
    assert created == sorted(created) and 0 < created[-1] <= TRIALS
    assert re.search(r"\| best val_error=[0-9.]+ \(views-\d{4} @ epoch \d(, partial)?\)", lines[-1]), lines[-1]
    epochs = [int(line.split(" epochs |")[0].rsplit("| ", 1)[1]) for line in lines]
    assert epochs == sorted(epochs) and epochs[-1] > 0


def test_progress_on_a_terminal_is_a_bar_redrawn_in_place(tmp_path):
    doc = curve_manifest(name="tty", trials=6, parallelism=2, max_resource=9, seconds=0.05, seed=1)
    path = tmp_path / "tty.yaml"
    path.write_text(yaml.safe_dump(doc))
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hpo_operator.cli.main", "run", str(path), "--out",
                             str(tmp_path / "runs")], cwd=REPO, stdin=follower, stdout=follower, stderr=follower,
                            env={**os.environ, "COLUMNS": "120", "LINES": "40"})
    os.close(follower)
    screen = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the run is over
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    assert proc.wait(timeout=60) == 0, screen.decode(errors="replace")
    os.close(leader)
    text = screen.decode()
    drawn = re.findall(r"(tty \[[#.]+\][^\r\n\x1b]*)(\r\n|\r\x1b\[K)", text)
    assert len(drawn) >= 2, text
    # each bar is erased in place by the next line drawn, never left behind as a line of its own
    assert {end for _, end in drawn} == {"\r\x1b[K"}, drawn
    bars = [bar for bar, _ in drawn]
    assert all(len(b) <= 119 for b in bars)
    assert "#" in bars[-1] and "epochs |" in bars[-1] and "best val_error=" in bars[-1]
    assert "experiment tty: Succeeded" in text  # the summary comes after the bar was cleared


def test_status_shows_rungs_best_and_trials_by_objective(run):
    run_dir, results, _ = run
    out = hpo("status", run_dir)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    best = results["best"]
    assert f"experiment views (local run {run_dir}): Succeeded" in text
    assert f"best: {best['trial']} val_error={best['value']:.4g} at epoch 9" in text
    reached1 = sum(t["last_epoch"] >= 1 for t in results["trials"])
    went_on = sum(t["last_epoch"] > 1 for t in results["trials"])
    assert f"rungs: epoch 1: {reached1} reached, {went_on} went on" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("views-")]
    assert rows[0][0] == best["trial"] and len(rows) == 10
    values = [float(r[3]) for r in rows]
    assert values == sorted(values)
    everything = hpo("status", run_dir, "--trials").stdout
    assert len([line for line in everything.splitlines() if line.startswith("views-")]) == TRIALS


def colour_pixels(png: np.ndarray, hex_colour: str, tolerance: float = 0.08) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(png[..., :3] - rgb).max(axis=-1) < tolerance).sum())


def test_plot_draws_every_phase_the_best_and_both_formats(run, tmp_path):
    run_dir, results, _ = run
    out = hpo("plot", run_dir, "--format", "png", "svg", "-o", tmp_path)
    assert out.returncode == 0, out.stderr
    curves = matplotlib.image.imread(tmp_path / "views-curves.png")
    assert curves.shape[1] > 900 and curves.shape[0] > 500
    assert colour_pixels(curves, "#000000") > 300  # the best trial's thick black line
    phases = {t["phase"] for t in results["trials"]}
    from hpo_operator.views.plots import PHASE_STYLE
    for phase in phases:
        assert colour_pixels(curves, PHASE_STYLE[phase][0], 0.12) > 20, phase
    svg = ET.parse(tmp_path / "views-curves.svg").getroot()
    texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert f"best: {results['best']['trial']}" in texts
    assert f"learning curves of {TRIALS} trials" in texts
    progress = matplotlib.image.imread(tmp_path / "views-progress.png")
    assert colour_pixels(progress, "#000000") > 100  # best fully trained so far
    assert ET.parse(tmp_path / "views-progress.svg").getroot().tag.endswith("svg")


def test_plot_of_a_folder_that_is_no_run_names_the_fix(tmp_path):
    out = hpo("plot", tmp_path / "nothing")
    assert out.returncode == 2 and "hpx/NAME" in out.stderr


def test_report_renders_sorts_and_is_not_blank_in_chromium(run, tmp_path):
    run_dir, results, _ = run
    page = tmp_path / "report.html"
    out = hpo("report", run_dir, "-o", page)
    assert out.returncode == 0, out.stderr
    with chromium(tmp_path / "profile") as browser:
        browser.get(page.as_uri())
        assert browser.title.startswith("views:")
        rows = browser.find_elements("css selector", "#trials tbody tr")
        assert len(rows) == TRIALS
        # both plots decoded: their data URIs are real images
        sizes = browser.execute_script("return Array.from(document.images).map(i => [i.naturalWidth, i.complete])")
        assert len(sizes) == 2 and all(w > 500 and ok for w, ok in sizes)
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
        assert resources == []

        def column(name):
            heads = [th.text.rstrip(" ▲▼") for th in browser.find_elements("css selector", "#trials thead th")]
            i = heads.index(name)
            return [r.find_elements("tag name", "td")[i].text for r in
                    browser.find_elements("css selector", "#trials tbody tr")]

        def click(name):
            for th in browser.find_elements("css selector", "#trials thead th"):
                if th.text.rstrip(" ▲▼") == name:
                    th.click()
                    return th
            raise AssertionError(name)

        th = click("epochs")
        assert th.get_attribute("aria-sort") == "ascending"
        epochs = [int(v) for v in column("epochs")]
        assert epochs == sorted(epochs) and epochs[0] < epochs[-1]
        click("epochs")
        assert [int(v) for v in column("epochs")] == sorted(epochs, reverse=True)
        click("trial")
        assert column("trial") == sorted(t["name"] for t in results["trials"])
        click("last val_error")
        values = [float(v) for v in column("last val_error")]
        assert values == sorted(values) and column("trial")[0] == results["best"]["trial"]
        pixels = screenshot_pixels(browser)
    assert pixels.shape[0] > 500
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert not_white > 0.03, f"the screenshot is almost blank ({not_white:.1%} non-white)"
    assert pixels.std() > 0.05


def test_simulate_traces_plot_the_spread_over_seeds(tmp_path):
    traces = tmp_path / "traces.json"
    out = hpo("simulate", TABLES / "digits_s44.json", "--scheduler", "asha-promotion", "--seeds", "4",
              "--workers", "4", "--min-resource", "3", "--max-trials", "150", "--traces", traces)
    assert out.returncode == 0, out.stderr
    doc = json.loads(traces.read_text())
    assert set(doc["schedulers"]) == {"random", "asha-promotion"}
    for runs in doc["schedulers"].values():
        assert [r["seed"] for r in runs] == [0, 1, 2, 3]
        for r in runs:
            values = [v for _, v in r["best"]]
            times = [t for t, _ in r["best"]]
            assert values and values == sorted(values, reverse=True) and times == sorted(times)
            assert times[-1] <= r["end_time"]
    plotted = hpo("plot", traces, "-o", tmp_path, "--format", "png", "svg")
    assert plotted.returncode == 0, plotted.stderr
    png = matplotlib.image.imread(tmp_path / "mlp-digits-s44-simulate.png")
    assert colour_pixels(png, "#555555") > 50 and colour_pixels(png, "#E69F00") > 50  # random and ASHA medians
    svg_text = (tmp_path / "mlp-digits-s44-simulate.svg").read_text()
    assert "asha-promotion (median of 4 seeds)" in svg_text
    bad = hpo("plot", REPO / "bench" / "tables" / "digits_s44.json")
    assert bad.returncode == 2 and "--traces" in bad.stderr
