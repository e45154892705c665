"""Fault injection for the integration tier: one experiment, the faults a cluster deals out, and an audit.

``run_scenario`` runs one HPOExperiment on the real API server with the
operator as a real ``kopf run`` process and the node played by the kubelet TEST
DOUBLE, and meanwhile, at seeded random moments:

- SIGKILLs the operator and starts it again;
- deletes trial pods by hand (``kubectl delete pod``) while they train;
- lets trainers crash at a random epoch in a share of runs (the node double);
- stops the kubelet double (its trainers and sidecars die, the pods stay in
  the API) and starts it again, so it fails the pods it lost, as after a reboot;
- restarts the API server;
- runs a meddler: a concurrent writer doing read-modify-write updates of the
  trials' labels, annotations and status with resourceVersion preconditions;
- puts a fault-injecting proxy (support.fault_proxy) between the sidecars and
  the API server.

``audit`` then compares what the trainers reported (their metrics files)
with what the trials recorded, checks that the experiment ended soundly, and,
at parallelism 1 only, compares the run's decisions with the undisturbed one:
one trial at a time they are deterministic and equal ``hpo simulate``'s; with
several in parallel, when each result arrives decides them, so no simulation
can predict them and the comparison is reported as not applicable.
The integration tests (tests/integration/test_faults.py) and the reliability
report (bench/reliability.py) share both.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from hpo_operator import resources
from hpo_operator.scheduling.base import rank_key, rung_levels
from hpo_operator.sim import LearningCurveTable, simulate
from hpo_operator.spec.experiment import SchedulerSpec
from support.curve_manifests import curve_manifest
from support.fault_proxy import FaultProxy
from support.kube_tools import kubectl
from support.node_double import NodeDouble, _transient
from support.operator_process import Operator
from support.paths import TABLES

GROUP, VERSION = resources.GROUP, resources.VERSION
TABLE = TABLES / "digits_s44.json"
CRASH_EXIT_CODE = 3  # tests/trainers/curve_trainer.py exits with it at its crash_at_epoch


@dataclass(frozen=True)
class FaultPlan:
    """What to inject into one experiment; counts are exact, moments are drawn from ``seed``."""

    name: str
    seed: int = 0
    operator_kills: int = 0
    pod_deletions: int = 0
    crash_rate: float = 0.0  # share of runs whose trainer crashes at a random epoch of its range
    kubelet_restarts: int = 0
    apiserver_restarts: int = 0
    meddler: bool = False
    proxy_fault_rate: float = 0.0  # share of the sidecars' status writes whose answer is lost


@dataclass(frozen=True)
class Experiment:
    """The experiment a scenario runs: ASHA promotion, rungs at epochs 3, 9, 27, ``parallelism`` trials at a time."""

    trials: int = 12
    parallelism: int = 1
    seed: int = 0
    seconds_per_epoch: float = 0.15
    min_resource: int = 3
    max_resource: int = 27
    max_retries: int = 3

    @property
    def decisions_comparable(self) -> bool:
        """One trial at a time, the operator decides as the simulator does; in parallel, timing decides."""
        return self.parallelism == 1

    def rungs(self) -> list[int]:
        """The epochs a trial can stop at: its rungs, and max_resource where it is complete."""
        spec = self.scheduler()
        return [*rung_levels(spec.min_resource, spec.max_resource, spec.reduction_factor), spec.max_resource]

    def scheduler(self) -> SchedulerSpec:
        return SchedulerSpec(algorithm="asha", max_resource=self.max_resource, min_resource=self.min_resource, promote_in_place=False)

    def manifest(self, name: str) -> dict:
        doc = curve_manifest(name, trials=self.trials, parallelism=self.parallelism, max_resource=self.max_resource,
                             retries=self.max_retries, max_failed=self.trials, seconds=self.seconds_per_epoch,
                             seed=self.seed)
        doc["spec"]["scheduler"].update(type="promotion", minResource=self.min_resource)
        return doc

    def undisturbed(self):
        """The same experiment in the simulator: the reference for the decisions at parallelism 1, and in
        any case the estimate of the experiment's epochs by which the faults are placed."""
        return simulate(LearningCurveTable.load(TABLE), self.scheduler(), workers=self.parallelism, seed=self.seed,
                        max_trials=self.trials, stop_at_targets=False)


