"""The REAL sidecar process, with its own ServiceAccount's token, on a garbage-laden metrics file.

Against the real API server: every valid line becomes one observation, each kind
of problem is recorded once in the trial's status (the only thing the sidecar may
write), the file rewritten under it loses nothing, and the process ends normally.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from kubernetes import client

from hpo_operator.controller.builders import SIDECAR_ACCOUNT, sidecar_rbac
from support.kube_tools import kubectl, wait_for

pytestmark = pytest.mark.timeout(180)
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


def sidecar_kubeconfig(cp, core: client.CoreV1Api, namespace: str):
    """A kubeconfig with the sidecar ServiceAccount's own token, so its Role is what is exercised."""
    def token_secret():
        sa = core.read_namespaced_service_account(SIDECAR_ACCOUNT, namespace)
        return sa.secrets[0].name if sa.secrets else None
    secret = core.read_namespaced_secret(wait_for(token_secret, 30, what="the sidecar's token"), namespace)
    return cp.kubeconfig_for_token(base64.b64decode(secret.data["token"]).decode(), f"sidecar-{namespace}")


def trial_status(custom: client.CustomObjectsApi, namespace: str) -> dict:
    return custom.get_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpotrials", TRIAL).get("status") or {}


def test_real_sidecar_keeps_every_valid_line_and_records_each_problem_once(crds_installed, namespace, kube_api,
                                                                          tmp_path):
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    kubectl(crds_installed, "apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": sidecar_rbac(namespace)}))
    custom.create_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpotrials", {
        "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOTrial", "metadata": {"name": TRIAL},
        "spec": {"experiment": "garbage", "trialId": 0, "config": {}}})
    # What the operator writes when it creates a trial.
    custom.patch_namespaced_custom_object_status("hpo.dev", "v1alpha1", namespace, "hpotrials", TRIAL, {
        "status": {"phase": "Running", "observations": [], "processed": 0, "problems": [], "problemsPosted": 0}})

    metrics = tmp_path / "metrics.jsonl"
    lines = [b'{"epoch": 1, "val_error": 0.9}', b'{"epoch": 2, "val_error": 0.8}']
    for good in (b'{"epoch": 3, "val_error": NaN}', b'{"epoch": 4, "val_error": Infinity}',
                 b'{"epoch": 5, "val_error": "-inf"}'):
        lines += GARBAGE + [good]  # the same garbage every epoch
    metrics.write_bytes(b"".join(raw + b"\n" for raw in lines))
    env = {**os.environ, "HPO_TRIAL": TRIAL, "HPO_ATTEMPT": "1", "HPO_OBJECTIVE": "val_error",
           "HPO_METRICS_FILE": str(metrics), "HPO_CONTROL_FILE": str(tmp_path / "control.json"),
           "HPO_NAMESPACE": namespace, "KUBECONFIG": str(sidecar_kubeconfig(crds_installed, core, namespace)),
           "HPO_TOKEN_DIR": str(tmp_path / "no-token"), "HPO_SIDECAR_WATCH_PROCESSES": "0", "HPO_SIDECAR_POLL": "0.1"}
    log = tmp_path / "sidecar.log"
    with log.open("wb") as out:
        sidecar = subprocess.Popen([sys.executable, "-m", "hpo_operator.sidecar"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        epochs = lambda: [o["epoch"] for o in trial_status(custom, namespace).get("observations") or []]  # noqa: E731
        wait_for(lambda: epochs() == [1, 2, 3, 4, 5], 60, what="the valid lines to be recorded")
        # The trainer rewrites the file from scratch (shorter than what was read): nothing recorded is lost.
        metrics.write_bytes(b'{"epoch": 6, "val_error": 0.4}\n')
        wait_for(lambda: epochs() == [1, 2, 3, 4, 5, 6], 30, what="the line after the rewrite")
        metrics.with_name(metrics.name + ".exit").write_text("0")  # the trainer has ended
        assert sidecar.wait(30) == 0, log.read_text(errors="replace")
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.wait()

    status = trial_status(custom, namespace)
    assert [(o["epoch"], o.get("value")) for o in status["observations"]] == [
        (1, 0.9), (2, 0.8), (3, None), (4, None), (5, None), (6, 0.4)]  # non-finite: null (dropped), ranks worst
    reasons = [p["reason"] for p in status["problems"]]
    assert sorted(reasons) == sorted(EXPECTED_REASONS), status["problems"]  # each kind once, not once per line
    assert all(p["attempt"] == 1 and p["message"].isprintable() for p in status["problems"]), status["problems"]
    assert "Traceback" not in log.read_text(errors="replace")
    # The sidecar posted no Event itself (its Role does not allow it); the operator announces problems.
    assert core.list_namespaced_event(namespace).items == []
