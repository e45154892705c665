"""The operator's entry point (``python -m hpo_operator.controller``): the kopf arguments it runs with, and
which failures start the operator afresh. The restart itself runs against a real API server in
tests/integration/test_faults.py."""

from __future__ import annotations

import pytest

from hpo_operator.controller import __main__ as entry


def test_without_arguments_it_watches_hpo_namespace_or_every_namespace(monkeypatch):
    monkeypatch.delenv("HPO_NAMESPACE", raising=False)
    assert entry.kopf_arguments([]) == ["run", "--standalone", "--all-namespaces", "-m", entry.HANDLERS]
    monkeypatch.setenv("HPO_NAMESPACE", "team-a")
    assert entry.kopf_arguments(["--verbose"]) == ["run", "--standalone", "--namespace=team-a", "-m",
                                                   entry.HANDLERS, "--verbose"]


def test_the_charts_kopf_arguments_pass_through():
    args = ["run", "--standalone", "--liveness=http://0.0.0.0:8080/healthz", "--all-namespaces", "-m", entry.HANDLERS]
    assert entry.kopf_arguments(args) == args


@pytest.mark.parametrize("argv", [["run", "--namespace", "team-*"], ["run", "-n", "team-a,team-b"],
                                  ["run", "--namespace=!kube-system"], ["run", "-nteam-?"]])
def test_a_namespace_pattern_is_refused_with_the_fix(monkeypatch, capsys, argv):
    # kopf would drop the pattern silently (scanning is off) and serve nothing.
    monkeypatch.setattr(entry, "kopf_main", lambda args, prog_name: pytest.fail("ran"))
    assert entry.main(argv) == 2
    err = capsys.readouterr().err
    assert "--namespace=" in err and "by name" in err and "--all-namespaces" in err


def test_a_pattern_in_hpo_namespace_is_refused_by_that_name(monkeypatch, capsys):
    monkeypatch.setenv("HPO_NAMESPACE", "team-*")
    monkeypatch.setattr(entry, "kopf_main", lambda args, prog_name: pytest.fail("ran"))
    assert entry.main([]) == 2
    assert capsys.readouterr().err.startswith("HPO_NAMESPACE=team-*:")


def test_named_namespaces_run(monkeypatch):
    ran = []
    monkeypatch.setattr(entry, "kopf_main", lambda args, prog_name: ran.append(args))
    assert entry.main(["run", "--namespace", "team-a", "-n", "team-b", "-m", entry.HANDLERS]) == 0
    assert ran


class _ApiError(Exception):
    def __init__(self, status):
        super().__init__(f"{status}")
        self.status = status


def test_a_404_starts_the_operator_afresh_with_the_same_arguments(monkeypatch):
    def kopf_main(args, prog_name):
        raise _ApiError(404)

    execs = []
    monkeypatch.setattr(entry, "kopf_main", kopf_main)
    monkeypatch.setattr(entry, "RESTART_DELAY_SECONDS", 0)
    monkeypatch.setattr(entry.os, "execv", lambda path, argv: execs.append(argv))
    entry.main(["run", "-m", entry.HANDLERS])
    assert execs and execs[0][1:] == ["-m", "hpo_operator.controller", "run", "-m", entry.HANDLERS]


@pytest.mark.parametrize("error", [_ApiError(403), ValueError("bad port")])
def test_other_failures_end_the_operator(monkeypatch, error):
    def kopf_main(args, prog_name):
        raise error

    monkeypatch.setattr(entry, "kopf_main", kopf_main)
    monkeypatch.setattr(entry.os, "execv", lambda path, argv: pytest.fail("restarted"))
    with pytest.raises(type(error)):
        entry.main([])
