"""Every invalid manifest of the corpus, applied with kubectl to the real API server with the operator running.

Each must be refused where a user looks: by ``kubectl apply`` (CRD schema, name
rules) or by the operator (phase Failed, a Succeeded=False condition and a
Warning Event), the message naming the field, and nothing created for it.
One operator and one namespace for the whole corpus, so the test stays fast.
"""

from __future__ import annotations

import pytest
import yaml

from support.bad_input import (
    OPERATOR_REASONS, REFUSED_BY_OPERATOR, REFUSED_BY_SCHEMA, apply_file, classify, corpus,
)
from support.operator_process import Operator

pytestmark = pytest.mark.timeout(300)
# A template the validator passes but the API server refuses (its pod rules are the server's own).
SERVER_ONLY_RULE = {
    "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment", "metadata": {"name": "server-only-rule"},
    "spec": {"objective": {"metric": "val_error"}, "searchSpace": {"lr": {"type": "uniform", "min": 0, "max": 1}},
             "scheduler": {"maxResource": 3},
             "trialTemplate": {"spec": {"containers": [
                 {"name": "trainer", "image": "trainer:1", "imagePullPolicy": "Sometimes"}]}}},
}


@pytest.fixture(scope="module")
def outcomes(crds_installed, kube_api, tmp_path_factory):
    from kubernetes import client

    namespace = "invalid-corpus"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    crds_installed.wait_default_service_account(namespace, timeout=60)
    operator = Operator(crds_installed, namespace, tmp_path_factory.mktemp("operator"))
    operator.start()
    server_only = tmp_path_factory.mktemp("manifests") / "server-only-rule.yaml"
    server_only.write_text("# expect: spec.containers[0].imagePullPolicy\n" + yaml.safe_dump(SERVER_ONLY_RULE))
    try:
        applied = [apply_file(crds_installed, namespace, path) for path in corpus() + [server_only]]
        yield {o.file: classify(kube_api, namespace, o) for o in applied}, operator, core
    finally:
        operator.stop()
        core.delete_namespace(namespace)


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.stem)
def test_invalid_manifest_is_refused_naming_the_field(outcomes, path):
    outcome = outcomes[0][path.stem]
    assert outcome.verdict in (REFUSED_BY_SCHEMA, REFUSED_BY_OPERATOR), outcome
    assert outcome.names_field, outcome
    if outcome.verdict == REFUSED_BY_OPERATOR:
        assert outcome.reason in OPERATOR_REASONS, outcome
        assert outcome.condition and outcome.condition["status"] == "False", outcome
        assert outcome.expect in outcome.condition["message"], outcome
        assert any(outcome.expect in message for message in outcome.events), outcome
        assert (outcome.trials, outcome.pods) == (0, 0), outcome


def test_a_template_only_the_api_server_refuses_fails_the_experiment_with_nothing_created(outcomes):
    outcome = outcomes[0]["server-only-rule"]
    assert (outcome.verdict, outcome.reason) == (REFUSED_BY_OPERATOR, "InvalidTrialTemplate"), outcome
    assert outcome.names_field and "spec.trialTemplate" in outcome.message, outcome
    assert any(outcome.expect in message for message in outcome.events), outcome
    assert (outcome.trials, outcome.pods) == (0, 0), outcome
    claims = outcomes[2].list_namespaced_persistent_volume_claim("invalid-corpus").items
    assert not [c.metadata.name for c in claims if c.metadata.name.startswith(outcome.name)]


def test_both_layers_refuse_something_and_the_operator_stays_healthy(outcomes):
    verdicts = {o.verdict for o in outcomes[0].values()}
    assert verdicts == {REFUSED_BY_SCHEMA, REFUSED_BY_OPERATOR}
    assert "Traceback" not in outcomes[1].logs()
