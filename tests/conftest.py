"""Shared test helpers: paths and a minimal valid manifest."""

from __future__ import annotations

import copy
import sys

import kopf
import pytest
import yaml

from support.paths import TABLES

MINIMAL = {
    "apiVersion": "hpo.dev/v1alpha1",
    "kind": "HPOExperiment",
    "metadata": {"name": "mini"},
    "spec": {
        "objective": {"metric": "val_error"},
        "searchSpace": {"lr": {"type": "loguniform", "min": 1e-4, "max": 1.0}},
        "searcher": {"algorithm": "random"},
        "scheduler": {"algorithm": "asha", "maxResource": 9},
        "trialTemplate": {"spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]}},
    },
}


@pytest.fixture
def manifest() -> dict:
    """A fresh copy of the smallest valid HPOExperiment, for tests to break one field of."""
    return copy.deepcopy(MINIMAL)


@pytest.fixture(scope="session")
def digits_table():
    from hpo_operator.sim import LearningCurveTable

    return LearningCurveTable.load(TABLES / "digits_s44.json")


@pytest.fixture
def write_manifest(tmp_path):
    """Writes a manifest dict to a YAML file in the test's folder; returns the path."""
    def write(doc: dict):
        path = tmp_path / f"{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path
    return write


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def quiet_kopf(monkeypatch):
    """kopf posts events only inside a running operator: the events posted, as (target name, reason, message)."""
    posted = []
    for name in ("event", "info", "warn"):
        monkeypatch.setattr(kopf, name, lambda target, *args, reason="", message="", **kwargs:
                            posted.append((target["name"] if "name" in target else target["metadata"]["name"],
                                           reason, message)))
    return posted
