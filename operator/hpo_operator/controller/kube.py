"""The production ``api.Api``: the Kubernetes Python client, lists and answers read as raw JSON (the
client's typed models cost ~1 ms per pod to build).
"""

from __future__ import annotations

import json
import time
from typing import Collection, Optional

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from hpo_operator.controller import metrics
from hpo_operator.controller.builders import LABEL_ATTEMPT, LABEL_EXPERIMENT, LABEL_TRIAL, sidecar_owner, sidecar_rbac
from hpo_operator.controller.lanes import API_THREADS
from hpo_operator.controller.pods import compact_pod
from hpo_operator.resources import EXPERIMENT_PLURAL, GROUP, TRIAL_PLURAL, VERSION



def _body(response) -> bytes:
    """Read a raw response (``_preload_content=False``) to its end: only then does its connection go back
    to the pool. One left unread is dropped, and the next request pays a new TLS handshake."""
    return response.data


def _create(create, *args, **kwargs) -> None:
    """Create; an object that exists already (409: a repeat after a crash) is left as it is."""
    try:
        _body(create(*args, _preload_content=False, **kwargs))
    except ApiException as err:
        if err.status != 409:
            raise


def _resource_names(ask) -> set[str]:
    """The resource names of one discovery document (``ask``: a client call for it)."""
    return {r["name"] for r in json.loads(ask(_preload_content=False).data)["resources"]}


