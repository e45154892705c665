"""The operator's /metrics, scraped from a real ``kopf run`` operator while an experiment runs on the real API
server (the node played by the node double): the counts move while it runs and, once it has ended, agree with
the HPOTrial objects; a deleted experiment's series go."""

from __future__ import annotations

from collections import Counter

import pytest

from support.curve_manifests import node_manifest
from support.kube_tools import apply, experiment, finished, kubectl, trials, wait_for
from support.node_double import NodeDouble
from support.scrape import Scrape

pytestmark = pytest.mark.timeout(300)
PHASES = ("Pending", "Running", "Paused", "Stopped", "Completed", "Failed")


def test_metrics_follow_a_running_experiment_and_agree_with_its_trials(crds_installed, namespace, kube_api,
                                                                        operator, tmp_path):
    doc = node_manifest("watched", trials=10, parallelism=2, seconds_per_epoch=0.05,
                        searcher={"algorithm": "random", "seed": 1},
                        scheduler={"algorithm": "asha", "type": "promotion", "maxResource": 9})
    mine = {"namespace": namespace, "experiment": "watched"}

    def scrape() -> Scrape:
        return Scrape.of(operator.metrics_url)

    def served() -> bool:
        try:
            return bool(scrape())
        except OSError:  # (not listening yet)
            return False

    wait_for(served, 60, 0.2, "the operator to serve its metrics")
    with NodeDouble(crds_installed, kube_api, namespace, tmp_path / "node") as node:
        apply(crds_installed, namespace, doc)
        # While it runs: what the operator ingests and decides grows, scrape after scrape.
        first = wait_for(lambda: (s := scrape()).total("hpo_observations_ingested_total", **mine) >= 3 and s,
                         120, 0.2, "observations ingested")
        assert not finished(kube_api, namespace, "watched")
        second = wait_for(lambda: (s := scrape()).total("hpo_observations_ingested_total", **mine) >
                          first.total("hpo_observations_ingested_total", **mine) and s, 120, 0.2, "more observations")
        assert second.total("hpo_decisions_total", **mine) > first.total("hpo_decisions_total", **mine)
        assert second.total("hpo_step_duration_seconds_count") > first.total("hpo_step_duration_seconds_count")
        wait_for(lambda: finished(kube_api, namespace, "watched"), 240, 0.5, "the experiment to end")
        assert not node.errors, node.errors
    assert experiment(kube_api, namespace, "watched")["status"]["phase"] == "Succeeded"

    objs = trials(kube_api, namespace)
    recorded = [t["status"] for t in objs]
    # Its last step wrote the trials' final phases before the experiment's: the gauge is final.
    final = scrape()
    assert final.by("hpo_trials", "phase", **mine) == {p: Counter(s["phase"] for s in recorded)[p] for p in PHASES}
    # Every observation on record acted on exactly once (the operator ran throughout: nothing replayed).
    observations = sum(len(s["observations"]) for s in recorded)
    assert final.total("hpo_observations_ingested_total", **mine) == observations == sum(s["processed"] for s in recorded)
    decisions = final.by("hpo_decisions_total", "kind", **mine)
    assert sum(decisions.values()) == observations and decisions["pause"] > 0, decisions
    launches = final.by("hpo_launches_total", "reason", **mine)
    assert launches["new"] == len(objs) and sum(launches.values()) == sum(s["attempts"] for s in recorded), launches
    assert launches["resume"] > 0  # paused trials were promoted
    ends = final.by("hpo_run_ends_total", "outcome", **mine)
    assert ends["completed"] == sum(s["phase"] == "Completed" for s in recorded) and ends["completed"] > 0, ends
    assert sum(ends.values()) == sum(launches.values()), (ends, launches)  # every run launched ended
    assert 0 < final.total("hpo_decision_latency_seconds_count") <= observations
    assert final.total("hpo_state_rebuilds_total", reason="start") >= 1
    # The operator's own API client, counted by verb, resource and answer: one trial created per trial, one pod
    # per run (and the first pod's server-side dry run).
    created = final.by("hpo_api_requests_total", "resource", verb="create", code="201")
    assert created["hpotrials"] == len(objs) and 0 <= created["pods"] - sum(launches.values()) <= 1, created
    assert final.total("hpo_api_requests_total", verb="patch", resource="hpotrials/status") > 0
    assert final.total("hpo_api_requests_total", verb="deletecollection", resource="pods") > 0

    kubectl(crds_installed, "delete", "hpx", "watched", "-n", namespace)
    wait_for(lambda: not scrape().has(**mine), 30, 0.2, "the deleted experiment's series to go")
    assert scrape().total("hpo_step_duration_seconds_count") > 0  # operator-wide series stay
