"""Trial pods as the operator builds them: what the trainer and the sidecar each get."""

from __future__ import annotations

import copy
import json

import pytest

from hpo_operator.controller.builders import (
    SIDECAR_NAME, build_claim, build_pod, build_trial, pod_name, sidecar_rbac, trial_of,
)
from hpo_operator.engine import Launch, TrialState
from hpo_operator.spec import experiment_spec_from_dict

EXPERIMENT = {"apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment",
              "metadata": {"name": "exp", "namespace": "team-a", "uid": "uid-exp"}}


def spec_of(manifest: dict, **checkpoints):
    manifest["spec"]["trialTemplate"]["spec"]["containers"][0].update(
        resources={"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}},
        env=[{"name": "USER_VAR", "value": "kept"}, {"name": "HPO_UNTIL_EPOCH", "value": "999"}])
    if checkpoints:
        manifest["spec"]["checkpoints"] = checkpoints
    return experiment_spec_from_dict(manifest["spec"])


def launch(start=0, until=3, attempt=1, reason="new") -> Launch:
    trial = TrialState(trial_id=7, name="exp-0007", config={"lr": 0.01}, until=until)
    return Launch(trial, start, until, reason, attempt)


def trial_obj() -> dict:
    obj = build_trial({**EXPERIMENT}, launch().trial)
    obj["metadata"]["uid"] = "uid-trial"
    return obj


def containers(pod: dict) -> dict:
    return {c["name"]: c for c in pod["spec"]["containers"]}


def env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def test_trainer_gets_the_contract_and_its_gpu_but_no_api_credentials(manifest):
    spec = spec_of(manifest)
    pod = build_pod(spec, EXPERIMENT, trial_obj(), launch(start=3, until=9, attempt=2, reason="resume"), "op:1")
    trainer = containers(pod)["trainer"]
    assert trainer["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "4Gi"}  # kept, as quantity strings
    e = env(trainer)
    assert e["USER_VAR"] == "kept"
    assert (e["HPO_START_EPOCH"], e["HPO_UNTIL_EPOCH"], e["HPO_MAX_EPOCH"]) == ("3", "9", "9")  # contract wins
    assert json.loads(e["HPO_CONFIG"]) == {"lr": 0.01}
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert all("token" not in m["name"] for m in trainer["volumeMounts"])
    sidecar = containers(pod)[SIDECAR_NAME]
    assert any(m["name"] == "hpo-token" and m["readOnly"] for m in sidecar["volumeMounts"])
    assert (env(sidecar)["HPO_ATTEMPT"], env(sidecar)["HPO_RUN_FENCE"]) == ("2", "0")
    fenced = build_pod(spec, EXPERIMENT, trial_obj(), launch(attempt=3), "op:1", fence=2)
    assert env(containers(fenced)[SIDECAR_NAME])["HPO_RUN_FENCE"] == "2"  # the fence its run is launched under
    token_volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "hpo-token")
    assert token_volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] <= 3600


def test_pods_run_as_non_root_without_privilege_escalation(manifest):
    pod = build_pod(spec_of(manifest), EXPERIMENT, trial_obj(), launch(), "op:1")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    for c in pod["spec"]["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["restartPolicy"] == "Never"  # the operator, not the kubelet, decides about retries


def token_volumes(pod: dict) -> set[str]:
    """Volumes that carry a service-account token."""
    return {v["name"] for v in pod["spec"]["volumes"]
            if any("serviceAccountToken" in s for s in (v.get("projected") or {}).get("sources") or [])
            or (v.get("secret") or {}).get("secretName", "").startswith(("default-token", "hpo-trial-sidecar"))}


def unvalidated(spec, template: dict):
    """The spec with a template validation would refuse: the builder must hold on its own."""
    return spec.model_copy(update={"trial_template": template})


USER_TEMPLATES = {
    "plain": {},
    "own service account": {"serviceAccountName": "default", "serviceAccount": "default",
                            "automountServiceAccountToken": True},
    "own volumes": {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]},
    "own token volume": {"volumes": [{"name": "mine", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}]}}]},
    "mounts the sidecar's token": {},
    "extra containers": {"initContainers": [{"name": "fetch", "image": "f:1"}]},
    "runs as the sidecar's default uid": {"securityContext": {"runAsUser": 65532}},
    "a container as the sidecar's uid": {"initContainers": [
        {"name": "fetch", "image": "f:1", "securityContext": {"runAsUser": 65533}}],
        "securityContext": {"runAsUser": 65532}},
}


def effective_uid(pod: dict, container: dict) -> int:
    return (container.get("securityContext") or {}).get("runAsUser") or pod["spec"]["securityContext"]["runAsUser"]


