"""Integration tier: a real etcd + kube-apiserver + kube-controller-manager (no kubelet).

The Kubernetes binaries are built from Debian's source package on first use
by scripts/k8s-binaries.sh and cached under ~/.cache/hpo-operator.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from support.control_plane import ControlPlane, ensure_binaries
from support.kube_tools import install_crds
from support.operator_process import Operator


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def control_plane():
    with ControlPlane(ensure_binaries()) as cp:
        yield cp


@pytest.fixture(scope="session")
def kube_api(control_plane):
    from kubernetes import client, config

    api = config.new_client_from_config(str(control_plane.kubeconfig_path))
    yield api
    api.close()


@pytest.fixture(scope="session")
def crds_installed(control_plane):
    """The project's CRDs from crds/, applied and Established."""
    install_crds(control_plane)
    return control_plane


@pytest.fixture
def namespace(control_plane, kube_api, request):
    """A fresh namespace per test, ready for pods (its default ServiceAccount made), deleted afterwards."""
    from kubernetes import client

    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    control_plane.wait_default_service_account(name, timeout=60)
    yield name
    core.delete_namespace(name)


@pytest.fixture
def operator(crds_installed, namespace, tmp_path):
    """The operator as a real ``kopf run`` process watching the test's namespace."""
    op = Operator(crds_installed, namespace, tmp_path)
    op.start()
    yield op
    op.stop()