# ---- a concurrent writer ---------------------------------------------------------------------------
class Meddler:
    """Another client updating the same trials by read-modify-write with resourceVersion: it touches a
    label and an annotation, or writes back the status it read; a write that raced one by the sidecar or
    the operator gets 409 Conflict, and a successful one must change nothing they wrote."""

    def __init__(self, api: client.ApiClient, namespace: str, seed: int):
        self.custom = client.CustomObjectsApi(api)
        self.ns = namespace
        self.rng = random.Random(seed)
        self.writes: Counter = Counter()  # "metadata ok", "metadata conflict", "status ok", "status conflict"
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Meddler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.02, 0.1)):
            try:
                self._meddle_once()
            except Exception as err:
                # 404: a restarted API server answers so for custom resources until it serves their CRD
                # again (trials are never deleted while the scenario runs).
                if not _transient(err) and getattr(err, "status", None) != 404:
                    self.errors.append(f"meddler: {err!r}")

    def _meddle_once(self) -> None:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, "hpotrials")["items"]
        if not items:
            return
        name = self.rng.choice(items)["metadata"]["name"]
        obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, "hpotrials", name)
        self._stop.wait(self.rng.uniform(0.0, 0.3))  # the window in which the sidecar or operator writes
        kind = self.rng.choice(("metadata", "status"))
        try:
            if kind == "metadata":
                meta = obj["metadata"]
                touches = int((meta.get("annotations") or {}).get("meddler.hpo.dev/touches", "0")) + 1
                meta.setdefault("annotations", {})["meddler.hpo.dev/touches"] = str(touches)
                meta.setdefault("labels", {})["meddler.hpo.dev/touched"] = "true"
                self.custom.replace_namespaced_custom_object(GROUP, VERSION, self.ns, "hpotrials", name, obj)
            else:
                self.custom.replace_namespaced_custom_object_status(GROUP, VERSION, self.ns, "hpotrials", name, obj)
            self.writes[f"{kind} ok"] += 1
        except ApiException as err:
            if err.status != 409:
                raise
            self.writes[f"{kind} conflict"] += 1


# ---- the scenario ------------------------------------------------------------------------------------
@dataclass
class Findings:
    """What the audit found; every list names the trial or pod concerned and is empty when all is well."""

    observations: int = 0
    lost: list[str] = field(default_factory=list)  # reported epochs never recorded
    # Of a trial that ran out of retries, reported only by runs whose sidecar was killed with the pod before it
    # sent them: gone with the pod, as on a real node (any other trial's retries train them again and must
    # record them, or they count as lost).
    died_with_pod: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)  # epochs recorded more than once
    phantom: list[str] = field(default_factory=list)  # recorded epochs no trainer reported, or other values
    duplicate_pods: list[str] = field(default_factory=list)  # pod names started more than once
    not_from_checkpoint: list[str] = field(default_factory=list)  # runs that did not continue where the last ended
    epochs_repeated_events: int = 0  # runs that trained recorded epochs again
    expected_failures: int = 0
    wrong_failures: list[str] = field(default_factory=list)  # trial: status.failures vs faults that ended a run
    wrong_retry_outcome: list[str] = field(default_factory=list)  # Failed iff failures > maxRetries
    wrong_counts: list[str] = field(default_factory=list)  # experiment status.trials vs the trial objects
    unsound_end: list[str] = field(default_factory=list)  # phase, trials created, trials' ends, best vs records
    transient: bool = True  # no trial ran out of retries
    comparable: bool = True  # parallelism 1: the decisions must equal the simulator's
    best_same: Optional[bool] = None  # None: not compared (in parallel)
    decisions_same: Optional[bool] = None

    @property
    def compared(self) -> bool:
        """Whether the decisions were held against the undisturbed run (one at a time, no trial out of retries)."""
        return self.comparable and self.transient

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.phantom or self.duplicate_pods or self.not_from_checkpoint
                    or self.epochs_repeated_events or self.wrong_failures or self.wrong_retry_outcome
                    or self.wrong_counts or self.unsound_end) and (
                        not self.compared or bool(self.best_same and self.decisions_same))


