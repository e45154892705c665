"""``hpo run``: an HPOExperiment with trials as local processes.

The loop is the one every backend uses (see :mod:`hpo_operator.engine`):
free slot -> ``next_launch`` -> start a trainer process; new metrics line ->
``on_observation`` -> write the decision to the trainer's control file (or
stop the process); process exit -> ``on_run_exit``. Checkpoints live in
``<out>/<experiment>/<trial>/checkpoints`` so a paused trial resumes where it
stopped, and ``results.json`` holds every observation so ``--resume``
continues an interrupted experiment.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from hpo_trainer.metrics import MetricLineError, MetricRecord, MetricsReader, MetricsTail

from hpo_operator.engine import ExperimentEngine, Launch
from hpo_operator.local.processes import TrainerProcess, TrialPaths, run_env, trainer_command, visible_gpus, write_control
from hpo_operator.local.progress import RunProgress
from hpo_operator.local.results import read_results, snapshot, times_from_dict, trial_from_dict, write_results
from hpo_operator.scheduling import Decision
from hpo_operator.resources import ExperimentPhase, TrialPhase
from hpo_operator.search.training_cost import epoch_seconds

POLL_SECONDS = 0.05
SAVE_EVERY_SECONDS = 1.0


@dataclass
class Running:
    process: TrainerProcess
    reader: MetricsReader
    gpu: Optional[str]
    problems: set = field(default_factory=set)


class LocalRunner:
    def __init__(self, experiment, manifest_path: Path, out_dir: Path = Path("hpo-runs"), *, resume: bool = False,
                 fresh: bool = False, progress: Optional[Callable[[str], None]] = None,
                 status: Optional[Callable[[RunProgress], None]] = None, poll_seconds: float = POLL_SECONDS):
        self.experiment = experiment
        self.spec = experiment.spec
        self.name = experiment.metadata.name
        self.manifest_dir = Path(manifest_path).resolve().parent
        self.run_dir = Path(out_dir) / self.name
        self.command = trainer_command(self.spec, self.manifest_dir)
        self.spec_doc = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)  # for hpo report
        self.progress = progress or (lambda line: None)  # events: started, paused, promoted, ...
        self.status = status or (lambda progress: None)  # every second: trials by phase, epochs, best
        self.poll_seconds = poll_seconds
        self.engine = ExperimentEngine(self.name, self.spec)
        self.running: dict[int, Running] = {}
        self.elapsed_before = 0.0
        self.started_at = time.time()  # unix; an interrupted run keeps its first start
        self.times: dict[int, dict[int, float]] = {}  # trial id -> epoch -> unix time written, for plots
        self._prepare(resume, fresh)
        self.gpus = visible_gpus() if self._wants_gpu() else []
        self.slots = self.spec.budget.parallelism
        if self.gpus and len(self.gpus) < self.slots:
            self.progress(f"parallelism {self.slots} capped at {len(self.gpus)}: one GPU per trial")
            self.slots = len(self.gpus)

    # ---- setup -----------------------------------------------------------------
    def _wants_gpu(self) -> bool:
        limits = (self.spec.trainer().get("resources") or {}).get("limits") or {}
        return str(limits.get("nvidia.com/gpu", "0")) not in ("0", "")

    def _prepare(self, resume: bool, fresh: bool) -> None:
        has_results = (self.run_dir / "results.json").exists()
        if fresh and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        elif has_results and not resume:
            raise ValueError(f"{self.run_dir} holds an earlier run of {self.name!r}; continue it with --resume, "
                             f"or start over with --fresh")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and has_results and not fresh:
            doc = read_results(self.run_dir)
            trials = [trial_from_dict(d) for d in doc["trials"]]
            self.times = {int(d["id"]): times_from_dict(d) for d in doc["trials"]}
            for t in trials:
                if t.phase == TrialPhase.RUNNING:  # interrupted, not failed: run again from its last epoch
                    t.phase = TrialPhase.PENDING
                written = self.times.get(t.trial_id, {})
                epochs = [e for e, _ in t.observations]
                t.epoch_seconds = epoch_seconds(epochs, [written.get(e) for e in epochs])
            self.engine.restore(trials)
            self.started_at = float(doc.get("started_at") or self.started_at)
            self.elapsed_before = float(doc.get("elapsed_s", 0.0))
            self.progress(f"resuming {self.name}: {len(trials)} trials, {self.elapsed_before:.0f}s elapsed before")

    # ---- the loop ----------------------------------------------------------------
    def run(self) -> dict:
        started = time.monotonic()
        last_save = 0.0
        phase = ExperimentPhase.RUNNING
        max_duration = self.spec.budget.max_duration_seconds
        try:
            while True:
                elapsed = self.elapsed_before + time.monotonic() - started
                if max_duration is not None and elapsed >= max_duration and self.engine.outcome is None:
                    for trial in self.engine.time_up():
                        self._kill(trial.trial_id)
                self._collect()
                if self.engine.outcome is not None and self.engine.outcome.phase == ExperimentPhase.FAILED:
                    for trial in self.engine.stop_all(f"stopped: experiment {self.engine.outcome.reason}"):
                        self._kill(trial.trial_id)
                self._fill()
                if not self.running and self.engine.finish_if_done() is not None:
                    break
                if time.monotonic() - last_save >= SAVE_EVERY_SECONDS:
                    self._save(ExperimentPhase.RUNNING, elapsed)
                    self.status(self.snapshot_progress(elapsed))
                    last_save = time.monotonic()
                time.sleep(self.poll_seconds)
            phase = self.engine.outcome.phase
        except KeyboardInterrupt:
            phase = ExperimentPhase.INTERRUPTED
            self.progress("interrupted: stopping trainers (continue later with --resume)")
            for tid in list(self.running):
                self._kill(tid, interrupted=True)
        elapsed = self.elapsed_before + time.monotonic() - started
        if phase != ExperimentPhase.INTERRUPTED:
            self._clean_checkpoints()
        doc = self._save(phase, elapsed)
        return doc

    def _fill(self) -> None:
        while len(self.running) < self.slots:
            launch = self.engine.next_launch()
            if launch is None:
                return
            self._start(launch)

    def _start(self, launch: Launch) -> None:
        paths = TrialPaths(self.run_dir / launch.trial.name)
        paths.root.mkdir(parents=True, exist_ok=True)
        used = {r.gpu for r in self.running.values()}
        gpu = next((g for g in self.gpus if g not in used), None)
        write_control(paths.control, launch.start_epoch, launch.until)
        env = run_env(launch, self.spec, self.name, paths, gpu)
        process = TrainerProcess(launch, self.command, env, paths)
        reader = MetricsReader(paths.metrics, self.spec.objective.metric, last_epoch=launch.start_epoch or None)
        # Earlier runs' lines are on record already: read only what this run appends.
        reader.tail = MetricsTail(paths.metrics, offset=paths.metrics.stat().st_size if paths.metrics.exists() else 0)
        self.running[launch.trial.trial_id] = Running(process, reader, gpu)
        self.progress(f"{'started' if launch.reason == 'new' else launch.reason + 'd'} {launch.trial.name} "
                      f"epochs {launch.start_epoch + 1}..{launch.until}"
                      + (f" on GPU {gpu}" if gpu is not None else ""))

    def _collect(self) -> None:
        for tid, run in list(self.running.items()):
            code = run.process.poll()  # read the exit code first, then drain: no line is missed
            self._read_metrics(tid, run)
            if tid not in self.running:
                continue  # stopped by a decision
            if code is not None:
                run.process.close()
                del self.running[tid]
                message = "" if code == 0 else run.process.failure_message(code)
                self.engine.on_run_exit(tid, succeeded=code == 0, message=message)
                trial = self.engine.trials[tid]
                if trial.phase == TrialPhase.PAUSED:
                    self.progress(f"paused {trial.name} at epoch {trial.last_epoch}")
                elif trial.phase == TrialPhase.COMPLETED:
                    self.progress(f"completed {trial.name}: {self._fmt(trial.last_value)}")
                elif trial.phase in (TrialPhase.PENDING, TrialPhase.FAILED):
                    self.progress(f"{trial.name}: {trial.message}")

    def _read_metrics(self, tid: int, run: Running) -> None:
        for item in run.reader.poll():
            if isinstance(item, MetricLineError):
                if item.reason not in run.problems:  # each kind of problem reported once per run
                    run.problems.add(item.reason)
                    self.progress(f"{self.engine.trials[tid].name}: ignored a metrics line: {item}")
                continue
            assert isinstance(item, MetricRecord)
            trial = self.engine.trials[tid]
            decision = self.engine.on_observation(tid, item.epoch, item.value, self._stamp(tid, item))
            if decision is Decision.STOP:
                self.progress(f"stopped {trial.name} at epoch {item.epoch}: {self._fmt(item.value)}")
                self._kill(tid)
                return
            if decision is Decision.CONTINUE and item.epoch == run.process.launch.until and trial.until > item.epoch:
                self.progress(f"promoted {trial.name} in place to epoch {trial.until}")
            write_control(run.process.paths.control, item.epoch, trial.until)

    def _kill(self, tid: int, interrupted: bool = False) -> None:
        run = self.running.pop(tid, None)
        if run is None:
            return
        run.process.stop()
        if interrupted:
            self._read_metrics_after_stop(tid, run)

    def _read_metrics_after_stop(self, tid: int, run: Running) -> None:
        # Lines written before the interrupt are kept: the trainer checkpointed them.
        for item in run.reader.poll():
            if isinstance(item, MetricRecord):
                self.engine.on_observation(tid, item.epoch, item.value, self._stamp(tid, item))

    def _stamp(self, tid: int, record: MetricRecord) -> Optional[float]:
        """Record when the epoch was written (the trainer's clock: the SDK always sends it; else ours
        now) and return how long it took, if the epoch before it was written too. A resumed run's first
        epoch counts its pause as well: the searcher takes a median per trial (``training_cost``)."""
        written = self.times.setdefault(tid, {})
        written[record.epoch] = record.time if record.time is not None else time.time()
        epochs = [record.epoch - 1, record.epoch]
        return epoch_seconds(epochs, [written.get(e) for e in epochs]).get(record.epoch)

    # ---- output ------------------------------------------------------------------
    def _save(self, phase: str, elapsed: float) -> dict:
        doc = snapshot(self.engine, self.run_dir, phase, elapsed,
                       {"manifest_dir": str(self.manifest_dir), "command": self.command,
                        "started_at": self.started_at, "spec": self.spec_doc}, self.times)
        write_results(self.run_dir, doc)
        return doc

    def _clean_checkpoints(self) -> None:
        """Stopped trials' checkpoints go unless keepCheckpoints; the best trial's always stays."""
        if self.spec.checkpoints.keep_checkpoints:
            return
        best = self.engine.best()
        for t in self.engine.trials.values():
            if t.phase == TrialPhase.STOPPED and (best is None or t.trial_id != best.trial.trial_id):
                shutil.rmtree(self.run_dir / t.name / "checkpoints", ignore_errors=True)

    def _fmt(self, value: Optional[float]) -> str:
        metric = self.spec.objective.metric
        return f"{metric}=nan" if value is None or not math.isfinite(value) else f"{metric}={value:.4g}"

    def snapshot_progress(self, elapsed: float) -> RunProgress:
        best = self.engine.best()
        return RunProgress(
            experiment=self.name, elapsed_s=elapsed, trials=len(self.engine.trials),
            max_trials=self.spec.budget.max_trials, counts=self.engine.counts(),
            epochs=sum(t.last_epoch for t in self.engine.trials.values()), metric=self.spec.objective.metric,
            best_value=None if best is None else best.value, best_trial=None if best is None else best.trial.name,
            best_epoch=None if best is None else best.epoch, best_complete=best is not None and best.complete,
            max_duration_s=self.spec.budget.max_duration_seconds)
