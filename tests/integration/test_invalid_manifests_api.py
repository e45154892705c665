"""Every invalid manifest of the corpus, applied with kubectl to the real API server with the operator running.

Each must be refused where a user looks: by ``kubectl apply`` (CRD schema, name
rules) or by the operator (phase Failed, a Succeeded=False condition and a
Warning Event), the message naming the field, and nothing created for it.
One operator and one namespace for the whole corpus, so the test stays fast.
"""

from __future__ import annotations

import pytest

from support.bad_input import (
    OPERATOR_REASONS, REFUSED_BY_OPERATOR, REFUSED_BY_SCHEMA, apply_file, classify, corpus,
)
from support.operator_process import Operator

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def outcomes(crds_installed, kube_api, tmp_path_factory):
    from kubernetes import client

    namespace = "invalid-corpus"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    operator = Operator(crds_installed, namespace, tmp_path_factory.mktemp("operator"))
    operator.start()
    try:
        applied = [apply_file(crds_installed, namespace, path) for path in corpus()]
        yield {o.file: classify(kube_api, namespace, o) for o in applied}, operator
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


def test_both_layers_refuse_something_and_the_operator_stays_healthy(outcomes):
    verdicts = {o.verdict for o in outcomes[0].values()}
    assert verdicts == {REFUSED_BY_SCHEMA, REFUSED_BY_OPERATOR}
    assert "Traceback" not in outcomes[1].logs()
