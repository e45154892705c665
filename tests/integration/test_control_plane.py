"""The integration tier's API server behaves like a real cluster's: schemas, status, GC, RBAC, kopf."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.kube_tools import kubectl, wait_for
from support.paths import REPO

pytestmark = pytest.mark.timeout(180)


def test_hpo_crds_install_with_category_and_short_names(crds_installed):
    out = kubectl(crds_installed, "api-resources", "--api-group=hpo.dev", "-o", "wide").stdout
    assert "hpx" in out and "hpt" in out and "hpo" in out


def test_schema_rejects_a_bad_manifest_naming_the_field(crds_installed, namespace):
    bad = (REPO / "tests" / "data" / "invalid_manifests" / "parallelism-zero.yaml").read_text()
    result = kubectl(crds_installed, "apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "spec.budget.parallelism" in result.stderr


def test_status_subresource_and_printer_columns(crds_installed, namespace, kube_api):
    good = (REPO / "examples" / "digits-asha.yaml").read_text()
    kubectl(crds_installed, "apply", "-n", namespace, "-f", "-", input=good)
    api = client.CustomObjectsApi(kube_api)
    api.patch_namespaced_custom_object_status(
        "hpo.dev", "v1alpha1", namespace, "hpoexperiments", "digits-asha",
        {"status": {"phase": "Running", "trials": {"running": 2, "completed": 1}, "bestValue": "0.0312"}})
    table = kubectl(crds_installed, "get", "hpo", "-n", namespace).stdout
    assert "Running" in table and "0.0312" in table


def test_garbage_collection_removes_owned_objects(crds_installed, namespace, kube_api):
    core = client.CoreV1Api(kube_api)
    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner")))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="child", owner_references=[ref])))
    core.delete_namespaced_config_map("owner", namespace)

    def child_gone():
        try:
            core.read_namespaced_config_map("child", namespace)
            return False
        except ApiException as err:
            return err.status == 404
    wait_for(child_gone, 60, what="the controller manager to collect the owned ConfigMap")


def test_kopf_operator_handles_events_against_this_server(crds_installed, namespace, kube_api, tmp_path):
    handler = tmp_path / "smoke_operator.py"
    handler.write_text(textwrap.dedent("""
        import kopf

        @kopf.on.startup()
        def configure(settings, **_):
            settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="smoke.hpo.dev")
            settings.persistence.finalizer = "smoke.hpo.dev/finalizer"

        @kopf.on.create("hpo.dev", "v1alpha1", "hpoexperiments")
        def created(patch, **_):
            patch.status["phase"] = "Running"
            patch.status["message"] = "seen by kopf"
    """))
    env = {**os.environ, "KUBECONFIG": str(crds_installed.kubeconfig_path)}
    proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={namespace}",
                             str(handler)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        kubectl(crds_installed, "apply", "-n", namespace, "-f", str(REPO / "examples" / "digits-asha.yaml"))
        api = client.CustomObjectsApi(kube_api)
        wait_for(lambda: (api.get_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpoexperiments",
                                                           "digits-asha").get("status") or {}).get("message")
                 == "seen by kopf", 60, what="kopf to patch the status")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out
