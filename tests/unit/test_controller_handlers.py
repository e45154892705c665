"""What the operator asks of kopf for each watch event: only experiments keep a diff base (a deep copy of
the object kopf compares against to find changes); trials and pods feed the indexes alone."""

from __future__ import annotations

import kopf

from hpo_operator.controller.handlers import ExperimentsDiffBaseStorage


def body(kind: str) -> kopf.Body:
    return kopf.Body({
        "apiVersion": "hpo.dev/v1alpha1" if kind.startswith("HPO") else "v1", "kind": kind,
        "metadata": {"name": "x", "namespace": "ns", "labels": {"app": "a"}},
        "spec": {"experiment": "exp"}, "status": {"observations": [{"epoch": e, "value": 0.5} for e in range(1, 28)]},
    })


def test_trials_and_pods_get_no_diff_base_and_experiments_keep_theirs():
    storage = ExperimentsDiffBaseStorage(prefix="hpo.dev")
    assert storage.build(body=body("HPOTrial")) == {}
    assert storage.build(body=body("Pod")) == {}
    essence = storage.build(body=body("HPOExperiment"))
    # kopf's own essence: the spec and labels, never the status.
    assert essence["spec"] == {"experiment": "exp"} and essence["metadata"]["labels"] == {"app": "a"}
    assert "status" not in essence
