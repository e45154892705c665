"""How the operator's cost grows with the work, against a real API server.

    .venv/bin/python bench/operator_scale.py            # all scenarios (30 to 50 min on 2 cores)
    .venv/bin/python bench/operator_scale.py --quick    # a tenth of the sizes (~2 min)
    .venv/bin/python bench/operator_scale.py --only running-100 --json out.json

Starts the integration tier's control plane (etcd + kube-apiserver +
controller-manager v1.20.2) with an audit log, the CRDs, and the node TEST
DOUBLE ``tests/support/instant_node.py`` (pods run instantly, observations
from a learning-curve table written with the sidecar's own patch). For each
scenario it starts a fresh operator process (``kopf run``, as the chart runs
it) with its own identity, applies the experiments, waits for them to finish
and prints, per scenario:

- decision latency: from a rung epoch's observation written to the
  operator's decision on it (``status.decidedEpoch``, what a trainer waiting
  at the rung reads), seen by a watch (p50, p99);
- pod latency: from the write that ends a run (its pod completing, or the
  observation the trial is stopped on) to the operator deleting the pod (sent
  in the background after the step's decisions, apart from its launches);
- API requests per reported epoch, counted in the API server's audit log by
  user: the operator's reads and writes, the sidecar's writes (the node
  double writes with the sidecar's patch), and status writes of both;
- operator CPU seconds and peak resident memory (from /proc);
- the largest HPOExperiment and HPOTrial object stored.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from kubernetes import client, config  # noqa: E402

from hpo_operator.resources import GROUP, VERSION  # noqa: E402

from support.control_plane import ControlPlane, ensure_binaries, free_port  # noqa: E402
from support.instant_node import InstantNode, decision_latencies, pod_latencies  # noqa: E402
from support.kube_tools import kubectl  # noqa: E402

TABLE = REPO / "bench" / "tables" / "digits_s44.json"
OPERATOR_USER, NODE_USER = "hpo-bench-operator", "hpo-bench-node"
TOKENS = {"bench-operator-token": (OPERATOR_USER, ["system:masters"]),
          "bench-node-token": (NODE_USER, ["system:masters"])}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass(frozen=True)
class Scenario:
    name: str
    experiments: int
    trials: int  # per experiment
    parallelism: int  # per experiment
    max_resource: int = 27
    scheduler: str = "asha"  # "fifo": every trial trains max_resource epochs (what an epoch costs alone)
    epoch_seconds: Optional[float] = None  # the pace, if not the default's (see epoch_seconds_for)
    searcher: str = "random"  # --searcher kde: what a model fitted per suggestion costs the operator;
    # "default": the manifest default's search (no searcher named, the scheduler only maxResource)


def scenarios(scale: float) -> list[Scenario]:
    def n(x: int) -> int:
        return max(2, int(x * scale))
    return [
        Scenario("running-10", 1, n(40), n(10)),
        Scenario("running-100", 1, n(400), n(100)),
        Scenario("running-1000", 1, n(3000), n(1000)),
        # The same at a pace this machine's control plane sustains with all 1,000 running (still a fast
        # epoch for a GPU): decision latency without a saturated API server.
        Scenario("running-1000-paced", 1, n(3000), n(1000), max_resource=9, epoch_seconds=30 * scale),
        Scenario("trials-10000", 1, n(10000), n(500), max_resource=9),
        Scenario("experiments-20", 20, n(60), n(10)),
        Scenario("long-runs-100", 1, n(100), n(100), scheduler="fifo"),
    ]


def epoch_seconds_for(s: Scenario, fixed: Optional[float] = None) -> float:
    # By default, keep the node double's own write rate near 100 epochs/s in total, so the
    # figures measure the operator, not a saturated bench process.
    return fixed or s.epoch_seconds or max(1.0, s.experiments * s.parallelism / 100.0)


def search_spec(s: Scenario, seed: int) -> tuple[dict, dict]:
    """The experiment's ``searcher`` and ``scheduler``. With ``searcher == "default"`` an ASHA scenario
    names no algorithm at all, as a user who writes only ``maxResource`` does, so it runs whatever the
    manifest default is (the adaptive scheduler over the gp today); FIFO scenarios stay FIFO."""
    default = s.searcher == "default"
    if s.scheduler != "asha":
        scheduler = {"algorithm": s.scheduler, "maxResource": s.max_resource}
    elif default:
        scheduler = {"maxResource": s.max_resource}
    else:
        scheduler = {"algorithm": "asha", "type": "promotion", "maxResource": s.max_resource}
    return ({"seed": seed} if default else {"algorithm": s.searcher, "seed": seed}), scheduler


def manifest(name: str, s: Scenario, seed: int) -> dict:
    searcher, scheduler = search_spec(s, seed)
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "HPOExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "val_error", "mode": "min"},
            "searchSpace": {"row": {"type": "randint", "min": 0, "max": 399}},
            "searcher": searcher,
            "scheduler": scheduler,
            "budget": {"maxTrials": s.trials, "parallelism": s.parallelism, "maxRetries": 0},
            "trialTemplate": {"spec": {"containers": [{
                "name": "trainer", "image": "hpo-trainer:bench", "command": ["python", "train.py"],
                "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}},
        },
    }


class OperatorProcess:
    def __init__(self, cp: ControlPlane, namespace: str, logdir: Path):
        kubeconfig = cp.kubeconfig_for_token("bench-operator-token", "bench-operator")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HPO_SIDECAR_IMAGE": "hpo-operator:bench",
               "MALLOC_ARENA_MAX": "2",  # as the operator image sets it
               "HPO_METRICS_PORT": str(free_port()),  # served, as the chart has it (another run may hold any fixed port)
               "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer_image"),
                                              os.environ.get("PYTHONPATH", "")])}
        self.log = open(logdir / f"operator-{namespace}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={namespace}",
                                      "-m", "hpo_operator.controller.handlers"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def usage(self) -> tuple[float, float]:
        """(CPU seconds, peak resident MiB) so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        peak_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return cpu, peak_kib / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def count_requests(audit_log: Path, start: int, end: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(audit_log, "rb") as f:
        f.seek(start)
        for line in f.read(end - start).splitlines():
            ev = json.loads(line)
            user = ev["user"]["username"]
            if user not in (OPERATOR_USER, NODE_USER):
                continue
            who = "operator" if user == OPERATOR_USER else "node"
            kind = "writes" if ev["verb"] in WRITE_VERBS else "reads"
            ref = ev.get("objectRef") or {}
            resource = ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else "")
            for key in (f"{who}.{kind}", f"{who}.{kind}.{resource}"):
                counts[key] = counts.get(key, 0) + 1
    return counts


