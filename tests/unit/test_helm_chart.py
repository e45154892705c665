"""The Helm chart: lints clean, renders least-privilege RBAC and a hardened operator pod.

Helm v4 runs in-process through the `helm-python-sdk` package (its C library),
so no helm binary is needed.
"""

from __future__ import annotations

import re

import pytest
import yaml

from support.paths import REPO

import helm_python as helm  # a test dependency: without it the chart tests fail, never skip
CHART = REPO / "helm" / "hpo-operator"


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def render(chart, **values) -> dict[str, dict]:
    out = chart.render(values, name="hpo", namespace="hpo-system", is_install=True)
    docs = {}
    for path, text in out.items():
        if path.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                if doc:
                    docs[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def test_chart_lints_without_warnings():
    report = helm.lint(str(CHART), strict=True)
    assert report["errors"] == []
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]


def test_default_install_watches_all_namespaces_with_a_cluster_role(chart):
    docs = render(chart)
    assert set(docs) == {"ServiceAccount/hpo-hpo-operator", "ClusterRole/hpo-hpo-operator",
                         "ClusterRoleBinding/hpo-hpo-operator", "Deployment/hpo-hpo-operator",
                         "Service/hpo-hpo-operator-metrics"}
    args = docs["Deployment/hpo-hpo-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and "hpo_operator.controller.handlers" in args
    # kopf watches every namespace with one cluster-wide watch per resource and scans for no CRDs
    resources = {r for rule in docs["ClusterRole/hpo-hpo-operator"]["rules"] for r in rule["resources"]}
    assert "namespaces" not in resources and "customresourcedefinitions" not in resources


def test_one_namespace_install_gets_a_role_there_only(chart):
    docs = render(chart, watchNamespace="team-a")
    role = docs["Role/hpo-hpo-operator"]
    assert role["metadata"]["namespace"] == "team-a"
    assert not any(k.startswith("Cluster") for k in docs)
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "namespaces" not in resources and "customresourcedefinitions" not in resources
    container = docs["Deployment/hpo-hpo-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=team-a" in container["args"]
    assert {"name": "HPO_NAMESPACE", "value": "team-a"} in container["env"]


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "team-a"}], ids=["cluster", "one-namespace"])
def test_rbac_has_no_wildcards_and_every_rule_says_why(chart, values):
    roles = {name: doc for name, doc in render(chart, **values).items() if doc["kind"] in ("Role", "ClusterRole")}
    assert roles
    for name, doc in roles.items():
        for rule in doc["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (name, rule)
    template = (CHART / "templates" / "rbac.yaml").read_text().splitlines()
    for i, line in enumerate(template):
        if line.strip().startswith("- apiGroups:"):
            assert template[i - 1].strip().startswith("#"), f"rbac.yaml line {i + 1}: rule without a comment"


def test_operator_pod_is_hardened_single_and_probed(chart):
    deploy = render(chart)["Deployment/hpo-hpo-operator"]
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"
    pod = deploy["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["image"] == "hpo-operator:0.1.0"


def test_metrics_are_served_on_their_own_port_behind_a_service_that_selects_the_operator_pod(chart):
    docs = render(chart)
    pod = docs["Deployment/hpo-hpo-operator"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {"name": "HPO_METRICS_PORT", "value": "8000"} in container["env"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8000}
    service = docs["Service/hpo-hpo-operator-metrics"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert not any(d["kind"] == "ServiceMonitor" for d in docs.values())  # off by default


def test_metrics_can_be_turned_off_and_then_nothing_listens(chart):
    docs = render(chart, metrics={"enabled": False})
    container = docs["Deployment/hpo-hpo-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "HPO_METRICS_PORT", "value": "0"} in container["env"]
    assert [p["name"] for p in container["ports"]] == ["health"]
    assert not any(d["kind"] == "Service" for d in docs.values())


def test_the_service_monitor_scrapes_the_metrics_service_only(chart):
    docs = render(chart, metrics={"port": 9300, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}})
    monitor, service = docs["ServiceMonitor/hpo-hpo-operator"], docs["Service/hpo-hpo-operator-metrics"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    # (the Deployment's pod has the release's labels too, but no component: only the Service matches)
    assert "app.kubernetes.io/component" in monitor["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["hpo-system"]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    container = docs["Deployment/hpo-hpo-operator"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "HPO_METRICS_PORT", "value": "9300"} in container["env"]
    with pytest.raises(Exception, match="metrics.serviceMonitor.enabled needs metrics.enabled"):
        render(chart, metrics={"enabled": False, "serviceMonitor": {"enabled": True}})


def test_values_schema_names_the_bad_value(chart):
    with pytest.raises(helm.HelmValuesError, match="pullPolicy"):
        chart.validate_schema({"image": {"repository": "x", "pullPolicy": "Sometimes"}})
    with pytest.raises(helm.HelmValuesError, match="watchNamespace"):
        chart.validate_schema({"watchNamespace": "Not_A_Namespace"})
    with pytest.raises(helm.HelmValuesError, match="metrics.port"):
        chart.validate_schema({"metrics": {"port": 8080}})  # the liveness endpoint's
    with pytest.raises(helm.HelmValuesError, match="metrics.service.type"):
        chart.validate_schema({"metrics": {"service": {"type": "Headless"}}})
    with pytest.raises(helm.HelmValuesError, match="metrics"):
        chart.validate_schema({"metrics": {"prot": 9000}})
    chart.validate_schema({"watchNamespace": "team-a", "logLevel": "debug"})
    chart.validate_schema({"metrics": {"port": 9300, "serviceMonitor": {"enabled": True, "interval": "1m30s"}}})


def test_every_value_is_documented_and_in_the_schema():
    values = (CHART / "values.yaml").read_text()
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    for key in yaml.safe_load(values):
        assert key in schema["properties"], key
        assert re.search(rf"^# {key} -- ", values, re.M), f"values.yaml: {key} has no comment starting with its name"
