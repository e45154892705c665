"""What the controller asks of the Kubernetes API: one protocol, which the production client
(``kube.KubeApi``) and every test double implement.

Each method is one request (or one small read-then-write), synchronous: the
experiment's owner runs them on the shared API threads, as many at once as
its lanes allow (``lanes.py``). Objects come and go as plain dicts (JSON).
"""

from __future__ import annotations

from typing import Collection, Optional, Protocol


class TemplateRejected(Exception):
    """The API server (or its client) refused a trial pod built from spec.trialTemplate: no retry can help."""


class Api(Protocol):
    def ensure_sidecar_identity(self, experiment: dict) -> None:
        """The sidecar's ServiceAccount, Role and RoleBinding in the experiment's namespace, current, and
        owned by the experiment."""

    def list_trials(self, namespace: str, experiment: str) -> list[dict]: ...

    def list_pods(self, namespace: str, experiment: str) -> dict[str, dict]:
        """The experiment's pods, name -> ``pods.compact_pod``."""

    def pod_existed(self, namespace: str, pod: str, since: str) -> bool:
        """Kubernetes recorded an Event about this pod (scheduled, pulled, started, killed, ...) created at or
        after ``since`` (RFC 3339): the pod existed then, though it is gone now."""

    def get_trial(self, namespace: str, name: str) -> dict:
        """One trial as the API server has it (not a cache)."""

    def fence_trial(self, namespace: str, name: str, fence: int) -> dict:
        """Set the trial's ``status.runFence`` (a sidecar's appends require the value it started with);
        the trial as that write left it."""

    def create_trial(self, obj: dict) -> tuple[dict, bool]:
        """(the trial, whether this call created it: a repeat after a crash finds it)."""

    def patch_trial_status(self, namespace: str, name: str, patch: dict) -> None: ...

    def patch_experiment_status(self, namespace: str, name: str, status: dict) -> None: ...

    def create_pod(self, pod: dict, dry_run: bool = False) -> None:
        """Create a pod (one that exists already is left as it is)."""

    def create_claim(self, claim: dict) -> None:
        """Create a PersistentVolumeClaim (one that exists already is left as it is)."""

    def delete_pods(self, namespace: str, experiment: str, attempt: int, trials: Collection[str]) -> None:
        """Delete the pods of these trials' runs numbered ``attempt``, in one request."""

    def delete_claims(self, namespace: str, experiment: str, trials: Collection[str]) -> None:
        """Delete these trials' checkpoint claims, in one request."""

    def binds_at_once(self, storage_class: Optional[str]) -> bool:
        """Claims of this StorageClass (None: the default) are bound as soon as they are created."""

    def wait_bound(self, namespace: str, claims: Collection[str], timeout: float) -> None:
        """Wait until these claims are Bound, at most ``timeout`` seconds."""
