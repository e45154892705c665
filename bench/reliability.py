"""Reliability report: an experiment under the faults clusters deal out, and bad input; writes docs/reliability.md.

Starts its own control plane (etcd + kube-apiserver + controller manager
v1.20.2, the integration tier's), installs the CRDs, and runs one experiment
per fault class (then all of them at once, and all of them at once on a larger
experiment running trials in parallel) with the operator as a real
``kopf run`` process and the kubelet TEST DOUBLE running the real sidecar;
see tests/support/faults.py for what is injected and how it is audited.
Then it applies every invalid manifest of tests/data/invalid_manifests/ with
kubectl (client-side validation off, as Helm or a GitOps tool would) and
records what became of it (tests/support/bad_input.py).

    .venv/bin/python bench/reliability.py [--seed 1] [--trials 9] [--parallel-trials 60] [--parallelism 8]
                                          [--out docs/reliability.md] [--only NAME...]

About 5 minutes on 2 cores for the one-at-a-time rows and the bad input, and
6 to 10 more for the parallel row (``--only parallel`` runs it alone).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from kubernetes import client, config  # noqa: E402

from support.control_plane import ControlPlane, ensure_binaries  # noqa: E402
from support.faults import Experiment, FaultPlan, ScenarioResult, planned, run_scenario  # noqa: E402
from support.kube_tools import kubectl  # noqa: E402
from support.operator_process import Operator  # noqa: E402


ALL_AT_ONCE = dict(operator_kills=5, pod_deletions=2, crash_rate=0.2, kubelet_restarts=1, apiserver_restarts=1,
                   meddler=True, proxy_fault_rate=0.25)
# On 60 trials, 8 at a time: about 7 times the epochs of 9 trials in a third of the time, so more of each fault,
# but not 7 times more: a kubelet restart alone ends the runs of all 8 running trials.
ALL_AT_ONCE_PARALLEL = dict(operator_kills=12, pod_deletions=8, crash_rate=0.2, kubelet_restarts=3,
                            apiserver_restarts=2, meddler=True, proxy_fault_rate=0.25)


def plans(seed: int, one_at_a_time: Experiment, parallel: Experiment) -> list[tuple[str, FaultPlan, Experiment]]:
    rows = [
        ("operator SIGKILLed at random moments", FaultPlan("kills", seed, operator_kills=6)),
        ("trial pods deleted by hand while training", FaultPlan("deletes", seed, pod_deletions=3)),
        ("trainers crash at a random epoch in 20% of runs", FaultPlan("crashes", seed, crash_rate=0.2)),
        ("kubelet stopped and started, its pods lost mid-epoch", FaultPlan("kubelet", seed, kubelet_restarts=2)),
        ("API server restarted", FaultPlan("apiserver", seed, apiserver_restarts=1)),
        ("concurrent read-modify-write writer on the trials (resourceVersion conflicts)",
         FaultPlan("meddler", seed, meddler=True)),
        ("sidecar status writes answered 409 / 500 / dropped after being applied",
         FaultPlan("proxy", seed, proxy_fault_rate=0.25)),
        ("all of the above at once", FaultPlan("chaos", seed, **ALL_AT_ONCE)),
    ]
    return [(title, plan, one_at_a_time) for title, plan in rows] + [
        (f"all of the above at once, {parallel.trials} trials {parallel.parallelism} in parallel",
         FaultPlan("parallel", seed, **ALL_AT_ONCE_PARALLEL), parallel)]


def fault_counts(faults: dict) -> str:
    return (f"{faults['operator_kills']} operator kills, {faults['pod_deletions']} pod deletions, "
            f"{faults['kubelet_restarts']} kubelet restarts, {faults['apiserver_restarts']} API server restarts")


def new_namespace(api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def yes_no(flag) -> str:
    return "n/a" if flag is None else ("yes" if flag else "**no**")


def injected_text(result: ScenarioResult) -> str:
    """What was injected; a fault the experiment ended before as "n of planned" (the row then tested less)."""
    plan = planned(result.plan)
    parts = [f"{result.injected[kind]} of {plan[kind]} {kind}" if result.injected[kind] < plan[kind]
             else f"{result.injected[kind]} {kind}" for kind in sorted(set(result.injected) | set(plan))
             if result.injected[kind] or plan[kind]]
    return "; ".join(parts) or "none"


def fault_rows(results: list[tuple[str, ScenarioResult]]) -> list[str]:
    head = ["| fault | injected | runs ended early (= expected failures) | observations recorded | lost | "
            "recorded twice | duplicate pods | not resumed from checkpoint | wrong failure counts | "
            "unsound end | best trial and decisions as undisturbed | phase | time |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |"]
    rows = []
    for title, r in results:
        f = r.findings
        if not f.comparable:
            same = f"n/a ({r.experiment.parallelism} in parallel: timing decides)"
        elif not f.transient:
            same = "n/a (a trial ran out of retries)"
        else:
            same = yes_no(f.best_same and f.decisions_same)
        gone = f" ({len(f.died_with_pod)} gone with a killed pod)" if f.died_with_pod else ""
        rows.append(f"| {title} | {injected_text(r)} | {f.expected_failures} | {f.observations} | "
                    f"{len(f.lost)}{gone} | "
                    f"{len(f.duplicated)} | {len(f.duplicate_pods)} | "
                    f"{len(f.not_from_checkpoint) + f.epochs_repeated_events} | "
                    f"{len(f.wrong_failures) + len(f.wrong_retry_outcome) + len(f.wrong_counts)} | "
                    f"{len(f.unsound_end)} | {same} | "
                    f"{r.phase} | {r.seconds:.0f} s |")
    return head + rows


def details(results: list[tuple[str, ScenarioResult]]) -> list[str]:
    out = []
    for title, r in results:
        f = r.findings
        problems = (f.lost + f.duplicated + f.phantom + f.duplicate_pods + f.not_from_checkpoint + f.wrong_failures
                    + f.wrong_retry_outcome + f.wrong_counts + f.unsound_end + r.problems)
        if problems or not f.clean:
            out.append(f"- {title}: " + "; ".join(problems or ["result differs from the undisturbed run"]))
    return out or ["None: every scenario recorded every reported epoch exactly once, counted exactly the "
                   "failures injected and ended soundly; the one-at-a-time scenarios with the undisturbed "
                   "run's decisions and best trial."]


def bad_input_rows(cp, api, workdir: Path) -> list[str]:
    """Every invalid manifest of the corpus, applied without client-side validation, with the operator running."""
    from support import bad_input

    ns = new_namespace(api, "bad-input")
    workdir.mkdir(parents=True, exist_ok=True)
    operator = Operator(cp, ns, workdir)
    operator.start()
    try:
        outcomes = [bad_input.classify(api, ns, bad_input.apply_file(cp, ns, path, client_validation=False))
                    for path in bad_input.corpus()]
    finally:
        operator.stop()
    by_schema = [o for o in outcomes if o.verdict == bad_input.REFUSED_BY_SCHEMA]
    by_operator = [o for o in outcomes if o.verdict == bad_input.REFUSED_BY_OPERATOR]
    missed = [o for o in outcomes if o.verdict not in (bad_input.REFUSED_BY_SCHEMA, bad_input.REFUSED_BY_OPERATOR)]
    unnamed = [o for o in outcomes if o.verdict != bad_input.NOT_REFUSED and not o.names_field]
    # (an accepted manifest runs: its trials are no leftover; a refused one must leave none)
    created = [o for o in outcomes if (o.trials or o.pods) and o.verdict != bad_input.NOT_REFUSED]
    rows = ["| bad input | injected | refused by the API server's schema | refused by the operator (Failed, "
            "condition, Warning Event) | not refused | message does not name the field | refused, left trials or pods |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| invalid HPOExperiment manifests (tests/data/invalid_manifests/, kubectl apply --validate=false) | "
            f"{len(outcomes)} | {len(by_schema)} | {len(by_operator)} | {len(missed)} | {len(unnamed)} | "
            f"{len(created)} |"]
    for o in {id(o): o for o in missed + unnamed + created}.values():  # each file once
        rows.append(f"\n- {o.file}: {o.verdict}, expected the field {o.expect}; got: {o.message[:200]}")
    return rows


def metric_rows(cp, api, workdir: Path) -> list[str]:
    """The real sidecar on a metrics file of garbage between valid epochs (tests/support/bad_metrics.py)."""
    from support.bad_metrics import EXPECTED_REASONS, run_garbage

    workdir.mkdir(parents=True, exist_ok=True)
    o = run_garbage(cp, api, new_namespace(api, "bad-metrics"), workdir)
    kinds = sorted(set(o.reasons))
    once = len(o.reasons) == len(kinds)
    return ["| bad metric lines | lines written | to skip (garbage, plus one file rewrite) | valid epochs | "
            "recorded | lost | recorded twice or invented | problem kinds recorded | each once | sidecar exit |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
            f"| not JSON, no epoch, epoch backwards, objective missing, binary and NUL bytes, a 10 MB line, a "
            f"5,000-digit epoch, NaN, Infinity, \"-inf\", the file rewritten while read | {o.lines} | {o.garbage} | "
            f"{o.valid} | {len(o.recorded)} | {o.lost} | {o.extra} | {len(kinds)} of {len(EXPECTED_REASONS)} | "
            f"{yes_no(once)} | {o.exit_code} |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="seeds the fault moments and the crash draws")
    parser.add_argument("--trials", type=int, default=9, help="trials of the one-at-a-time experiments")
    parser.add_argument("--parallel-trials", type=int, default=60, help="trials of the parallel experiment")
    parser.add_argument("--parallelism", type=int, default=8, help="trials the parallel experiment runs at once")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    parser.add_argument("--only", nargs="*", metavar="SCENARIO",
                        help="run only these fault scenarios (kills, deletes, crashes, kubelet, apiserver, meddler, "
                             "proxy, chaos, parallel); none at all with --only and no name")
    args = parser.parse_args()
    one_at_a_time = Experiment(trials=args.trials)
    parallel = Experiment(trials=args.parallel_trials, parallelism=args.parallelism)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="hpo-reliability-"))
    print(f"logs and trainers' files under {workdir}", flush=True)
    results, failed = [], []
    with ControlPlane(ensure_binaries()) as cp:
        kubectl(cp, "apply", "-f", str(REPO / "crds"))
        for crd in ("hpoexperiments.hpo.dev", "hpotrials.hpo.dev"):
            kubectl(cp, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        api = config.new_client_from_config(str(cp.kubeconfig_path))
        for title, plan, experiment in plans(args.seed, one_at_a_time, parallel):
            if args.only is not None and plan.name not in args.only:
                continue
            print(f"scenario {plan.name}: {title} ...", flush=True)
            ns = new_namespace(api, plan.name)
            try:
                result = run_scenario(cp, api, ns, workdir / plan.name, plan, experiment, timeout=1200)
            except AssertionError as err:  # did not finish: that is a finding, and the other rows still count
                print(f"  did not finish: {err}", flush=True)
                failed.append(f"- {title}: the experiment did not finish: {err}")
                continue
            print(f"  {result.phase} in {result.seconds:.0f}s, {result.runs} pods, at most "
                  f"{result.most_pods_at_once} at once; injected {injected_text(result)}; "
                  f"clean={result.findings.clean}", flush=True)
            for line in details([(title, result)]):
                if line.startswith("- "):
                    print("  " + line, flush=True)
            results.append((title, result))
        print("bad input ...", flush=True)
        bad = bad_input_rows(cp, api, workdir / "bad-input")
        print("bad metric lines ...", flush=True)
        bad += ["", *metric_rows(cp, api, workdir / "bad-metrics")]
    write_report(args, one_at_a_time, parallel, results, failed, bad, time.monotonic() - started)
    print(f"wrote {args.out} in {time.monotonic() - started:.0f}s", flush=True)
    return 0 if not failed and all(r.findings.clean and not r.problems for _, r in results) else 1


def write_report(args, experiment: Experiment, parallel: Experiment, results, failed: list[str], bad: list[str],
                 seconds: float) -> None:
    lines = [
        "# Reliability: an experiment under faults",
        "",
        "Produced by `python bench/reliability.py` (this page is its output; do not edit by hand).",
        "",
        "Each fault class is injected into its own experiment, then all of them into one, then all of them into a",
        "larger one running trials in parallel, on a real",
        "kube-apiserver + etcd + controller manager (v1.20.2), with the operator as a real `kopf run` process and",
        "the kubelet played by the TEST DOUBLE `tests/support/node_double.py` (it runs the test trainer",
        "`tests/trainers/curve_trainer.py` and the real metrics sidecar as local processes). The experiment:",
        f"ASHA (promotion type, rungs at epochs {experiment.min_resource}, {experiment.min_resource * 3}, "
        f"{experiment.max_resource}), {experiment.trials} trials one at a time (so the operator's decisions are "
        f"deterministic and equal `hpo simulate`'s), {experiment.seconds_per_epoch} s an epoch, "
        f"maxRetries {experiment.max_retries}; fault moments and crash draws seeded with {args.seed}. The last row "
        f"runs the same experiment with {parallel.trials} trials, {parallel.parallelism} at a time, and more of each fault "
        f"({fault_counts(ALL_AT_ONCE_PARALLEL)}, against {fault_counts(ALL_AT_ONCE)} one at a time).",
        "",
        "What is injected (tests/support/faults.py):",
        "",
        "- **operator SIGKILLed** at random moments (a random share of the experiment's epochs, then a random",
        "  part of an epoch), restarted 0.2 to 1.5 s later;",
        "- **trial pods deleted** with `kubectl delete pod` while their trainer has epochs to go;",
        "- **trainer crashes**: each run's trainer crashes at a random epoch of its range with probability 0.2",
        "  (exit code 3, drawn per pod name);",
        "- **kubelet stopped and started**: the node double's trainers and sidecars are killed mid-epoch, the pods",
        "  stay Running in the API; 1 to 2 s later it starts again and, as a kubelet after a node reboot, sets the",
        "  pods it lost Failed (exit code 137, reason ContainerStatusUnknown);",
        "- **API server restarted** (`ControlPlane.restart_apiserver()`: SIGTERM, down 0.5 to 2 s, same port,",
        "  etcd and certificates);",
        "- **a concurrent writer** (`Meddler`) doing read-modify-write updates of the trials' labels, annotations",
        "  and status with resourceVersion preconditions, some of which conflict with the sidecar's and operator's",
        "  writes;",
        "- **lost answers**: the sidecars reach the API server through a fault-injecting proxy",
        "  (`tests/support/fault_proxy.py`) that forwards every request and, for 25% of the status writes, replaces",
        "  the answer after the write was applied with 409 Conflict, 500, or a dropped connection.",
        "",
        "What is audited after each experiment (`audit` in tests/support/faults.py):",
        "",
        "- **lost**: epochs a trainer wrote to its metrics file that are not in the trial's `status.observations`",
        "  (shown apart, not lost: those of a trial that ran out of retries that only runs whose pod a fault killed",
        "  before their sidecar sent them had reported; every other trial's retries train them again);",
        "  **recorded twice**: epochs in `status.observations` more than once (also checked: every recorded value",
        "  is one a trainer reported);",
        "- **duplicate pods**: pod names the node started more than once;",
        "- **not resumed from checkpoint**: runs that did not start right after the trial's last recorded epoch,",
        "  or whose trainer's first reported epoch was not the next one, plus `EpochsRepeated` events;",
        "- **wrong failure counts**: trials whose `status.failures` differs from the number of their runs that a",
        "  fault ended before the run's last epoch was recorded; trials Failed although within maxRetries (or the",
        "  reverse); the experiment's `status.trials` counts against the trial objects;",
        "- **unsound end**: the experiment not Succeeded, fewer or more trials than asked for, a trial not ended,",
        "  a trial that did not fail stopped elsewhere than at a rung (Completed exactly at the last epoch), or a",
        "  best trial other than the fully trained trial whose records hold the best last value;",
        "- **as undisturbed**: every trial's configuration, phase and last epoch, and the best trial, equal to",
        "  `hpo simulate`'s on the same seed (where no trial ran out of retries). Both drive the same engine and",
        "  scheduler, so this checks the operator's plumbing; the scheduler itself is checked against independent",
        "  references in tests/simulation (Optuna, and ASHA's promotion type written from the paper). Not",
        "  applicable to the parallel row: which trial a rung promotes depends on which results have arrived when it",
        "  decides, so the real timing decides, and no simulation reproduces it; every other check applies to it.",
        "",
        "## Faults",
        "",
        *fault_rows(results),
        "",
        "Target: nothing lost. Problems found:",
        "",
        *(failed + [d for d in details(results) if d.startswith("- ")] if failed else details(results)),
        "",
        "## Bad input",
        "",
        *bad,
        "",
        "NaN and infinities are recorded as `null`, which ranks worst; each problem kind goes once into the",
        "trial's `status.problems` (the sidecar may write its trial's status and nothing else). Written by hand,",
        "not measured here (this scenario runs no operator): the operator posts each recorded problem as one",
        "Warning Event, which tests/integration/test_operator.py",
        "(`test_a_trainer_writing_garbage_gets_one_warning_event_per_problem_and_run`) checks.",
        "",
        "A misspelled field (`maxTrails`) reaches nobody when the client skips validation: the v1.20 API",
        "server prunes fields its schema does not know before storing the object (server-side field",
        "validation came with v1.25), so the operator sees a manifest without it. `kubectl apply` with its",
        "default client-side validation refuses it, naming the field, as it does in",
        "tests/integration/test_invalid_manifests_api.py, which applies the corpus that way.",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}; total {seconds / 60:.1f} min.",
        "",
    ]
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