class KubeApi:
    """``api.Api`` on the Kubernetes Python client."""

    _instance = None

    def __init__(self, api_client: client.ApiClient):
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self.apis = client.ApisApi(api_client)
        self._binds_at_once: dict[Optional[str], bool] = {}
        self._sidecar_ready: set[str] = set()  # uids of the experiments whose sidecar identity is in place

    @classmethod
    def from_environment(cls) -> "KubeApi":
        if cls._instance is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = API_THREADS  # a connection for every API thread
            api_client = client.ApiClient(configuration)
            api_client.rest_client.request = metrics.count_requests(api_client.rest_client.request)
            cls._instance = cls(api_client)
        return cls._instance

    def unserved_resources(self) -> list[str]:
        """Of the resources the operator watches, those the API server does not serve yet, read the way kopf
        discovers them: the group list (``/apis``) first, then each listed version's resources. A restarted API
        server answers requests before it lists the CRDs' resources, and it serves ``/apis/<group>/<version>``
        a moment before ``/apis`` names the group; kopf, which scans once at start, would never watch them."""
        served: set[str] = set()
        try:
            served |= _resource_names(self.core.get_api_resources)
            groups = json.loads(self.apis.get_api_versions(_preload_content=False).data)["groups"]
            if any(g["name"] == GROUP and VERSION in {v["version"] for v in g["versions"]} for g in groups):
                served |= _resource_names(lambda **kw: self.custom.get_api_resources(GROUP, VERSION, **kw))
        except Exception:  # not answering, or the group is not served yet: its resources are missing
            pass
        return [name for name in ("pods", EXPERIMENT_PLURAL, TRIAL_PLURAL) if name not in served]

    def list_trials(self, namespace: str, experiment: str) -> list[dict]:
        out = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, TRIAL_PLURAL,
                                                        label_selector=f"{LABEL_EXPERIMENT}={experiment}",
                                                        _preload_content=False)
        return json.loads(out.data)["items"]

    def get_trial(self, namespace: str, name: str) -> dict:
        return json.loads(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, TRIAL_PLURAL, name,
                                                                   _preload_content=False).data)

    def fence_trial(self, namespace: str, name: str, fence: int) -> dict:
        return json.loads(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, TRIAL_PLURAL, name, {"status": {"runFence": fence}},
            _preload_content=False).data)

    def list_pods(self, namespace: str, experiment: str) -> dict[str, dict]:
        """The experiment's pods, name -> ``compact_pod``."""
        out = self.core.list_namespaced_pod(namespace, label_selector=f"{LABEL_EXPERIMENT}={experiment}",
                                            _preload_content=False)
        return {p["metadata"]["name"]: compact_pod(p) for p in json.loads(out.data)["items"]}

    def pod_existed(self, namespace: str, pod: str, since: str) -> bool:
        out = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.kind=Pod,"
                                              f"involvedObject.name={pod}", _preload_content=False)
        return any(e["metadata"]["creationTimestamp"] >= since for e in json.loads(out.data)["items"])

    def ensure_sidecar_identity(self, experiment: dict) -> None:
        """Each object is owned by every experiment that used it (``sidecar_owner``): they go with the last
        of them, operator or not. A Role from an earlier version gets this version's rules."""
        uid = experiment["metadata"]["uid"]
        if uid in self._sidecar_ready:
            return
        owner = sidecar_owner(experiment)
        namespace = experiment["metadata"]["namespace"]
        kinds = {"ServiceAccount": (self.core.create_namespaced_service_account,
                                    self.core.read_namespaced_service_account,
                                    self.core.patch_namespaced_service_account),
                 "Role": (self.rbac.create_namespaced_role, self.rbac.read_namespaced_role,
                          self.rbac.patch_namespaced_role),
                 "RoleBinding": (self.rbac.create_namespaced_role_binding, self.rbac.read_namespaced_role_binding,
                                 self.rbac.patch_namespaced_role_binding)}
        for obj in sidecar_rbac(namespace, owner):
            create, read, patch = kinds[obj["kind"]]
            try:
                _body(create(namespace, obj, _preload_content=False))
                continue
            except ApiException as err:
                if err.status != 409:
                    raise
            name = obj["metadata"]["name"]
            existing = json.loads(read(name, namespace, _preload_content=False).data)
            update = {}
            owners = existing["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners):
                update["metadata"] = {"ownerReferences": owners + [owner]}
            for field in ("rules", "subjects"):  # (a RoleBinding's roleRef cannot change, and never did)
                if field in obj and existing.get(field) != obj[field]:
                    update[field] = obj[field]
            if update:
                _body(patch(name, namespace, update, _preload_content=False))
        self._sidecar_ready.add(uid)

    def binds_at_once(self, storage_class: Optional[str]) -> bool:
        """Claims of this StorageClass (None: the default one) are bound as soon as they are created, by a
        provisioner (volumeBindingMode Immediate): a pod created before that is reported unschedulable.
        False where the classes cannot be read (the operator watches one namespace) or there is none."""
        if storage_class not in self._binds_at_once:
            self._binds_at_once[storage_class] = self._read_binds_at_once(storage_class)
        return self._binds_at_once[storage_class]

    def _read_binds_at_once(self, storage_class: Optional[str]) -> bool:
        try:
            classes = json.loads(self.storage.list_storage_class(_preload_content=False).data)["items"]
        except ApiException as err:
            if err.status in (401, 403, 404):
                return False
            raise
        default = "storageclass.kubernetes.io/is-default-class"
        chosen = [c for c in classes if (c["metadata"]["name"] == storage_class if storage_class
                                         else (c["metadata"].get("annotations") or {}).get(default) == "true")]
        return bool(chosen) and chosen[0].get("volumeBindingMode", "Immediate") == "Immediate" \
            and chosen[0].get("provisioner") != "kubernetes.io/no-provisioner"

    def wait_bound(self, namespace: str, claims: Collection[str], timeout: float) -> None:
        """Wait until these claims are Bound, at most ``timeout`` seconds (a pod created after it would
        otherwise be reported unschedulable once: a FailedScheduling Warning per new trial)."""
        left = set(claims)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            for name in sorted(left):
                claim = json.loads(self.core.read_namespaced_persistent_volume_claim(
                    name, namespace, _preload_content=False).data)
                if (claim.get("status") or {}).get("phase") == "Bound":
                    left.discard(name)
            if left:
                time.sleep(0.25)

    def create_trial(self, obj: dict) -> tuple[dict, bool]:
        """(the trial, whether this call created it)."""
        ns = obj["metadata"]["namespace"]
        try:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, TRIAL_PLURAL, obj), True
        except ApiException as err:
            if err.status != 409:
                raise
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, ns, TRIAL_PLURAL,
                                                            obj["metadata"]["name"]), False

    def patch_trial_status(self, namespace: str, name: str, patch: dict) -> None:
        _body(self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, TRIAL_PLURAL, name,
                                                                {"status": patch}, _preload_content=False))

    def patch_experiment_status(self, namespace: str, name: str, status: dict) -> None:
        _body(self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, EXPERIMENT_PLURAL, name,
                                                                {"status": status}, _preload_content=False))

    def create_pod(self, pod: dict, dry_run: bool = False) -> None:
        _create(self.core.create_namespaced_pod, pod["metadata"]["namespace"], pod,
                **({"dry_run": "All"} if dry_run else {}))

    def create_claim(self, claim: dict) -> None:
        _create(self.core.create_namespaced_persistent_volume_claim, claim["metadata"]["namespace"], claim)

    def delete_pods(self, namespace: str, experiment: str, attempt: int, trials: Collection[str]) -> None:
        """By label (the attempt is in the selector: after a crash, a trial's next pod may exist before its
        last one is deleted)."""
        _body(self.core.delete_collection_namespaced_pod(
            namespace, label_selector=f"{trial_selector(experiment, trials)},{LABEL_ATTEMPT}={attempt}",
            grace_period_seconds=10, _preload_content=False))

    def delete_claims(self, namespace: str, experiment: str, trials: Collection[str]) -> None:
        _body(self.core.delete_collection_namespaced_persistent_volume_claim(
            namespace, label_selector=trial_selector(experiment, trials), _preload_content=False))


def trial_selector(experiment: str, trials: Collection[str]) -> str:
    """The label selector of these trials' objects (~40 bytes a trial in the request's URL)."""
    return f"{LABEL_EXPERIMENT}={experiment},{LABEL_TRIAL} in ({','.join(sorted(set(trials)))})"
