"""Pure builders: experiment spec and trial in, Kubernetes manifests (dicts) out. No API calls."""

from __future__ import annotations

import copy
import json
from typing import Any, Optional

from hpo_trainer import contract

from hpo_operator.engine import Launch, TrialState
from hpo_operator.resources import API_VERSION, GROUP, TRIAL_KIND, TRIAL_PLURAL
from hpo_operator.sidecar.contract import DEFAULT_TOKEN_DIR, SidecarEnv

LABEL_EXPERIMENT = f"{GROUP}/experiment"
LABEL_TRIAL = f"{GROUP}/trial"
LABEL_ATTEMPT = f"{GROUP}/attempt"
SIDECAR_NAME = "hpo-metrics"
SIDECAR_ACCOUNT = "hpo-trial-sidecar"
METRICS_DIR = "/hpo/metrics"
TOKEN_DIR = DEFAULT_TOKEN_DIR
DEFAULT_UID = 1000
# The sidecar's own uid, unless a user container runs as it (then the next free one). A process may open
# another's /proc/<pid>/root only as the same uid (or with CAP_SYS_PTRACE, which every container drops):
# the trainer, sharing the process namespace, cannot reach the sidecar's files through it.
SIDECAR_UID = 65532
# The trainer's last output, kept by the kubelet in its terminated state (the last 2 KiB or 80 lines).
TRAINER_LOGS_ON_ERROR = "FallbackToLogsOnError"


def owner_reference(obj: dict, controller: bool = True) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}


def object_ref(obj: dict) -> dict:
    """What the operator keeps of an object it owns things for and posts Events on: not its spec, status
    or managed fields (at 10,000 trials the whole objects were most of the operator's memory)."""
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": {key: meta[key] for key in ("name", "namespace", "uid", "labels") if key in meta}}


def pod_name(trial_name: str, attempt: int) -> str:
    """Deterministic: a retried create of the same run hits 409 instead of making a second pod."""
    return f"{trial_name}-{attempt}"


def attempt_of(trial_name: str, pod: str) -> int:
    """The attempt ``pod_name`` made ``pod`` for."""
    return int(pod[len(trial_name) + 1:])


def trial_of(pod: str) -> Optional[str]:
    """The trial ``pod_name`` made ``pod`` for; None for a name it cannot have made."""
    trial, _, attempt = pod.rpartition("-")
    return trial if trial and attempt.isdigit() else None


def claim_name(trial_name: str) -> str:
    return f"{trial_name}-ckpt"


def build_trial(experiment: dict, trial: TrialState) -> dict:
    name = experiment["metadata"]["name"]
    return {
        "apiVersion": API_VERSION,
        "kind": TRIAL_KIND,
        "metadata": {
            "name": trial.name,
            "namespace": experiment["metadata"]["namespace"],
            "labels": {LABEL_EXPERIMENT: name, LABEL_TRIAL: trial.name},
            "ownerReferences": [owner_reference(experiment)],
        },
        "spec": {"experiment": name, "trialId": trial.trial_id, "bracket": trial.bracket, "config": trial.config,
                 "granted": trial.until},
    }


def build_claim(spec, trial_obj: dict) -> dict:
    """The trial's checkpoint volume (storage: perTrial), owned by the trial."""
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(trial_obj["metadata"]["name"]),
            "namespace": trial_obj["metadata"]["namespace"],
            "labels": dict(trial_obj["metadata"]["labels"]),
            "ownerReferences": [owner_reference(trial_obj)],
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": spec.checkpoints.size}}},
    }
    if spec.checkpoints.storage_class_name:
        claim["spec"]["storageClassName"] = spec.checkpoints.storage_class_name
    return claim


def checkpoint_location(spec, experiment_name: str, trial_name: str) -> tuple[str, Optional[str]]:
    """(claim name, sub-path) of a trial's checkpoints."""
    if spec.checkpoints.storage == "shared":
        return spec.checkpoints.claim_name, f"{experiment_name}/{trial_name}"
    return claim_name(trial_name), None


