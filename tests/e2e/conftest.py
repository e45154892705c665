"""End-to-end tier: a real single-node cluster, the repo's images, the chart installed with Helm.

``tests/e2e/cluster.sh up`` brings the cluster up (kind where a Docker engine
answers, otherwise kubelet on containerd built from Debian packages);
``scripts/build-images.sh`` builds both images from the repo's Dockerfiles;
``cluster.sh load`` puts them on the node. Set HPO_E2E_KEEP=1 to leave the
cluster running after the session (for debugging with kubectl).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.kube_tools import kubectl
from support.paths import REPO

CLUSTER_SH = REPO / "tests" / "e2e" / "cluster.sh"
IMAGE_TAG = "e2e"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


def _run(cmd: list[str], timeout: float) -> str:
    """Run a setup step, streaming its progress (stderr) into pytest's output; return stdout."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}")
    return proc.stdout


@dataclass
class Cluster:
    kubeconfig_path: Path

    def kubectl(self, *args, check=True, input=None) -> subprocess.CompletedProcess:
        return kubectl(self, *args, check=check, input=input)


@pytest.fixture(scope="session")
def cluster():
    _run([str(CLUSTER_SH), "up"], timeout=1800)
    kubeconfig = Path(_run([str(CLUSTER_SH), "kubeconfig"], timeout=60).strip().splitlines()[-1])
    yield Cluster(kubeconfig)
    if os.environ.get("HPO_E2E_KEEP") != "1":
        _run([str(CLUSTER_SH), "down"], timeout=300)


@pytest.fixture(scope="session")
def images(cluster):
    """Both images, built from the repo's Dockerfiles and loaded into the node."""
    out = _run([str(REPO / "scripts" / "build-images.sh"), "--tag", IMAGE_TAG], timeout=2400)
    archives = [line for line in out.splitlines() if line.endswith(".tar")]
    assert len(archives) == 2, out
    _run([str(CLUSTER_SH), "load", *archives], timeout=900)
    return {"operator": f"hpo-operator:{IMAGE_TAG}", "trainer": f"hpo-trainer:{IMAGE_TAG}"}