@dataclass
class Result:
    scenario: str
    epoch_seconds: float
    trials: int
    max_running: int
    epochs: int
    seconds: float
    finished: bool
    decision_p50: float
    decision_p99: float
    pod_p50: float
    pod_p99: float
    operator_reads_per_epoch: float
    operator_writes_per_epoch: float
    operator_writes_per_trial: float
    sidecar_writes_per_epoch: float
    status_writes_per_epoch: float
    operator_cpu_seconds: float
    operator_peak_mib: float
    largest_trial_kib: float
    largest_experiment_kib: float
    node_errors: int
    outcomes: dict  # "phase/reason" -> experiments
    failures: list  # distinct messages of failed runs, if any
    write_breakdown: dict
    slow_decisions_at: dict  # seconds into the run (30 s bins) -> decisions slower than the p99 then


def run_scenario(cp: ControlPlane, admin: client.ApiClient, node: InstantNode, s: Scenario, timeout: float,
                 logdir: Path, pace: dict, epoch_seconds: Optional[float] = None) -> Result:
    core, custom = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
    ns = f"{s.name}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    pace[ns] = epoch_seconds_for(s, epoch_seconds)
    errors_before = len(node.errors)
    audit_start = cp.audit_log_path.stat().st_size
    operator = OperatorProcess(cp, ns, logdir)
    started = time.monotonic()
    names = [f"exp{i:02d}" for i in range(s.experiments)]
    for i, name in enumerate(names):
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "hpoexperiments", manifest(name, s, seed=i))
    finished = False
    while time.monotonic() - started < timeout:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "hpoexperiments")["items"]
        if all((it.get("status") or {}).get("phase") in ("Succeeded", "Failed") for it in items):
            finished = True
            break
        if operator.proc.poll() is not None:
            break
        time.sleep(2)
    seconds = time.monotonic() - started
    cpu, peak = operator.usage() if operator.proc.poll() is None else (float("nan"), float("nan"))
    operator.stop()
    time.sleep(1)  # let the audit log catch up with the last requests
    counts = count_requests(cp.audit_log_path, audit_start, cp.audit_log_path.stat().st_size)

    trials_raw = json.loads(custom.list_namespaced_custom_object(GROUP, VERSION, ns, "hpotrials",
                                                                 _preload_content=False).data)["items"]
    exps_raw = json.loads(custom.list_namespaced_custom_object(GROUP, VERSION, ns, "hpoexperiments",
                                                               _preload_content=False).data)["items"]
    epochs = sum(len((t.get("status") or {}).get("observations") or []) for t in trials_raw)
    decisions = decision_latencies(node.timeline, ns)
    pod_ends = pod_latencies(node.timeline, trials_raw)
    per_epoch = (lambda k: counts.get(k, 0) / epochs) if epochs else (lambda k: float("nan"))
    status_writes = counts.get("operator.writes.hpotrials/status", 0) + counts.get("node.writes.hpotrials/status", 0)
    core.delete_namespace(ns)
    return Result(
        scenario=s.name, epoch_seconds=pace[ns], trials=len(trials_raw), max_running=_max_running(node.timeline, ns), epochs=epochs,
        seconds=round(seconds, 1), finished=finished,
        decision_p50=_percentile(decisions, 50), decision_p99=_percentile(decisions, 99),
        pod_p50=_percentile(pod_ends, 50), pod_p99=_percentile(pod_ends, 99),
        operator_reads_per_epoch=per_epoch("operator.reads"), operator_writes_per_epoch=per_epoch("operator.writes"),
        operator_writes_per_trial=counts.get("operator.writes", 0) / len(trials_raw) if trials_raw else float("nan"),
        sidecar_writes_per_epoch=per_epoch("node.writes.hpotrials/status"),
        status_writes_per_epoch=status_writes / epochs if epochs else float("nan"),
        operator_cpu_seconds=cpu, operator_peak_mib=peak,
        largest_trial_kib=max((len(json.dumps(t)) for t in trials_raw), default=0) / 1024,
        largest_experiment_kib=max((len(json.dumps(e)) for e in exps_raw), default=0) / 1024,
        node_errors=len(node.errors) - errors_before,
        outcomes=_outcomes(exps_raw),
        failures=sorted({(t.get("status") or {}).get("message") or "" for t in trials_raw
                         if (t.get("status") or {}).get("failures")})[:5],
        write_breakdown={k.removeprefix("operator.writes."): v for k, v in sorted(counts.items())
                         if k.startswith("operator.writes.")},
        slow_decisions_at=_slow_decisions_at(node.timeline, ns, started, _percentile(decisions, 99)),
    )


