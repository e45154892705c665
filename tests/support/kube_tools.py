"""Small helpers for tests that talk to a real API server."""

from __future__ import annotations

import json
import subprocess
import time

from kubernetes import client

from hpo_operator.resources import EXPERIMENT_PLURAL, GROUP, TRIAL_PLURAL, VERSION
from support.paths import REPO


def kubectl(control_plane, *args, check=True, input=None) -> subprocess.CompletedProcess:
    """Run the real kubectl against ``control_plane`` (anything with a ``kubeconfig_path``)."""
    return subprocess.run(["kubectl", "--kubeconfig", str(control_plane.kubeconfig_path), *args],
                          capture_output=True, text=True, check=check, input=input)


def install_crds(control_plane) -> None:
    """The project's CRDs from crds/, applied and Established (served) before this returns."""
    kubectl(control_plane, "apply", "-f", str(REPO / "crds"))
    for name in (f"{EXPERIMENT_PLURAL}.{GROUP}", f"{TRIAL_PLURAL}.{GROUP}"):
        kubectl(control_plane, "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def apply(control_plane, namespace: str, doc: dict) -> None:
    """``kubectl apply`` one object (a dict) in ``namespace``, as a user would."""
    kubectl(control_plane, "apply", "-n", namespace, "-f", "-", input=json.dumps(doc))


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def experiment(api, namespace: str, name: str) -> dict:
    """One HPOExperiment as the API server has it."""
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                     EXPERIMENT_PLURAL, name)


def trials(api, namespace: str) -> list[dict]:
    """The namespace's HPOTrials, in trial id order."""
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                       TRIAL_PLURAL)["items"]
    return sorted(items, key=lambda t: t["spec"]["trialId"])


def finished(api, namespace: str, name: str) -> bool:
    """Whether the experiment has ended (Succeeded or Failed)."""
    return (experiment(api, namespace, name).get("status") or {}).get("phase") in ("Succeeded", "Failed")
