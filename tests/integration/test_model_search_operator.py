"""The default search (the adaptive scheduler over the gp searcher) on the real API server, with the
operator killed while its model has observations to learn from."""

from __future__ import annotations

import time

import pytest

from support.curve_manifests import node_manifest
from support.kube_tools import apply, experiment, finished, trials, wait_for
from support.node_double import NodeDouble

from hpo_operator.controller.trials import observations_of
from hpo_operator.spec.experiment import HPOExperimentSpec

pytestmark = pytest.mark.timeout(420)


def model_manifest(name: str, *, trials: int, parallelism: int) -> dict:
    """No searcher and no scheduler algorithm, only maxResource: the manifest default runs."""
    return node_manifest(name, trials=trials, parallelism=parallelism, gpu=True, maxRetries=2, maxFailedTrials=2,
                         searcher=None, scheduler={"maxResource": 9})


def test_model_search_survives_operator_kills_and_never_changes_a_config(crds_installed, namespace, kube_api,
                                                                        operator, tmp_path):
    doc = model_manifest("default-search", trials=24, parallelism=3)
    spec = HPOExperimentSpec.model_validate(doc["spec"])
    assert (spec.scheduler.algorithm, spec.searcher.algorithm) == ("adaptive", "gp")  # the default search
    seen: dict[str, dict] = {}

    def record_configs():
        for t in trials(kube_api, namespace):
            name, config = t["metadata"]["name"], t["spec"]["config"]
            assert seen.setdefault(name, config) == config, (name, seen[name], config)
        return len(seen)

    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        for kill, progress in enumerate((8, 16)):
            # Kill once enough trials ran that the model has been fitted (the gp needs 6
            # observations) and new ones are drawn from it.
            wait_for(lambda: record_configs() >= progress, 180, 0.2, f"{progress} trials before kill {kill + 1}")
            operator.kill()
            time.sleep(1.0)  # observations arrive while no operator runs
            operator.start()
        wait_for(lambda: (record_configs(), finished(kube_api, namespace, "default-search"))[1], 300, 1,
                 "the experiment to finish")
        assert not node.errors, node.errors
    record_configs()
    status = experiment(kube_api, namespace, "default-search")["status"]
    assert status["phase"] == "Succeeded", status
    assert operator.starts == 3
    assert max(node.created.values()) == 1, node.created  # no pod was created twice
    assert status["trials"]["created"] == 24 and len(seen) == 24
    timed = 0
    for t in trials(kube_api, namespace):
        timed += sum(seconds is not None for _, _, seconds in observations_of(t))
        assert 0 <= t["spec"]["config"]["row"] <= 399 and isinstance(t["spec"]["config"]["row"], int)
        epochs = [o["epoch"] for o in t["status"]["observations"]]
        assert epochs == list(range(1, len(epochs) + 1)), (t["metadata"]["name"], epochs)
    assert timed >= 24  # the sidecars' records time epochs: the gp's cost model has what it learns from
    assert "Traceback" not in operator.logs()
