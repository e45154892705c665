"""The sidecar's environment contract: what the pod builder writes is what the sidecar reads, and a bad
variable is refused by name."""

from __future__ import annotations

import pytest

from hpo_operator.controller.builders import SIDECAR_NAME, build_pod, build_trial
from hpo_operator.engine import Launch, TrialState
from hpo_operator.sidecar.contract import (
    ENV_ATTEMPT, ENV_CONTROL_FILE, ENV_METRICS_FILE, ENV_OBJECTIVE, ENV_POLL, ENV_RUN_FENCE, ENV_TRIAL,
    ENV_WATCH_PROCESSES, SidecarEnv, SidecarEnvError,
)
from hpo_operator.resources import API_VERSION
from hpo_operator.spec import experiment_spec_from_dict

FULL = SidecarEnv(trial="exp-0003", objective="val_loss", metrics_file="/m/metrics.jsonl",
                  control_file="/m/control.json", attempt=2, run_fence=5, token_dir="/t", namespace="team-a",
                  poll_seconds=0.1, watch_processes=False)
MINIMAL = SidecarEnv(trial="exp-0003", objective="val_loss", metrics_file="/m/metrics.jsonl",
                     control_file="/m/control.json")


def as_environ(entries: list[dict]) -> dict[str, str]:
    """A container's env entries as the process inside sees them."""
    return {e["name"]: e["value"] for e in entries}


@pytest.mark.parametrize("env", [FULL, MINIMAL], ids=["every-field", "defaults"])
def test_round_trip(env):
    assert SidecarEnv.from_env(as_environ(env.to_env())) == env
    assert as_environ(env.to_env()) == env.to_environ()


def test_the_pod_builders_sidecar_env_reads_back(manifest):
    experiment = {"apiVersion": API_VERSION, "kind": "HPOExperiment",
                  "metadata": {"name": "exp", "namespace": "ns", "uid": "uid-exp"}}
    spec = experiment_spec_from_dict(manifest["spec"])
    trial = TrialState(3, "exp-0003", {"lr": 0.01}, until=9)
    trial_obj = {**build_trial(experiment, trial)}
    trial_obj["metadata"]["uid"] = "uid-trial"
    pod = build_pod(spec, experiment, trial_obj, Launch(trial, 3, 9, "resume", 2), "op:1", fence=4)
    sidecar = next(c for c in pod["spec"]["containers"] if c["name"] == SIDECAR_NAME)
    env = SidecarEnv.from_env(as_environ(sidecar["env"]))
    assert (env.trial, env.attempt, env.run_fence, env.objective) == ("exp-0003", 2, 4, spec.objective.metric)
    assert env.token_dir in {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert env.watch_processes and env.namespace is None  # in a pod: processes watched, namespace from the token


@pytest.mark.parametrize("name", [ENV_TRIAL, ENV_OBJECTIVE, ENV_METRICS_FILE, ENV_CONTROL_FILE])
def test_a_missing_variable_is_named(name):
    environ = as_environ(FULL.to_env())
    del environ[name]
    with pytest.raises(SidecarEnvError, match=f"^{name} is not set"):
        SidecarEnv.from_env(environ)


@pytest.mark.parametrize("name, value", [(ENV_ATTEMPT, "two"), (ENV_ATTEMPT, "0"), (ENV_RUN_FENCE, "-1"),
                                         (ENV_RUN_FENCE, "1.5"), (ENV_POLL, "fast"), (ENV_POLL, "0"),
                                         (ENV_WATCH_PROCESSES, "yes")])
def test_a_malformed_variable_is_named_with_its_value(name, value):
    environ = {**as_environ(FULL.to_env()), name: value}
    with pytest.raises(SidecarEnvError, match=f"^{name} must be .*{value!r}"):
        SidecarEnv.from_env(environ)
