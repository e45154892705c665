"""The experiment loop shared by every backend (simulator, local processes, operator).

The engine owns the trials of one experiment and the budget; it asks the
searcher for configurations and the scheduler for decisions. A backend only
translates its world into three calls and back:

* a slot is free -> :meth:`ExperimentEngine.next_launch` -> start a run;
* an epoch was reported -> :meth:`ExperimentEngine.on_observation` -> Decision;
* a run ended -> :meth:`ExperimentEngine.on_run_exit`.

No clock and no I/O here: ``max_duration`` is enforced by the backend calling
:meth:`ExperimentEngine.time_up`. The state is plain data (:class:`TrialState`)
that backends persist (API objects, a results file) and hand back to
:meth:`ExperimentEngine.restore` after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Literal, Optional

from hpo_operator.resources import ACTIVE_TRIAL_PHASES, FINAL_TRIAL_PHASES, ExperimentPhase, TrialPhase
from hpo_operator.scheduling import Decision, Scheduler, TrialRecord, fidelity_levels, make_scheduler, rank_key
from hpo_operator.search import Searcher, make_searcher
from hpo_operator.search.background import BackgroundFits
from hpo_operator.search.model_based import ModelSearcher

FINAL_PHASES = FINAL_TRIAL_PHASES


@dataclass
class TrialState:
    trial_id: int
    name: str
    config: dict[str, Any]
    bracket: int = 0
    phase: TrialPhase = TrialPhase.PENDING  # a plain string read from a record compares equal
    until: int = 0  # epoch the current or next run trains to
    observations: list[tuple[int, float]] = field(default_factory=list)  # (epoch, objective)
    epoch_seconds: dict[int, float] = field(default_factory=dict)  # epoch -> seconds it took, where timed
    attempts: int = 0  # runs started
    failures: int = 0  # runs that crashed
    message: str = ""

    @property
    def last_epoch(self) -> int:
        return self.observations[-1][0] if self.observations else 0

    @property
    def last_value(self) -> Optional[float]:
        return self.observations[-1][1] if self.observations else None


@dataclass(frozen=True)
class Launch:
    """A run to start: train ``trial`` from ``start_epoch`` + 1 to ``until``."""

    trial: TrialState
    start_epoch: int
    until: int
    reason: Literal["new", "resume", "retry"]
    attempt: int  # 1-based run number of this trial, for deterministic run names


@dataclass(frozen=True)
class Outcome:
    phase: ExperimentPhase  # SUCCEEDED or FAILED
    reason: str
    message: str


@dataclass(frozen=True)
class Best:
    trial: TrialState
    value: float
    epoch: int
    complete: bool  # trained to max_resource


class ExperimentEngine:
    def __init__(self, name: str, spec, searcher: Optional[Searcher] = None,
                 scheduler: Optional[Scheduler] = None, background_fits: bool = True):
        self.name = name
        self.spec = spec
        self.mode = spec.objective.mode
        self.max_resource = spec.scheduler.max_resource
        self.budget = spec.budget
        if searcher is None:
            searcher = make_searcher(spec.searcher, spec.search_space, levels=fidelity_levels(spec.scheduler),
                                     mode=self.mode, scheduler=spec.scheduler)
            if background_fits and isinstance(searcher, ModelSearcher):
                # Fits run in a worker thread; a decision never waits for one (search/background.py).
                searcher = BackgroundFits(searcher)
        self.searcher = searcher
        self.scheduler = scheduler or make_scheduler(spec.scheduler, self.mode, spec.budget.max_trials,
                                                     seed=spec.searcher.seed)
        self.trials: dict[int, TrialState] = {}
        self._retry_queue: list[int] = []
        # Resumes the scheduler granted while the trial's last run was still exiting
        # (it said PAUSE, the trainer has not ended yet): trial id -> until.
        self._deferred: dict[int, int] = {}
        self._timed_out = False
        self.outcome: Optional[Outcome] = None
        self._observed = 0  # observations taken (``best`` is remembered until the next one)
        self._best: tuple = (None, None)

    # ---- names ---------------------------------------------------------------
    def trial_name(self, trial_id: int) -> str:
        return f"{self.name}-{trial_id:04d}"

    # ---- the loop ------------------------------------------------------------
    def next_launch(self) -> Optional[Launch]:
        """Work for a free slot: a retry first, then whatever the scheduler says."""
        if self.outcome is not None or self._timed_out:
            return None
        while self._retry_queue:
            trial = self.trials[self._retry_queue.pop(0)]
            if trial.phase != TrialPhase.PENDING:
                continue
            if trial.last_epoch >= trial.until:
                # Its run had reported (and checkpointed) every epoch before it was lost:
                # nothing to redo, the run counts as finished.
                trial.phase = TrialPhase.RUNNING
                self.on_run_exit(trial.trial_id, succeeded=True)
                continue
            return self._launch(trial, "retry" if trial.attempts else "new")
        for tid, until in list(self._deferred.items()):
            trial = self.trials[tid]
            if trial.phase == TrialPhase.PAUSED:
                del self._deferred[tid]
                trial.until = until
                return self._launch(trial, "resume")
        while True:
            if self.scheduler.may_start_new() and self.searcher.exhausted(self.scheduler.next_trial_id):
                self.scheduler.close_new_trials()  # grid exhausted; promotions may still come
            job = self.scheduler.next_job()
            if job is None:
                return None
            if job.kind != "resume":
                break
            trial = self.trials[job.trial_id]
            if trial.phase == TrialPhase.RUNNING:
                # Its run has not ended yet: resume it in the slot it frees (see on_run_exit).
                self._deferred[job.trial_id] = job.until
                continue
            trial.until = job.until
            return self._launch(trial, "resume")
        config = self.searcher.suggest(job.trial_id, pending=self._running_ids())
        trial = TrialState(job.trial_id, self.trial_name(job.trial_id), config, job.bracket, TrialPhase.PENDING, job.until)
        self.trials[job.trial_id] = trial
        return self._launch(trial, "new")

    def _running_ids(self) -> list[int]:
        return [t.trial_id for t in self.trials.values() if t.phase in ACTIVE_TRIAL_PHASES]

    def _launch(self, trial: TrialState, reason) -> Launch:
        trial.phase = TrialPhase.RUNNING
        trial.attempts += 1
        trial.message = ""
        return Launch(trial, trial.last_epoch, trial.until, reason, trial.attempts)

    def on_observation(self, trial_id: int, epoch: int, value: Optional[float],
                       seconds: Optional[float] = None) -> Decision:
        """An epoch result; repeated or older epochs (a retried run re-reporting) are ignored.
        ``seconds``: how long the epoch took, where the backend could time it (see
        :func:`hpo_operator.search.training_cost.epoch_seconds`)."""
        trial = self.trials[trial_id]
        if trial.phase != TrialPhase.RUNNING or epoch <= trial.last_epoch:
            return Decision.STOP if trial.phase == TrialPhase.STOPPED else Decision.CONTINUE
        value = float("nan") if value is None else float(value)
        trial.observations.append((epoch, value))
        if seconds is not None:
            trial.epoch_seconds[epoch] = seconds
        self._observed += 1
        self.searcher.on_result(trial_id, epoch, value, seconds)
        decision = self.scheduler.on_result(trial_id, epoch, value)
        trial.until = self.scheduler.until_of(trial_id)
        if decision is Decision.STOP:
            trial.phase = TrialPhase.STOPPED
            trial.message = f"stopped at epoch {epoch} by the {self.spec.scheduler.algorithm} scheduler"
        return decision

    def settled_phase(self, trial_id: int) -> str:
        """The trial's phase, or, for a run that has reported its last epoch, the phase its exit will
        give it (Paused or Completed, however its pod ends: see ``on_run_exit``). The operator records
        this one, so the pod's exit usually changes nothing on record."""
        trial = self.trials[trial_id]
        if trial.phase == TrialPhase.RUNNING and trial.observations and trial.last_epoch >= trial.until:
            return TrialPhase.COMPLETED if trial.last_epoch >= self.max_resource else TrialPhase.PAUSED
        return trial.phase

    def on_run_exit(self, trial_id: int, succeeded: bool, message: str = "") -> None:
        """A run ended: the trainer exited (or its pod finished, or vanished).

        A trial the scheduler already promoted while this run was exiting is
        resumed by the next ``next_launch``, in the slot this exit frees.
        """
        trial = self.trials[trial_id]
        if trial.phase != TrialPhase.RUNNING:
            return  # stopped by a decision, or already handled
        if trial.last_epoch >= trial.until:
            succeeded = True  # every epoch was reported after its checkpoint: a late crash loses nothing
        if succeeded and trial.last_epoch >= trial.until:
            if trial.last_epoch >= self.max_resource:
                trial.phase = TrialPhase.COMPLETED
                self.scheduler.on_trial_end(trial_id, "completed")
            else:
                trial.phase = TrialPhase.PAUSED
            return
        if succeeded:
            message = message or f"trainer exited 0 after epoch {trial.last_epoch}, before epoch {trial.until}"
        trial.failures += 1
        if trial.failures <= self.budget.max_retries:
            trial.phase = TrialPhase.PENDING
            trial.message = f"retry {trial.failures}/{self.budget.max_retries} from epoch {trial.last_epoch}: {message}"
            self._retry_queue.append(trial_id)
            return
        trial.phase = TrialPhase.FAILED
        trial.message = message or "run failed"
        self.scheduler.on_trial_end(trial_id, "failed")
        if self.failed_count > self.budget.max_failed_trials:
            self.outcome = Outcome(
                ExperimentPhase.FAILED, "MaxFailedTrialsReached",
                f"{self.failed_count} trials failed (maxFailedTrials is {self.budget.max_failed_trials}); "
                f"last: {trial.name}: {trial.message}",
            )

    def relaunch(self, trial_id: int) -> None:
        """A run that never started (its pod was never created): launched again as the same attempt by the
        next ``next_launch``, with no failure counted."""
        trial = self.trials[trial_id]
        if trial.phase != TrialPhase.RUNNING:
            return
        trial.phase = TrialPhase.PENDING
        trial.attempts -= 1
        self._retry_queue.insert(0, trial_id)

    def fail(self, reason: str, message: str) -> None:
        """End the experiment Failed for a problem only its user can fix (a trial template the API server
        refuses): what runs is stopped by the next step, and nothing more is launched."""
        if self.outcome is None:
            self.outcome = Outcome("Failed", reason, message)

    def time_up(self) -> list[TrialState]:
        """maxDuration passed: no new runs; returns the running trials the backend must stop."""
        self._timed_out = True
        return self.stop_all("stopped: maxDuration reached")

    def stop_all(self, message: str) -> list[TrialState]:
        """Stop every running or pending trial (the experiment ended); returns those the backend must stop."""
        running = [t for t in self.trials.values() if t.phase in ACTIVE_TRIAL_PHASES]
        for t in running:
            t.phase = TrialPhase.STOPPED
            t.message = message
        return running

    # ---- state ---------------------------------------------------------------
    @property
    def failed_count(self) -> int:
        return sum(1 for t in self.trials.values() if t.phase == TrialPhase.FAILED)

    def counts(self) -> dict[str, int]:
        out = {p.value: 0 for p in TrialPhase}
        for t in self.trials.values():
            out[t.phase] += 1
        return out

    def is_active(self) -> bool:
        return any(t.phase in ACTIVE_TRIAL_PHASES for t in self.trials.values())

    def finish_if_done(self) -> Optional[Outcome]:
        """Close the experiment once nothing runs (call after giving every free slot its launch).

        Nothing running after the slots were filled means the scheduler had no
        work left. Paused trials that were never promoted become Stopped.
        """
        if self.outcome is None and not self.is_active():
            if self._timed_out:
                self.outcome = self._succeeded_or_failed("MaxDurationReached", "maxDuration reached")
            else:
                self.outcome = self._succeeded_or_failed("BudgetExhausted", "no more trials to run or promote")
        if self.outcome is not None and not self.is_active():
            for t in self.trials.values():
                if t.phase == TrialPhase.PAUSED:
                    t.phase = TrialPhase.STOPPED
                    t.message = f"not promoted past epoch {t.last_epoch}"
        return self.outcome

    def _succeeded_or_failed(self, reason: str, message: str) -> Outcome:
        best = self.best()
        if best is None:
            return Outcome(ExperimentPhase.FAILED, "NoResults", f"{message}; no trial reported the objective metric")
        return Outcome(ExperimentPhase.SUCCEEDED, reason, f"{message}; best {best.trial.name} "
                       f"{self.spec.objective.metric}={best.value:.6g} at epoch {best.epoch}")

    def best(self) -> Optional[Best]:
        """Best fully trained trial; before any completes, the best latest value of any trial.

        Only observations change it, so it is remembered until the next one (the operator asks every step,
        over thousands of trials)."""
        key = (self._observed, len(self.trials), self.max_resource)
        if self._best[0] != key:
            self._best = (key, self._find_best())
        return self._best[1]

    def _find_best(self) -> Optional[Best]:
        complete = [t for t in self.trials.values() if t.observations and t.last_epoch >= self.max_resource]
        pool = complete or [t for t in self.trials.values() if t.observations]
        if not pool:
            return None
        trial = min(pool, key=lambda t: (rank_key(t.last_value, self.mode), t.trial_id))
        return Best(trial, trial.last_value, trial.last_epoch, bool(complete))

    def restore(self, trials: list[TrialState], exiting: Collection[int] = ()) -> None:
        """Rebuild from persisted trial states; runs that were in flight are the backend's to reconcile.

        ``exiting``: trials recorded with the phase their run's exit will give them (``settled_phase``)
        whose pod has not been seen to end: Running again until it has, so they keep their slot.
        """
        self._observed += 1  # (restored trials bring observations of their own)
        for t in trials:
            self.trials[t.trial_id] = t
            if t.phase == TrialPhase.PENDING:
                self._retry_queue.append(t.trial_id)
        self.scheduler.restore(_scheduler_record(t) for t in trials)
        self.searcher.restore((t.trial_id, t.config, [(e, v, t.epoch_seconds.get(e)) for e, v in t.observations])
                              for t in trials)
        for trial_id in exiting:
            if self.trials[trial_id].phase in (TrialPhase.PAUSED, TrialPhase.COMPLETED):
                self.trials[trial_id].phase = TrialPhase.RUNNING


_STATUS = {TrialPhase.PENDING: "running", TrialPhase.RUNNING: "running", TrialPhase.PAUSED: "paused",
           TrialPhase.STOPPED: "stopped", TrialPhase.COMPLETED: "completed", TrialPhase.FAILED: "failed"}


def _scheduler_record(t: TrialState) -> TrialRecord:
    return TrialRecord(t.trial_id, t.bracket, t.until, _STATUS[t.phase], list(t.observations))


def is_better(a: float, b: float, mode: str) -> bool:
    return rank_key(a, mode) < rank_key(b, mode)


__all__ = ["Best", "ExperimentEngine", "Launch", "Outcome", "TrialState", "is_better", "FINAL_PHASES"]
