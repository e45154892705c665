"""Least privilege, asked of the real API server's RBAC authorizer.

The chart's RBAC for the operator's ServiceAccount is rendered with Helm and
applied; the trial sidecar's Role and binding (what the operator creates in
each experiment namespace) are then created *as the operator* (so the API
server's escalation check proves the operator can grant them). ``kubectl auth
can-i --as`` then says what each identity may do.
"""

from __future__ import annotations

import json
import uuid

import helm_python as helm
import pytest
import yaml

from hpo_operator.controller.builders import SIDECAR_ACCOUNT, sidecar_rbac
from support.kube_tools import kubectl
from support.paths import REPO

CHART = REPO / "helm" / "hpo-operator"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
# What every authenticated identity may do (asking the API server about itself).
SELF_REVIEWS = {"selfsubjectaccessreviews.authorization.k8s.io", "selfsubjectrulesreviews.authorization.k8s.io"}


def chart_rbac(release: str, namespace: str) -> list[dict]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render({}, name=release, namespace=namespace, is_install=True)
    docs = [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    return [d for d in docs if d["kind"] in RBAC_KINDS]


@pytest.fixture
def operator_account(crds_installed, namespace):
    """The chart's ServiceAccount, ClusterRole and binding, installed as release ``rbac-<random>``."""
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    docs = chart_rbac(release, namespace)
    kubectl(crds_installed, "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    account = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    yield f"system:serviceaccount:{namespace}:{account}"
    for doc in docs:
        if doc["kind"].startswith("Cluster"):
            kubectl(crds_installed, "delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)


def can(cp, who: str, verb: str, resource: str, namespace: str = "", subresource: str = "") -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={who}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    args += [f"--subresource={subresource}"] if subresource else []
    out = kubectl(cp, *args, check=False)
    assert out.stdout.strip() in ("yes", "no"), (args, out.stdout, out.stderr)
    return out.stdout.strip() == "yes"


def granted(cp, who: str, namespace: str) -> dict[str, set[str]]:
    """Resource -> verbs, as the API server lists them for ``who`` in ``namespace`` (a SelfSubjectRulesReview)."""
    lines = kubectl(cp, "auth", "can-i", "--list", "-n", namespace, f"--as={who}").stdout.splitlines()
    out: dict[str, set[str]] = {}
    for line in lines[1:]:
        if not line or line[0].isspace():
            continue  # non-resource URLs (/api, /version, ...)
        fields = line.split()
        verbs = line[line.rindex("[") + 1:line.rindex("]")].split()
        out.setdefault(fields[0], set()).update(verbs)
    return out


def test_sidecar_may_read_trials_and_patch_their_status_and_nothing_else(crds_installed, namespace,
                                                                         operator_account):
    objs = sidecar_rbac(namespace)
    # Created as the operator: the API server only lets it grant what it holds itself.
    kubectl(crds_installed, "apply", "-n", namespace, f"--as={operator_account}", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
    sidecar = f"system:serviceaccount:{namespace}:{SIDECAR_ACCOUNT}"
    cp = crds_installed

    assert can(cp, sidecar, "get", "hpotrials.hpo.dev", namespace)
    assert can(cp, sidecar, "patch", "hpotrials.hpo.dev", namespace, subresource="status")
    for verb, resource, sub in [
        ("create", "events", ""), ("create", "events.events.k8s.io", ""),
        ("get", "pods", ""), ("list", "pods", ""), ("create", "pods", ""), ("create", "pods", "exec"),
        ("get", "secrets", ""), ("list", "secrets", ""), ("get", "configmaps", ""),
        ("update", "hpotrials.hpo.dev", ""), ("patch", "hpotrials.hpo.dev", ""),
        ("delete", "hpotrials.hpo.dev", ""), ("create", "hpotrials.hpo.dev", ""),
        ("update", "hpotrials.hpo.dev", "status"),
        ("get", "hpoexperiments.hpo.dev", ""), ("patch", "hpoexperiments.hpo.dev", "status"),
        ("create", "serviceaccounts", "token"), ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ]:
        assert not can(cp, sidecar, verb, resource, namespace, sub), (verb, resource, sub)
    assert not can(cp, sidecar, "get", "hpotrials.hpo.dev", "default")  # its own namespace only

    # The complete list: beyond what every identity may do, exactly the two grants.
    nobody = granted(cp, f"system:serviceaccount:{namespace}:nobody", namespace)
    extra = {res: verbs - nobody.get(res, set()) for res, verbs in granted(cp, sidecar, namespace).items()}
    assert {res: verbs for res, verbs in extra.items() if verbs} == {
        "hpotrials.hpo.dev": {"get"}, "hpotrials.hpo.dev/status": {"patch"}}


def test_operator_runs_experiments_but_cannot_read_secrets(crds_installed, namespace, operator_account):
    cp, op = crds_installed, operator_account
    for verb, resource, sub in [
        ("watch", "hpoexperiments.hpo.dev", ""), ("patch", "hpoexperiments.hpo.dev", "status"),
        ("create", "hpotrials.hpo.dev", ""), ("patch", "hpotrials.hpo.dev", "status"),
        ("create", "pods", ""), ("deletecollection", "pods", ""), ("create", "persistentvolumeclaims", ""),
        ("deletecollection", "persistentvolumeclaims", ""),
        ("create", "events", ""), ("list", "events", ""), ("create", "roles.rbac.authorization.k8s.io", ""),
    ]:
        assert can(cp, op, verb, resource, namespace, sub), (verb, resource, sub)
    for verb, resource, sub in [
        ("get", "secrets", ""), ("list", "secrets", ""), ("watch", "secrets", ""),
        ("create", "pods", "exec"), ("get", "pods", "log"), ("create", "serviceaccounts", "token"),
        ("delete", "hpoexperiments.hpo.dev", ""), ("update", "customresourcedefinitions.apiextensions.k8s.io", ""),
        ("create", "clusterroles.rbac.authorization.k8s.io", ""), ("get", "nodes", ""),
        ("create", "namespaces", ""), ("escalate", "roles.rbac.authorization.k8s.io", ""),
        ("bind", "roles.rbac.authorization.k8s.io", ""),
    ]:
        assert not can(cp, op, verb, resource, namespace, sub), (verb, resource, sub)
    assert not can(cp, op, "list", "secrets")  # in no namespace
    for resource, verbs in granted(cp, op, namespace).items():
        assert "*" not in verbs and not resource.startswith("*"), (resource, verbs)