@pytest.mark.parametrize("case", USER_TEMPLATES)
def test_no_container_but_the_sidecar_can_read_an_api_token(manifest, case):
    spec = spec_of(manifest)
    template = copy.deepcopy(spec.trial_template)
    template["spec"].update(USER_TEMPLATES[case])
    trainer = template["spec"]["containers"][0]
    trainer["volumeMounts"] = [{"name": "mine" if case == "own token volume" else "hpo-token",
                                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    template["spec"]["containers"].append({"name": "logger", "image": "l:1",
                                           "volumeMounts": [{"name": "hpo-token", "mountPath": "/t"}]})
    pod = build_pod(unvalidated(spec, template), EXPERIMENT, trial_obj(), launch(), "op:1")

    assert pod["spec"]["automountServiceAccountToken"] is False  # no token at the default path
    assert pod["spec"]["serviceAccountName"] == "hpo-trial-sidecar" and "serviceAccount" not in pod["spec"]
    user = [c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []) if c["name"] != SIDECAR_NAME]
    assert {c["name"] for c in user} >= {"trainer", "logger"}
    tokens = token_volumes(pod)
    assert tokens  # the sidecar's own token is there...
    for c in user:  # ...and mounted by no other container
        mounted = {m["name"] for m in c.get("volumeMounts") or []}
        assert not mounted & (tokens | {"hpo-token"}), (c["name"], mounted)
    sidecar = containers(pod)[SIDECAR_NAME]
    assert {m["name"] for m in sidecar["volumeMounts"]} & tokens == {"hpo-token"}
    # The process namespace is shared: /proc/<sidecar pid>/root opens its files for a process of the same
    # uid, or one holding CAP_SYS_PTRACE. The sidecar's uid is no user container's, and none holds that.
    assert pod["spec"]["shareProcessNamespace"] is True
    sidecar_uid = effective_uid(pod, sidecar)
    assert sidecar_uid not in {effective_uid(pod, c) for c in user}, sidecar_uid
    for c in user:
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]


def test_every_container_runs_unprivileged_even_if_the_template_asks_otherwise(manifest):
    spec = spec_of(manifest)
    template = copy.deepcopy(spec.trial_template)
    template["spec"]["initContainers"] = [{"name": "fetch", "image": "f:1", "securityContext": {
        "privileged": True, "allowPrivilegeEscalation": True, "capabilities": {"add": ["SYS_ADMIN"]}}}]
    template["spec"]["containers"][0]["securityContext"] = {"capabilities": {"drop": ["NET_RAW"]},
                                                             "runAsUser": 0, "runAsNonRoot": False}
    template["spec"]["securityContext"] = {"runAsUser": 0, "runAsNonRoot": False}
    pod = build_pod(unvalidated(spec, template), EXPERIMENT, trial_obj(), launch(), "op:1")
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000  # root asked for: the default user instead
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged"), c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["runAsNonRoot"] is True and sc.get("runAsUser", 1000) != 0, c["name"]


def test_a_user_security_context_is_respected(manifest):
    manifest["spec"]["trialTemplate"]["spec"]["securityContext"] = {"runAsUser": 4242}
    pod = build_pod(spec_of(manifest), EXPERIMENT, trial_obj(), launch(), "op:1")
    assert pod["spec"]["securityContext"]["runAsUser"] == 4242


def test_pod_names_are_deterministic_and_owned_by_the_trial(manifest):
    pod = build_pod(spec_of(manifest), EXPERIMENT, trial_obj(), launch(attempt=3), "op:1")
    assert pod["metadata"]["name"] == pod_name("exp-0007", 3) == "exp-0007-3"
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("HPOTrial", "uid-trial", True)
    assert pod["metadata"]["labels"]["hpo.dev/experiment"] == "exp"


def test_per_trial_claim_or_shared_claim_with_sub_path(manifest):
    spec = spec_of(manifest, storage="perTrial", size="5Gi", storageClassName="fast")
    pod = build_pod(spec, EXPERIMENT, trial_obj(), launch(), "op:1")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "hpo-checkpoints")
    assert volume["persistentVolumeClaim"]["claimName"] == "exp-0007-ckpt"
    claim = build_claim(spec, trial_obj())
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "uid-trial"

    shared = spec_of(manifest, storage="shared", claimName="team-ckpts")
    pod = build_pod(shared, EXPERIMENT, trial_obj(), launch(), "op:1")
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "hpo-checkpoints")
    assert volume["persistentVolumeClaim"]["claimName"] == "team-ckpts"
    mount = next(m for m in containers(pod)["trainer"]["volumeMounts"] if m["name"] == "hpo-checkpoints")
    assert mount["subPath"] == "exp/exp-0007"


def test_sidecar_role_allows_only_trial_reads_and_status_writes():
    role = next(o for o in sidecar_rbac("team-a") if o["kind"] == "Role")
    granted = {(r["apiGroups"][0], res, verb) for r in role["rules"] for res in r["resources"] for verb in r["verbs"]}
    assert granted == {("hpo.dev", "hpotrials", "get"), ("hpo.dev", "hpotrials/status", "patch")}
    assert not any(verb in ("create", "delete", "update", "patch") and res == "hpotrials" for _, res, verb in granted)
    assert not any(res in ("pods", "secrets", "hpoexperiments") for _, res, _ in granted)
    for rule in role["rules"]:
        assert all("*" not in rule[key] for key in ("apiGroups", "resources", "verbs")), rule


@pytest.mark.parametrize("value, expected", [(1, "1"), (0.5, "0.5"), ("2", "2")])
def test_numeric_resource_amounts_become_quantity_strings(manifest, value, expected):
    manifest["spec"]["trialTemplate"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": value}}
    pod = build_pod(experiment_spec_from_dict(manifest["spec"]), EXPERIMENT, trial_obj(), launch(), "op:1")
    assert containers(pod)["trainer"]["resources"]["requests"]["cpu"] == expected


def test_a_pods_name_gives_back_its_trial():
    assert trial_of(pod_name("exp-with-dashes-0003", 12)) == "exp-with-dashes-0003"
    assert trial_of("exp-0003-ckpt") is None and trial_of("12") is None