def trainer_env(spec, experiment_name: str, launch: Launch) -> list[dict]:
    env = {
        contract.ENV_TRIAL_ID: launch.trial.name,
        contract.ENV_EXPERIMENT: experiment_name,
        contract.ENV_CONFIG: json.dumps(launch.trial.config, sort_keys=True),
        contract.ENV_START_EPOCH: str(launch.start_epoch),
        contract.ENV_UNTIL_EPOCH: str(launch.until),
        contract.ENV_MAX_EPOCH: str(spec.scheduler.max_resource),
        contract.ENV_CHECKPOINT_DIR: spec.checkpoints.mount_path,
        contract.ENV_METRICS_FILE: f"{METRICS_DIR}/metrics.jsonl",
        contract.ENV_CONTROL_FILE: f"{METRICS_DIR}/control.json",
    }
    return [{"name": k, "value": v} for k, v in env.items()]


def build_pod(spec, experiment: dict, trial_obj: dict, launch: Launch, sidecar_image: str, fence: int = 0) -> dict:
    """One run of a trial: the user's trainer container plus the metrics sidecar.

    The trainer gets no API credentials (automountServiceAccountToken off); the
    sidecar alone mounts a projected service-account token, and runs as a uid of
    its own. The process namespace is shared so the sidecar sees when the trainer
    has exited; a different uid keeps the trainer out of the sidecar's files
    (``/proc/<pid>/root``). Every user container runs as non-root, whatever the
    template says.
    ``fence``: the trial's ``status.runFence`` this run is launched under (its sidecar's appends test it).
    """
    exp_name = experiment["metadata"]["name"]
    template = copy.deepcopy(spec.trial_template)
    pod_spec = template.get("spec", {})
    containers = pod_spec["containers"]
    trainer_name = spec.trainer()["name"]
    claim, sub_path = checkpoint_location(spec, exp_name, launch.trial.name)
    for c in containers:
        if c["name"] != trainer_name:
            continue
        user_env = [e for e in c.get("env") or [] if e.get("name") not in contract.ALL]
        c["env"] = user_env + trainer_env(spec, exp_name, launch)
        mounts = [m for m in c.get("volumeMounts") or [] if m.get("name") not in ("hpo-checkpoints", "hpo-metrics")]
        ckpt_mount = {"name": "hpo-checkpoints", "mountPath": spec.checkpoints.mount_path}
        if sub_path:
            ckpt_mount["subPath"] = sub_path
        c["volumeMounts"] = mounts + [ckpt_mount, {"name": "hpo-metrics", "mountPath": METRICS_DIR}]
        c.setdefault("terminationMessagePolicy", TRAINER_LOGS_ON_ERROR)  # a failed run's output outlives its pod
    user_tokens = {v.get("name") for v in pod_spec.get("volumes") or [] if carries_token(v)}
    for c in containers + (pod_spec.get("initContainers") or []):
        harden(c, user_tokens | {"hpo-token"})
    psc = pod_spec.setdefault("securityContext", {})
    psc["runAsNonRoot"] = True
    if not psc.get("runAsUser"):  # unset, or root: the default user
        psc["runAsUser"] = DEFAULT_UID
    psc.setdefault("fsGroup", DEFAULT_UID)
    psc.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    user_uids = {c["securityContext"].get("runAsUser") or psc["runAsUser"]
                 for c in containers + (pod_spec.get("initContainers") or [])}
    containers.append(build_sidecar(spec, launch, sidecar_image, fence, sidecar_uid(user_uids)))
    quantities_as_strings(pod_spec)
    pod_spec["restartPolicy"] = "Never"
    pod_spec["automountServiceAccountToken"] = False
    pod_spec.pop("serviceAccount", None)  # the deprecated alias would compete with serviceAccountName
    pod_spec["serviceAccountName"] = SIDECAR_ACCOUNT
    pod_spec["shareProcessNamespace"] = True
    volumes = [v for v in pod_spec.get("volumes") or []
               if v.get("name") not in ("hpo-checkpoints", "hpo-metrics", "hpo-token") and not carries_token(v)]
    volumes += [
        {"name": "hpo-checkpoints", "persistentVolumeClaim": {"claimName": claim}},
        {"name": "hpo-metrics", "emptyDir": {}},
        # Readable by the pod's fsGroup, which the sidecar is in; no other container mounts it.
        {"name": "hpo-token", "projected": {"defaultMode": 0o440, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}],
                           "optional": True}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
    ]
    pod_spec["volumes"] = volumes
    metadata = template.get("metadata") or {}
    labels = {**(metadata.get("labels") or {}), LABEL_EXPERIMENT: exp_name, LABEL_TRIAL: launch.trial.name,
              LABEL_ATTEMPT: str(launch.attempt)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(launch.trial.name, launch.attempt),
            "namespace": experiment["metadata"]["namespace"],
            "labels": labels,
            "annotations": dict(metadata.get("annotations") or {}),
            "ownerReferences": [owner_reference(trial_obj)],
        },
        "spec": pod_spec,
    }


