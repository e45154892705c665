"""Manifest validation: defaults keep a minimal manifest short; errors name the field and the fix."""

from __future__ import annotations

import pytest

from hpo_operator.spec import ManifestError, experiment_from_dict, load_experiment
from hpo_operator.spec.durations import parse_duration

from support.paths import REPO


def problems(doc) -> list[str]:
    with pytest.raises(ManifestError) as err:
        experiment_from_dict(doc)
    return err.value.problems


def test_minimal_manifest_gets_defaults(manifest):
    exp = experiment_from_dict(manifest)
    assert exp.spec.objective.mode == "min"
    assert exp.spec.scheduler.algorithm == "asha" and exp.spec.scheduler.type == "promotion"
    assert exp.spec.scheduler.min_resource == 1 and exp.spec.scheduler.reduction_factor == 3
    assert exp.spec.budget.parallelism == 1 and exp.spec.budget.max_trials == 20
    assert exp.spec.searcher.algorithm == "random"
    assert exp.spec.checkpoints.storage == "perTrial"
    assert exp.spec.trainer()["name"] == "trainer"


def test_a_manifest_naming_only_max_resource_gets_the_default_search(manifest):
    """The default of docs/schedulers.md ("The default"): the adaptive scheduler, promotion type, first
    rung after one epoch, eta 3, over the gp searcher with a fifth of its trials drawn at random."""
    del manifest["spec"]["searcher"]
    manifest["spec"]["scheduler"] = {"maxResource": 27}
    spec = experiment_from_dict(manifest).spec
    assert (spec.scheduler.algorithm, spec.scheduler.type) == ("adaptive", "promotion")
    assert (spec.scheduler.min_resource, spec.scheduler.reduction_factor) == (1, 3)
    assert (spec.searcher.algorithm, spec.searcher.random_fraction) == ("gp", 0.2)


def test_shipped_examples_are_valid():
    paths = sorted((REPO / "examples").glob("*.yaml"))
    assert paths, "no examples/*.yaml found"
    for path in paths:
        exp = load_experiment(path)
        assert exp.metadata.name


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("searchSpace", "lr"), {"type": "loguniform", "min": 0, "max": 1},
         "spec.searchSpace.lr.min: must be > 0 for a log scale"),
        (("searchSpace", "lr"), {"type": "uniform", "min": 2, "max": 1},
         "spec.searchSpace.lr.max: must be greater than min"),
        (("searchSpace", "lr"), {"type": "choice", "values": []}, "spec.searchSpace.lr.values: must not be empty"),
        (("searchSpace", "lr"), {"type": "gaussian"}, "spec.searchSpace.lr: type must be one of"),
        (("searchSpace", "lr"), {"type": "randint", "min": 1.5, "max": 4}, "spec.searchSpace.lr.min"),
        (("searchSpace", "lr"), {"type": "finrange", "min": 0, "max": 1, "size": 1},
         "spec.searchSpace.lr.size: must be greater than or equal to 2"),
        (("scheduler", "algorithm"), "bohb", "spec.scheduler.algorithm: must be 'fifo', 'asha'"),
        (("scheduler", "reductionFactor"), 1, "spec.scheduler.reductionFactor: must be greater than or equal to 2"),
        (("scheduler", "minResource"), 27, "spec.scheduler.maxResource: must be >= minResource"),
        (("budget",), {"parallelism": 0}, "spec.budget.parallelism: must be greater than or equal to 1"),
        (("budget",), {"maxDuration": "soon"}, "spec.budget.maxDuration: must be seconds or a duration"),
        (("budget",), {"maxTrails": 5}, "spec.budget.maxTrails: unknown field"),
        (("objective",), {"mode": "min"}, "spec.objective.metric: required field is missing"),
        (("trialTemplate",), {"spec": {"containers": []}}, "spec.trialTemplate.spec.containers: must list"),
        (("trialTemplate",), {"spec": {"containers": [{"name": "t", "image": "i",
                                                      "resources": {"limits": {"nvidia.com/gpu": "one"}}}]}},
         "resources.limits.nvidia.com/gpu: 'one' is not a Kubernetes quantity"),
        (("checkpoints",), {"storage": "shared"}, "spec.checkpoints.claimName: required when storage is shared"),
        (("checkpoints",), {"size": "lots"}, "spec.checkpoints.size: must be a Kubernetes quantity"),
    ],
)
def test_invalid_field_is_named_with_the_fix(manifest, path, value, expected):
    node = manifest["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert any(expected in p for p in problems(manifest)), problems(manifest)


def test_experiment_name_must_leave_room_for_trial_and_pod_names(manifest):
    manifest["metadata"]["name"] = "x" * 46
    assert any(p.startswith("metadata.name: ") for p in problems(manifest))
    manifest["metadata"]["name"] = "Bad_Name"
    assert any("lowercase" in p for p in problems(manifest))


def test_every_problem_is_reported_at_once(manifest):
    manifest["spec"]["budget"] = {"parallelism": 0, "maxTrials": 0}
    manifest["spec"]["scheduler"]["reductionFactor"] = 0
    assert len(problems(manifest)) == 3


@pytest.mark.parametrize("text, seconds", [(90, 90), ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200),
                                            ("1h30m", 5400), ("1d", 86400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "-5", "1h 30m", 0, True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
