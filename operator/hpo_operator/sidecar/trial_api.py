"""The sidecar's two API calls, read its trial and patch its status, over plain HTTPS.

The sidecar starts next to the trainer in every trial pod, often on a node
whose cores the trainer's own start-up wants. The kubernetes package costs
about a second of CPU to import (it loads every API model and its kubeconfig
machinery); these two calls need http.client and a bearer token.

Errors carry the HTTP status in ``.status`` (None: no answer), as the
kubernetes client's do, so ``reporter._transient`` judges both alike.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from hpo_operator.resources import GROUP, TRIAL_PLURAL, VERSION

TIMEOUT_SECONDS = 30.0


class ApiError(Exception):
    def __init__(self, status: Optional[int], reason: str, body: str = ""):
        super().__init__(f"({status}) {reason}: {body[:500]}" if body else f"({status}) {reason}")
        self.status, self.reason, self.body = status, reason, body


@dataclass(frozen=True)
class Endpoint:
    """Where the API server is and how to authenticate: a bearer token read from a file or given."""

    host: str
    port: int
    tls: ssl.SSLContext
    token_file: Optional[Path] = None
    token: Optional[str] = None

    def bearer(self) -> str:
        # Read at every call: the kubelet rotates a projected token in place.
        token = self.token_file.read_text().strip() if self.token_file is not None else self.token
        return f"Bearer {token}"


def in_pod_endpoint(token_dir: Path) -> Optional[Endpoint]:
    """The API server as a pod sees it (the kubernetes Service), or None outside a pod."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    token = token_dir / "token"
    if not host or not token.exists():
        return None
    ca = token_dir / "ca.crt"
    # Without the cluster's CA bundle the server is checked against the system's trust store, never
    # trusted blindly: a sidecar that cannot verify the API server refuses it rather than hand it the token.
    tls = ssl.create_default_context(cafile=str(ca)) if ca.exists() else ssl.create_default_context()
    return Endpoint(host, int(os.environ.get("KUBERNETES_SERVICE_PORT", "443")), tls, token_file=token)


def kubeconfig_endpoint(path: Path) -> Optional[Endpoint]:
    """The current context of a kubeconfig that uses a token; None for anything else (client certificates,
    exec plugins), which the caller hands to the kubernetes package."""
    import yaml  # only outside a pod: tests and trying the sidecar by hand

    doc = yaml.safe_load(path.read_text()) or {}
    by_name = {kind: {e["name"]: e.get(kind[:-1]) or {} for e in doc.get(kind) or []}
               for kind in ("contexts", "clusters", "users")}
    context = by_name["contexts"].get(doc.get("current-context"), {})
    cluster = by_name["clusters"].get(context.get("cluster"), {})
    user = by_name["users"].get(context.get("user"), {})
    token, token_file = user.get("token"), user.get("tokenFile")
    server = urlsplit(cluster.get("server") or "")
    if server.scheme != "https" or not server.hostname or not (token or token_file):
        return None
    if cluster.get("insecure-skip-tls-verify"):
        tls = _unverified()
    elif cluster.get("certificate-authority-data"):
        tls = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        ca = Path(cluster["certificate-authority"])
        tls = ssl.create_default_context(cafile=str(ca if ca.is_absolute() else path.parent / ca))
    else:
        tls = ssl.create_default_context()
    return Endpoint(server.hostname, server.port or 443, tls,
                    token_file=Path(token_file) if token_file else None, token=token)


def _unverified() -> ssl.SSLContext:
    # Only where a kubeconfig says insecure-skip-tls-verify, as kubectl does.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class TrialApi:
    """GET one HPOTrial and JSON-patch its status, on one kept-alive connection."""

    def __init__(self, endpoint: Endpoint, namespace: str, trial: str, timeout: float = TIMEOUT_SECONDS):
        self.endpoint = endpoint
        self.path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{TRIAL_PLURAL}/{trial}"
        self.timeout = timeout
        self._conn: Optional[http.client.HTTPSConnection] = None

    def read_status(self) -> dict:
        return self._call("GET", self.path).get("status") or {}

    def append(self, patch: list[dict]) -> dict:
        """Apply a JSON patch to the trial's status; the status after it."""
        return self._call("PATCH", self.path + "/status", patch, "application/json-patch+json").get("status") or {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, method: str, path: str, body: Any = None, content_type: Optional[str] = None) -> dict:
        headers = {"Authorization": self.endpoint.bearer(), "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type or "application/json"
        reused = self._conn is not None
        try:
            status, reason, raw = self._send(method, path, data, headers)
        except (OSError, http.client.HTTPException) as error:
            self.close()
            if not reused:
                raise ApiError(None, f"{type(error).__name__}: {error}") from error
            try:  # the server closed a kept-alive connection: once more on a new one
                status, reason, raw = self._send(method, path, data, headers)
            except (OSError, http.client.HTTPException) as again:
                self.close()
                raise ApiError(None, f"{type(again).__name__}: {again}") from again
        if status >= 300:
            raise ApiError(status, reason, raw.decode("utf-8", "replace"))
        return json.loads(raw)

    def _send(self, method: str, path: str, data: Optional[bytes], headers: dict) -> tuple[int, str, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.endpoint.host, self.endpoint.port,
                                                     timeout=self.timeout, context=self.endpoint.tls)
        self._conn.request(method, path, body=data, headers=headers)
        response = self._conn.getresponse()
        return response.status, response.reason, response.read()


class KubernetesTrialApi:
    """The same two calls through the kubernetes package, for kubeconfigs `kubeconfig_endpoint` cannot read."""

    def __init__(self, kubeconfig: Optional[str], namespace: str, trial: str):
        from kubernetes import client, config

        self._custom = client.CustomObjectsApi(config.new_client_from_config(kubeconfig))
        self._args = (GROUP, VERSION, namespace, TRIAL_PLURAL, trial)

    def read_status(self) -> dict:
        return self._custom.get_namespaced_custom_object(*self._args).get("status") or {}

    def append(self, patch: list[dict]) -> dict:
        obj = self._custom.patch_namespaced_custom_object_status(*self._args, patch,
                                                                 _content_type="application/json-patch+json")
        return obj.get("status") or {}


def trial_api(token_dir: Path, namespace: str, trial: str) -> TrialApi | KubernetesTrialApi:
    """In a pod: the projected token and the kubernetes Service. Elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    endpoint = in_pod_endpoint(token_dir)
    if endpoint is None:
        kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        single = os.pathsep not in kubeconfig and Path(kubeconfig).is_file()  # a merged list: the package's job
        endpoint = kubeconfig_endpoint(Path(kubeconfig)) if single else None
        if endpoint is None:
            return KubernetesTrialApi(os.environ.get("KUBECONFIG"), namespace, trial)
    return TrialApi(endpoint, namespace, trial)


__all__ = ["ApiError", "Endpoint", "KubernetesTrialApi", "TrialApi", "in_pod_endpoint", "kubeconfig_endpoint",
           "trial_api"]