def _slow_decisions_at(timeline, ns: str, started: float, threshold: float, bin_seconds: int = 30) -> dict:
    """When in the run the decisions slower than ``threshold`` came: a ramp-up, a periodic pause, or all along."""
    written = {(n, pod.rsplit("-", 1)[0], epoch): t for (n, pod, epoch), t in timeline.written.items() if n == ns}
    bins: dict[int, int] = {}
    for key, seen in timeline.decided.items():
        if key in written and seen - written[key] > threshold:
            b = int((written[key] - started) // bin_seconds * bin_seconds)
            bins[b] = bins.get(b, 0) + 1
    return dict(sorted(bins.items()))


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _outcomes(experiments: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in experiments:
        st = e.get("status") or {}
        key = f"{st.get('phase')}/{st.get('reason')}"
        out[key] = out.get(key, 0) + 1
    return out


def _max_running(timeline, ns: str) -> int:
    """Most pods of the namespace running at once, from the node double's created/done/deleted times."""
    changes = []
    for key, t in timeline.created.items():
        if key[0] != ns:
            continue
        end = min(x for x in (timeline.done.get(key), timeline.deleted.get(key), float("inf")) if x is not None)
        changes += [(t, 1), (end, -1)]
    running = best = 0
    for _, delta in sorted(changes):
        running += delta
        best = max(best, running)
    return best


def print_table(results: list[Result]) -> None:
    cols = [("scenario", "scenario", "{}"), ("epoch s", "epoch_seconds", "{:g}"), ("trials", "trials", "{}"), ("running", "max_running", "{}"),
            ("epochs", "epochs", "{}"), ("wall s", "seconds", "{}"), ("done", "finished", "{}"),
            ("decision p50 s", "decision_p50", "{:.3f}"), ("decision p99 s", "decision_p99", "{:.3f}"),
            ("pod p50 s", "pod_p50", "{:.3f}"), ("pod p99 s", "pod_p99", "{:.3f}"),
            ("op reads/ep", "operator_reads_per_epoch", "{:.2f}"),
            ("op writes/ep", "operator_writes_per_epoch", "{:.2f}"),
            ("op writes/trial", "operator_writes_per_trial", "{:.2f}"),
            ("sidecar w/ep", "sidecar_writes_per_epoch", "{:.2f}"),
            ("status w/ep", "status_writes_per_epoch", "{:.2f}"),
            ("op CPU s", "operator_cpu_seconds", "{:.1f}"), ("op peak MiB", "operator_peak_mib", "{:.0f}"),
            ("max trial KiB", "largest_trial_kib", "{:.1f}"), ("max exp KiB", "largest_experiment_kib", "{:.1f}")]
    print("| " + " | ".join(c[0] for c in cols) + " |")
    print("|" + "|".join(" --- " for _ in cols) + "|")
    for r in results:
        d = asdict(r)
        print("| " + " | ".join(fmt.format(d[key]) for _, key, fmt in cols) + " |")
    for r in results:
        print(f"{r.scenario}: outcomes {r.outcomes}; operator writes by resource {r.write_breakdown}; "
              f"node errors {r.node_errors}; decisions slower than p99, by second of the run {r.slow_decisions_at}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of every size")
    parser.add_argument("--only", nargs="*", help="scenario names to run")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per scenario before giving up")
    parser.add_argument("--epoch-seconds", type=float,
                        help="seconds per epoch in every scenario (default: scaled to ~100 epochs/s in total)")
    parser.add_argument("--searcher", choices=("random", "kde", "gp", "default"), default="random",
                        help="every experiment's searcher under ASHA (default random); 'default': the manifest "
                             "default's search, no searcher or scheduler algorithm named (the adaptive "
                             "scheduler over the gp)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/hpo-scale-bench"), help="operator logs go here")
    args = parser.parse_args(argv)
    chosen = [replace(s, searcher=args.searcher)
              for s in scenarios(0.1 if args.quick else 1.0) if not args.only or s.name in args.only]
    curves = json.loads(TABLE.read_text())["curves"]
    pace: dict[str, float] = {}
    results = []
    args.logs.mkdir(parents=True, exist_ok=True)
    with ControlPlane(ensure_binaries(), tokens=TOKENS, audit=True) as cp:
        kubectl(cp, "apply", "-f", str(REPO / "crds"))
        for crd in ("hpoexperiments.hpo.dev", "hpotrials.hpo.dev"):
            kubectl(cp, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        admin = config.new_client_from_config(str(cp.kubeconfig_path))
        node_api = config.new_client_from_config(str(cp.kubeconfig_for_token("bench-node-token", "bench-node")))
        node_api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 16
        with InstantNode(node_api, curves, lambda ns: pace.get(ns, 1.0)) as node:
            for s in chosen:
                print(f"running {s} ...", file=sys.stderr, flush=True)
                r = run_scenario(cp, admin, node, s, args.timeout, args.logs, pace, args.epoch_seconds)
                print(json.dumps(asdict(r)), file=sys.stderr, flush=True)
                results.append(r)
    print(f"searcher: {args.searcher}")
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.finished for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
