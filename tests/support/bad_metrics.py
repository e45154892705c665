"""Metric-line garbage for the REAL sidecar process, with its own ServiceAccount's token.

``run_garbage`` writes a metrics file with every way a trainer can get a line
wrong between valid epochs, rewrites the file under the reader half-way, runs
``python -m hpo_operator.sidecar`` on it against the real API server, and
returns what the trial recorded. The integration test
(tests/integration/test_sidecar_garbage.py) asserts on it; the reliability
report (bench/reliability.py) prints it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from hpo_operator.controller.builders import SIDECAR_ACCOUNT, sidecar_rbac
from hpo_operator.resources import API_VERSION, GROUP, TRIAL_KIND, TRIAL_PLURAL, VERSION
from hpo_operator.sidecar.contract import SidecarEnv
from support.kube_tools import kubectl, wait_for

TRIAL = "garbage-0000"
GARBAGE = [
    b"Epoch 3/10 - loss: 0.41 - val_error: 0.3",  # a progress bar, not JSON
    b'{"val_error": 0.3}',  # no epoch
    b'{"epoch": 1, "val_error": 0.9}',  # backwards / repeated
    b'{"epoch": 99, "val_loss": 0.3}',  # objective missing
    b"\x00\xff\xfe binary \x1b[31m garbage \x00",  # invalid UTF-8 and NUL bytes
    b"x" * (10 * 1024 * 1024),  # a 10 MB line
    b'{"epoch": ' + b"9" * 5000 + b"}",  # an integer the JSON parser refuses
]
EXPECTED_REASONS = {"not_json", "missing_epoch", "epoch_not_increasing", "missing_objective", "not_utf8",
                    "line_too_long", "metrics_file_truncated"}
# (epoch, what the trial must record): NaN and infinities become null, which ranks worst.
VALID = [(1, b"0.9", 0.9), (2, b"0.8", 0.8), (3, b"NaN", None), (4, b"Infinity", None), (5, b'"-inf"', None)]
AFTER_REWRITE = (6, 0.4)


@dataclass
class GarbageOutcome:
    lines: int  # lines written, garbage included
    garbage: int  # of them, lines that must be skipped (and one file rewrite)
    valid: int  # epochs that must be recorded
    recorded: list  # (epoch, value) on record
    expected: list  # (epoch, value) that must be on record
    problems: list  # the trial's status.problems
    exit_code: int
    log: str
    events: int  # events in the namespace (the sidecar may post none)

    @property
    def lost(self) -> int:
        return len([e for e in self.expected if e not in self.recorded])

    @property
    def extra(self) -> int:
        return len(self.recorded) - len(self.expected) + self.lost

    @property
    def reasons(self) -> list[str]:
        return [p["reason"] for p in self.problems]


def sidecar_kubeconfig(cp, core: client.CoreV1Api, namespace: str) -> Path:
    """A kubeconfig with the sidecar ServiceAccount's own token, so its Role is what is exercised."""
    def token_secret():
        sa = core.read_namespaced_service_account(SIDECAR_ACCOUNT, namespace)
        return sa.secrets[0].name if sa.secrets else None
    secret = core.read_namespaced_secret(wait_for(token_secret, 30, what="the sidecar's token"), namespace)
    return cp.kubeconfig_for_token(base64.b64decode(secret.data["token"]).decode(), f"sidecar-{namespace}")


def trial_status(custom: client.CustomObjectsApi, namespace: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, TRIAL_PLURAL, TRIAL).get("status") or {}


def run_garbage(cp, api: client.ApiClient, namespace: str, workdir: Path) -> GarbageOutcome:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    kubectl(cp, "apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": sidecar_rbac(namespace)}))
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, TRIAL_PLURAL, {
        "apiVersion": API_VERSION, "kind": TRIAL_KIND, "metadata": {"name": TRIAL},
        "spec": {"experiment": "garbage", "trialId": 0, "config": {}}})
    # What the operator writes when it creates a trial.
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, TRIAL_PLURAL, TRIAL, {
        "status": {"phase": "Running", "observations": [], "processed": 0, "problems": [], "problemsPosted": 0}})

    metrics = workdir / "metrics.jsonl"
    lines = []
    for epoch, raw, _ in VALID:
        lines += ([] if epoch <= 2 else GARBAGE) + [b'{"epoch": %d, "val_error": %s}' % (epoch, raw)]
    metrics.write_bytes(b"".join(raw + b"\n" for raw in lines))
    sidecar = SidecarEnv(trial=TRIAL, objective="val_error", metrics_file=str(metrics),
                         control_file=str(workdir / "control.json"), attempt=1, token_dir=str(workdir / "no-token"),
                         namespace=namespace, poll_seconds=0.1, watch_processes=False)
    env = {**os.environ, **sidecar.to_environ(), "KUBECONFIG": str(sidecar_kubeconfig(cp, core, namespace))}
    log = workdir / "sidecar.log"
    with log.open("wb") as out:
        sidecar = subprocess.Popen([sys.executable, "-m", "hpo_operator.sidecar"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    expected = [(epoch, value) for epoch, _, value in VALID]
    try:
        def epochs():
            return [o["epoch"] for o in trial_status(custom, namespace).get("observations") or []]
        wait_for(lambda: epochs() == [e for e, _ in expected], 60, what="the valid lines to be recorded")
        # The trainer rewrites the file from scratch (shorter than what was read): nothing recorded is lost.
        epoch, value = AFTER_REWRITE
        metrics.write_bytes(b'{"epoch": %d, "val_error": %r}\n' % (epoch, value))
        expected.append(AFTER_REWRITE)
        wait_for(lambda: epochs() == [e for e, _ in expected], 30, what="the line after the rewrite")
        metrics.with_name(metrics.name + ".exit").write_text("0")  # the trainer has ended
        code = sidecar.wait(30)
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.wait()
    status = trial_status(custom, namespace)
    return GarbageOutcome(
        lines=len(lines) + 1, garbage=len(lines) - len(VALID) + 1, valid=len(expected),
        recorded=[(o["epoch"], o.get("value")) for o in status.get("observations") or []], expected=expected,
        problems=status.get("problems") or [], exit_code=code, log=log.read_text(errors="replace"),
        events=len(core.list_namespaced_event(namespace).items))