@dataclass
class ScenarioResult:
    plan: FaultPlan
    phase: str
    seconds: float
    injected: Counter  # fault class -> how many were injected
    findings: Findings
    experiment: Experiment = Experiment()
    runs: int = 0
    most_pods_at_once: int = 0  # the node's pods seen at once: that the trials really ran in parallel
    problems: list[str] = field(default_factory=list)  # errors of the harness itself (node, meddler)


def run_scenario(cp, api: client.ApiClient, namespace: str, workdir: Path, plan: FaultPlan,
                 experiment: Experiment = Experiment(), timeout: float = 480) -> ScenarioResult:
    """Run ``experiment`` under ``plan`` and audit it; ``cp`` is the ControlPlane (restarted if asked)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    name = plan.name
    rng = random.Random(f"{plan.seed}/{name}")
    reference = experiment.undisturbed()
    total_epochs = sum(epochs for _, _, epochs in reference.final.values())
    injected: Counter = Counter()
    timeline = FaultLog(workdir / "faults.log")
    started = time.monotonic()
    operator = Operator(cp, namespace, workdir)
    proxy = FaultProxy(cp.server, plan.proxy_fault_rate, seed=plan.seed) if plan.proxy_fault_rate else None
    custom = client.CustomObjectsApi(api)
    operator.start()
    node = None
    try:
        if proxy:
            proxy.__enter__()
        node = NodeDouble(cp, api, namespace, workdir / "node", crash_rate=plan.crash_rate, seed=plan.seed,
                          sidecar_server=proxy.url if proxy else None)
        meddler = Meddler(api, namespace, plan.seed) if plan.meddler else None
        with node:
            if meddler:
                meddler.__enter__()
            try:
                kubectl(cp, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(experiment.manifest(name)))
                schedule = _schedule(plan, rng, experiment)
                # In parallel, a fault waits until the other running trials have recorded an epoch each since
                # the last one: while faults stall the experiment, the next ones would all land on the same runs.
                next_at = most_pods = 0
                deadline = time.monotonic() + timeout
                while not _finished(custom, namespace, name):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"experiment {name} did not finish in {timeout}s; "
                                             f"injected {dict(injected)}")
                    progress = _recorded_epochs(custom, namespace)
                    most_pods = max(most_pods, len(node.runs))
                    if (schedule and progress is not None and progress >= schedule[0][0] * total_epochs
                            and progress >= next_at):
                        what = _inject(schedule[0][1], rng, cp, operator, node, namespace, experiment)
                        if what is not None:
                            timeline.write(f"{what} (at {progress} recorded epochs)")
                            next_at = progress + experiment.parallelism - 1
                            injected[schedule[0][1]] += 1
                            schedule.pop(0)
                    time.sleep(0.2)
            finally:
                if meddler:
                    meddler.__exit__()
    finally:
        operator.stop()
        if proxy:
            proxy.__exit__()
        if node is not None:
            timeline.runs(node)  # also when the experiment did not finish: what each run did is the evidence
    injected["trainer crash"] = sum(1 for r in node.history if r.exit_code == CRASH_EXIT_CODE)
    if proxy:
        for kind, count in proxy.injected.items():
            injected[f"status write answer lost ({kind})"] = count
    if meddler:
        injected["meddler write"] = sum(meddler.writes.values())
        injected["meddler conflict"] = sum(v for k, v in meddler.writes.items() if k.endswith("conflict"))
    exp = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "hpoexperiments", name)
    trials = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "hpotrials")["items"]
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    findings = audit(exp, trials, node, events, reference, experiment)
    problems = list(node.errors) + (list(meddler.errors) if meddler else [])
    return ScenarioResult(plan, (exp.get("status") or {}).get("phase", ""), time.monotonic() - started, injected,
                          findings, experiment, runs=len(node.history), most_pods_at_once=most_pods,
                          problems=problems)


def planned(plan: FaultPlan) -> Counter:
    """The faults ``plan`` places at moments of its own (crashes, lost answers and conflicts are drawn per run)."""
    return Counter({"operator SIGKILL": plan.operator_kills, "pod deleted": plan.pod_deletions,
                    "kubelet restart": plan.kubelet_restarts, "API server restart": plan.apiserver_restarts})


def _schedule(plan: FaultPlan, rng: random.Random, experiment: Experiment) -> list[tuple[float, str]]:
    """Each fault at a random share of the experiment's epochs, in order. One trial at a time, drawn from 5%..90%
    of the simulator's count, which is exact there. In parallel that count is an estimate, which faults shorten (a
    trial out of retries trains no more), and faults drawn close together would pile onto the same runs: so the
    span 5%..60% is cut into one slot per fault, each fault at a random moment of its own slot."""
    kinds = [kind for kind, n in planned(plan).items() for _ in range(n)]
    if experiment.parallelism == 1:
        return sorted((rng.uniform(0.05, 0.9), kind) for kind in kinds)
    rng.shuffle(kinds)
    slot = (0.6 - 0.05) / max(len(kinds), 1)
    return [(0.05 + slot * (i + rng.random()), kind) for i, kind in enumerate(kinds)]


def _inject(kind: str, rng: random.Random, cp, operator: Operator, node: NodeDouble, namespace: str,
            experiment: Experiment) -> Optional[str]:
    """Inject one fault now and say what it hit; None when its moment has not come (no pod is training)."""
    if kind == "operator SIGKILL":
        time.sleep(rng.uniform(0, experiment.seconds_per_epoch))
        operator.kill()
        down = rng.uniform(0.2, 1.5)
        time.sleep(down)  # observations arrive while no operator runs
        operator.start()
        return f"operator SIGKILLed, started again {down:.1f} s later as operator-{operator.starts}.log"
    if kind == "API server restart":
        down = rng.uniform(0.5, 2.0)
        cp.restart_apiserver(down_seconds=down)
        return f"API server restarted, down {down:.1f} s"
    training = [r for r in list(node.runs.values())
                if r.trainer.poll() is None and len(r.reported()) < r.until - r.start_epoch - 1]
    if not training:
        return None
    time.sleep(rng.uniform(0, experiment.seconds_per_epoch))  # land mid-epoch
    if kind == "pod deleted":
        pod = rng.choice(training).pod
        kubectl(cp, "delete", "pod", pod, "-n", namespace, "--wait=false")
        return f"pod {pod} deleted"
    running = sorted(node.runs)  # kubelet restart
    node.stop()
    down = rng.uniform(1.0, 2.0)
    time.sleep(down)
    node.start()
    return f"kubelet stopped for {down:.1f} s, its pods {', '.join(running)} lost"


class FaultLog:
    """The scenario's record beside the operator's logs: each fault as it was injected, then every run."""

    def __init__(self, path: Path):
        self.path = path
        self.path.write_text("")

    def write(self, line: str, at: Optional[float] = None) -> None:
        at = time.time() if at is None else at
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f",{int(at * 1000) % 1000:03d}"
        with self.path.open("a") as out:
            out.write(f"[{stamp}] {line}\n")

    def runs(self, node: NodeDouble) -> None:
        for r in node.history:
            epochs = [e for e, _ in r.reported()]
            self.write(f"started {r.pod} attempt {r.attempt}: epochs {r.start_epoch + 1}..{r.until}, reported "
                       f"{epochs[0] if epochs else '-'}..{epochs[-1] if epochs else '-'}, crash at {r.crash_at}, "
                       f"ended {r.ended or 'running'}{', sidecar killed' if r.sidecar_killed else ''}"
                       f"{', lost by the kubelet' if r.pod in node.lost_pods else ''}", at=r.started_at)


def _finished(custom, namespace: str, name: str) -> bool:
    try:
        exp = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "hpoexperiments", name)
    except Exception as err:
        if _transient(err):
            return False
        raise
    return (exp.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _recorded_epochs(custom, namespace: str) -> Optional[int]:
    try:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "hpotrials")["items"]
    except Exception as err:
        if _transient(err):
            return None  # the API server is restarting
        raise
    return sum(len((t.get("status") or {}).get("observations") or []) for t in items)


# ---- the audit -----------------------------------------------------------------------------------------
def audit(exp: dict, trials: list[dict], node: NodeDouble, events: list, reference, experiment: Experiment,
          metric: str = "val_error") -> Findings:
    """Trainers' metrics files against the trials' records, failure counts against the faults that ended
    runs early, and the result against the undisturbed run."""
    f = Findings()
    runs_of: dict[str, list] = {}
    for run in node.history:
        runs_of.setdefault(run.trial, []).append(run)
    f.duplicate_pods = [f"{pod} started {n} times" for pod, n in node.created.items() if n > 1]
    lost_by_kubelet = set(node.lost_pods)
    for t in trials:
        tname, status = t["metadata"]["name"], t.get("status") or {}
        observations = status.get("observations") or []
        f.observations += len(observations)
        recorded = [o["epoch"] for o in observations]
        f.duplicated += [f"{tname} epoch {e} x{n}" for e, n in Counter(recorded).items() if n > 1]
        runs = sorted(runs_of.get(tname, []), key=lambda r: r.attempt)
        reported: dict[int, set] = {}
        survived: set[int] = set()  # epochs reported by a run whose sidecar was not killed before it finished
        for run in runs:
            for epoch, line in run.reported():
                reported.setdefault(epoch, set()).add(line.get(metric))
                if not run.sidecar_killed:
                    survived.add(epoch)
        missing = sorted(set(reported) - set(recorded))
        gone = set() if status.get("phase") != "Failed" else set(missing) - survived  # no retry trained them again
        f.lost += [f"{tname} epoch {e}" for e in missing if e not in gone]
        f.died_with_pod += [f"{tname} epoch {e}" for e in missing if e in gone]
        f.phantom += [f"{tname} epoch {o['epoch']} value {o.get('value')}" for o in observations
                      if o.get("value") not in reported.get(o["epoch"], set())]
        # Each run continues where the recorded epochs end: the last checkpoint, nothing redone.
        expected_failures = 0
        for run in runs:
            before = max([o["epoch"] for o in observations if o.get("attempt", 0) < run.attempt], default=0)
            lines = run.reported()
            if run.start_epoch != before or (lines and lines[0][0] != run.start_epoch + 1):
                f.not_from_checkpoint.append(f"{run.pod}: started after epoch {run.start_epoch}, recorded "
                                             f"{before}, first line {lines[0][0] if lines else None}")
            faulted = run.ended in ("deleted", "lost") or run.exit_code not in (None, 0) or run.pod in lost_by_kubelet
            own = max([o["epoch"] for o in observations if o.get("attempt") == run.attempt], default=0)
            if faulted and own < run.until:  # the fault ended the run before its last epoch was recorded
                expected_failures += 1
        f.expected_failures += expected_failures
        if status.get("failures", 0) != expected_failures:
            f.wrong_failures.append(f"{tname}: status.failures={status.get('failures', 0)}, "
                                    f"faults that ended a run early={expected_failures}")
        out_of_retries = expected_failures > experiment.max_retries
        f.transient = f.transient and not out_of_retries
        if (status.get("phase") == "Failed") != out_of_retries:
            f.wrong_retry_outcome.append(f"{tname}: phase {status.get('phase')} after {expected_failures} "
                                         f"failures (maxRetries {experiment.max_retries})")
    # A run that trained recorded epochs again: the sidecar records it in the trial's status, the operator
    # announces it as an EpochsRepeated event; either one counts.
    f.epochs_repeated_events = max(
        sum(1 for e in events if e.reason == "EpochsRepeated"),
        sum(1 for t in trials for p in (t.get("status") or {}).get("problems") or []
            if p.get("reason") == "epochs_repeated"))
    counts = Counter((t.get("status") or {}).get("phase", "Pending").lower() for t in trials)
    shown = (exp.get("status") or {}).get("trials") or {}
    for phase in ("pending", "running", "paused", "stopped", "completed", "failed"):
        if shown.get(phase, 0) != counts.get(phase, 0):
            f.wrong_counts.append(f"{phase}: status {shown.get(phase, 0)}, trial objects {counts.get(phase, 0)}")
    if shown.get("created") != len(trials):
        f.wrong_counts.append(f"created: status {shown.get('created')}, trial objects {len(trials)}")
    f.unsound_end = unsound_end(exp, trials, experiment, metric)
    f.comparable = experiment.decisions_comparable
    if f.comparable:
        got = {t["spec"]["trialId"]: (t["spec"]["config"]["row"], (t.get("status") or {}).get("phase"),
                                      last_epoch(t)) for t in trials}
        f.decisions_same = got == reference.final
        f.best_same = ((exp.get("status") or {}).get("best") or {}).get("trial") == reference_best(
            exp, reference, experiment)
    return f


def last_epoch(trial: dict) -> int:
    return max([o["epoch"] for o in (trial.get("status") or {}).get("observations") or []], default=0)


def unsound_end(exp: dict, trials: list[dict], experiment: Experiment, metric: str = "val_error") -> list[str]:
    """What holds at any parallelism: the experiment Succeeded (maxFailedTrials is its trial count) with every
    trial it was asked for; each trial ended, and one that did not fail stopped at a rung, Completed exactly
    at maxResource; the best trial is the fully trained one whose records hold the best last value."""
    out = []
    status = exp.get("status") or {}
    if status.get("phase") != "Succeeded":
        out.append(f"experiment phase {status.get('phase')!r}, expected Succeeded: {status.get('message')}")
    if len(trials) != experiment.trials:
        out.append(f"{len(trials)} trials created of {experiment.trials}")
    rungs = experiment.rungs()
    for t in trials:
        name, phase, epoch = t["metadata"]["name"], (t.get("status") or {}).get("phase"), last_epoch(t)
        if phase not in ("Completed", "Stopped", "Failed"):
            out.append(f"{name}: phase {phase} after the experiment ended")
        elif phase != "Failed" and (epoch not in rungs or (phase == "Completed") != (epoch == rungs[-1])):
            out.append(f"{name}: {phase} at epoch {epoch}, rungs and maxResource {rungs}")
    complete = [t for t in trials if last_epoch(t) >= experiment.max_resource]
    if complete:
        def last_value(t):
            return max(t["status"]["observations"], key=lambda o: o["epoch"]).get("value")
        mode = exp["spec"]["objective"]["mode"]
        best = min(complete, key=lambda t: (rank_key(last_value(t), mode), t["spec"]["trialId"]))
        shown = (status.get("best") or {}).get("trial")
        if shown != best["metadata"]["name"]:
            out.append(f"best trial {shown}, the records' best fully trained trial {best['metadata']['name']} "
                       f"({metric}={last_value(best)})")
    return out


def reference_best(exp: dict, reference, experiment: Experiment) -> Optional[str]:
    """The undisturbed run's best trial: the fully trained one with the best final value."""
    table = LearningCurveTable.load(TABLE)
    done = [tid for tid, (_, phase, _) in reference.final.items() if phase == "Completed"]
    if not done:
        return None
    best = min(done, key=lambda tid: table.curves[reference.final[tid][0], experiment.max_resource - 1])
    return f"{exp['metadata']['name']}-{best:04d}"