def carries_token(volume: dict) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any(isinstance(s, dict) and "serviceAccountToken" in s for s in sources)


def sidecar_uid(user_uids: set) -> int:
    """The sidecar's uid: SIDECAR_UID, or the next one no user container runs as."""
    uid = SIDECAR_UID
    while uid in user_uids:
        uid += 1
    return uid


def harden(container: dict, token_volumes: set) -> None:
    """A user container: non-root, no privilege escalation, no capabilities, no service-account token.

    Validation already refuses templates that ask otherwise (spec/pod_security.py);
    this holds even for a spec that skipped it.
    """
    container["volumeMounts"] = [m for m in container.get("volumeMounts") or [] if m.get("name") not in token_volumes]
    sc = container.setdefault("securityContext", {})
    sc["allowPrivilegeEscalation"] = False
    sc["privileged"] = False
    sc["runAsNonRoot"] = True
    if sc.get("runAsUser") == 0:
        del sc["runAsUser"]  # the pod's (non-root) user instead
    caps = sc.setdefault("capabilities", {})
    caps.pop("add", None)
    caps["drop"] = ["ALL"]


def quantities_as_strings(pod_spec: dict) -> None:
    """``nvidia.com/gpu: 1`` in YAML is an int; the API (and its client) wants quantity strings."""
    for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        resources = c.get("resources") or {}
        for kind in ("requests", "limits"):
            amounts = resources.get(kind) or {}
            for key, value in amounts.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    amounts[key] = str(value)


def build_sidecar(spec, launch: Launch, image: str, fence: int = 0, uid: int = SIDECAR_UID) -> dict:
    return {
        "name": SIDECAR_NAME,
        "image": image,
        "command": ["python", "-m", "hpo_operator.sidecar"],
        "env": SidecarEnv(trial=launch.trial.name, objective=spec.objective.metric,
                          metrics_file=f"{METRICS_DIR}/metrics.jsonl", control_file=f"{METRICS_DIR}/control.json",
                          # The fence the run is launched under (see ENV_RUN_FENCE).
                          attempt=launch.attempt, run_fence=fence, token_dir=TOKEN_DIR).to_env(),
        "volumeMounts": [
            {"name": "hpo-metrics", "mountPath": METRICS_DIR},
            {"name": "hpo-token", "mountPath": TOKEN_DIR, "readOnly": True},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True, "runAsUser": uid,
                            "runAsGroup": uid},
    }


def sidecar_owner(experiment: dict) -> dict:
    """An experiment as one of the owners of its namespace's sidecar identity: the garbage collector removes
    the identity once every experiment that used it is deleted (and never waits for it to go first)."""
    return {**owner_reference(experiment, controller=False), "blockOwnerDeletion": False}


def sidecar_rbac(namespace: str, owner: Optional[dict] = None) -> list[dict]:
    """The sidecar's identity in a namespace: it may read trials and write their status, nothing else.
    ``owner``: the experiment it is made for (``sidecar_owner``)."""
    meta = {"name": SIDECAR_ACCOUNT, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "hpo-operator"}}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta), "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta), "rules": [
            # Read its trial: the operator's decisions (until, decidedEpoch), observations and problems on record.
            {"apiGroups": [GROUP], "resources": [TRIAL_PLURAL], "verbs": ["get"]},
            # Append observations and problems to the trial's status (JSON patch); the operator posts the Events.
            {"apiGroups": [GROUP], "resources": [f"{TRIAL_PLURAL}/status"], "verbs": ["patch"]},
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SIDECAR_ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": SIDECAR_ACCOUNT, "namespace": namespace}]},
    ]
