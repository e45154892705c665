"""One experiment's reconcile loop body: read, decide (``reconcile.step``), act (``kube.execute``), report.

The handler calls :meth:`ExperimentRunner.step` whenever the watch caches saw
something of the experiment change (and on a slow tick). The runner keeps the
experiment's :class:`ExperimentState` between steps and rebuilds it from a
fresh list of trials and pods when it has none: at start, after a step that
failed half-way, and when the spec changed.
"""

from __future__ import annotations

import time
from typing import Optional

import kopf

from hpo_operator.controller import kube, spec_changes
from hpo_operator.controller.conditions import set_condition
from hpo_operator.controller.reconcile import (
    ExperimentState, Observations, observations_of, problems_of, runs_to_confirm, step, unstarted_runs,
)
from hpo_operator.spec import ManifestError, experiment_spec_from_dict

FINISHED = ("Succeeded", "Failed")
# Trial counts and the best trial so far are display only: written at most this often. Phase
# and conditions are written at once.
STATUS_PERIOD_SECONDS = 2.0
# A step longer than this is logged with where its time went: trainers at a rung wait for steps.
SLOW_STEP_SECONDS = 1.0


class ExperimentRunner:
    def __init__(self, api: kube.Api, namespace: str, name: str):
        self.api = api
        self.namespace = namespace
        self.name = name
        self.state: Optional[ExperimentState] = None
        self.written: Optional[dict] = None  # the status this runner last wrote
        self.written_at = 0.0
        self.more_launches = False  # the last step left free slots for the next one

    def step(self, body: dict, observations: dict[str, Observations], problems: dict[str, list],
             pods: dict[str, dict], logger) -> bool:
        """One step; True once the experiment has finished (or was refused)."""
        started = time.monotonic()
        meta = body["metadata"]
        # Our own last write wins over a body the watch has not refreshed yet.
        status = {**(body.get("status") or {}), **(self.written or {})}
        try:
            spec = experiment_spec_from_dict(dict(body["spec"]))
        except ManifestError as err:
            self.refuse(body, status, "InvalidSpec", "; ".join(err.problems), logger)
            return True
        self.api.ensure_sidecar_identity(self.namespace)
        fresh = self.state is None or self.state.generation != meta.get("generation")
        if fresh:
            pods = self.api.list_pods(self.namespace, self.name)  # first: a finished pod's observations are in
            trial_objs = self.api.list_trials(self.namespace, self.name)
            observations = {o["metadata"]["name"]: observations_of(o) for o in trial_objs}
            problems = {o["metadata"]["name"]: problems_of(o) for o in trial_objs}
        # Budget edits apply; edits that would corrupt the running experiment are refused (spec_changes.py).
        review = spec_changes.review(spec, status.get("acceptedSpec"),
                                     len(trial_objs) if fresh else len(self.state.books))
        spec = review.spec
        if fresh:
            self.state = ExperimentState.from_trials(self.name, spec, trial_objs, meta.get("generation"), pods=pods)
        now = kube.now()
        to_read, to_fence = runs_to_confirm(self.state, pods, observations, now, fresh)
        fences = {name: kube.run_fence(self.state.books[name]) + 1 for name in to_fence}
        fenced = self.api.fence_trials(self.namespace, fences)
        unstarted = unstarted_runs(self.state, fenced, pods) if fresh else set()
        for trial in self.api.get_trials(self.namespace, to_read) + fenced:
            # A run ended: the trials' cache may lag the pods', so its records come from the API.
            name = trial["metadata"]["name"]
            observations[name], problems[name] = observations_of(trial), problems_of(trial)
            if name in fences:
                self.state.books[name].written["runFence"] = fences[name]
        confirmed = time.monotonic()
        plan = step(self.state, spec, status, observations, pods, now, fresh=fresh, problems=problems,
                    unstarted=unstarted)
        planned = time.monotonic()
        try:
            kube.execute(self.api, plan, spec, body, self.state.books, logger)
        except kube.TemplateRejected as err:
            self.state = None
            self.refuse(body, status, "InvalidTrialTemplate", str(err), logger)
            return True
        except Exception:
            self.state = None  # half-applied: rebuild from the API next time
            raise
        self.more_launches = plan.more_launches
        executed = time.monotonic()
        if executed - started > SLOW_STEP_SECONDS:
            logger.info(f"Slow step of {executed - started:.2f} s: read {confirmed - started:.2f} s "
                        f"({len(to_read)} ended runs read, {len(fences)} fenced{', rebuilt' if fresh else ''}), "
                        f"decide {planned - confirmed:.2f} s, act {executed - planned:.2f} s "
                        f"({len(plan.trial_status)} trial statuses, {len(plan.delete_pods)} pods deleted, "
                        f"{len(plan.launches)} launched)")
        st = plan.experiment_status
        st["observedGeneration"] = meta.get("generation")
        cond_status = {"Succeeded": "True", "Failed": "False"}.get(st["phase"], "Unknown")
        st["conditions"] = set_condition(status, "Succeeded", cond_status, st.get("reason") or "Running",
                                         st.get("message") or "trials are running", meta.get("generation"))
        review.record(st, status, meta.get("generation"))
        if review.announce(status):
            kopf.warn(body, reason=spec_changes.EVENT_REASON, message=review.message)
        self.write_status(st)
        if st["phase"] in FINISHED:
            event = kopf.info if st["phase"] == "Succeeded" else kopf.warn
            event(body, reason=st["phase"], message=st.get("message") or "")
            logger.info(f"Finished experiment name={self.name} phase={st['phase']} reason={st.get('reason')}")
            return True
        return False

    def write_status(self, st: dict, force: bool = False) -> None:
        last = self.written or {}
        if all(last.get(k) == v for k, v in st.items()):
            return
        urgent = force or any(k in st and st[k] != last.get(k)
                              for k in ("phase", "conditions", "startTime", "acceptedSpec"))
        if not urgent and time.monotonic() - self.written_at < STATUS_PERIOD_SECONDS:
            return  # the next step (at the latest the slow tick) writes it
        self.api.patch_experiment_status(self.namespace, self.name, st)
        self.written, self.written_at = {**last, **st}, time.monotonic()

    def refuse(self, body: dict, status: dict, reason: str, message: str, logger) -> None:
        """Fail the experiment for a problem only the user can fix; trials already recorded stay as they are."""
        kopf.warn(body, reason=reason, message=message)
        generation = body["metadata"].get("generation")
        self.write_status({"phase": "Failed", "reason": reason, "message": message,
                           "conditions": set_condition(status, "Succeeded", "False", reason, message, generation)},
                          force=True)
        logger.error(f"Refused experiment name={self.name}: {message}")
