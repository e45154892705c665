"""What a trial template may not ask for: root, privilege, host access or API credentials.

Trial pods run user code next to a sidecar that holds the only API token, so
a template that could become root, escape to the node or mount a token would
undo that. Such a template is refused before anything is created, with the
field and the fix, rather than silently overridden.
"""

from __future__ import annotations

from typing import Optional

# Volumes the operator adds to every trial pod; a template must not define or mount them itself.
RESERVED_VOLUMES = ("hpo-checkpoints", "hpo-metrics", "hpo-token")
CONTAINER_LISTS = ("initContainers", "containers")

_NO_ROOT = "trial pods run as a non-root user (uid 1000 unless set); use a non-zero uid or leave it out"
_NO_TOKEN = "the trainer gets no Kubernetes credentials (only the metrics sidecar holds a token); remove it"


def security_problem(pod_spec: dict) -> Optional[str]:
    """The first forbidden setting as ``field.path: why; fix`` (relative to the template), or None."""
    problem = _pod_problem(pod_spec) or _volume_problem(pod_spec.get("volumes") or [])
    for key in CONTAINER_LISTS:
        for i, container in enumerate(pod_spec.get(key) or []):
            if problem is None and isinstance(container, dict):
                problem = _container_problem(f"spec.{key}[{i}]", container)
    return problem


def _pod_problem(pod_spec: dict) -> Optional[str]:
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key) is True:
            return f"spec.{key}: trial pods may not share the node's namespaces; remove it"
    if pod_spec.get("automountServiceAccountToken") is True:
        return f"spec.automountServiceAccountToken: {_NO_TOKEN}"
    for key in ("serviceAccountName", "serviceAccount"):
        if pod_spec.get(key):
            return (f"spec.{key}: trial pods run as the operator's hpo-trial-sidecar ServiceAccount, "
                    f"whose token only the metrics sidecar mounts; remove it")
    return _run_as_problem("spec.securityContext", pod_spec.get("securityContext") or {})


def _run_as_problem(path: str, sc: dict) -> Optional[str]:
    if sc.get("runAsNonRoot") is False:
        return f"{path}.runAsNonRoot: {_NO_ROOT}"
    if sc.get("runAsUser") == 0:
        return f"{path}.runAsUser: {_NO_ROOT}"
    return None


def _container_problem(path: str, container: dict) -> Optional[str]:
    sc = container.get("securityContext") or {}
    sc_path = f"{path}.securityContext"
    if sc.get("privileged") is True:
        return f"{sc_path}.privileged: trial containers may not be privileged; remove it"
    if sc.get("allowPrivilegeEscalation") is True:
        return f"{sc_path}.allowPrivilegeEscalation: trial containers run without privilege escalation; remove it"
    if (sc.get("capabilities") or {}).get("add"):
        return f"{sc_path}.capabilities.add: trial containers run with all capabilities dropped; remove it"
    problem = _run_as_problem(sc_path, sc)
    if problem:
        return problem
    for j, mount in enumerate(container.get("volumeMounts") or []):
        if isinstance(mount, dict) and mount.get("name") in RESERVED_VOLUMES:
            return (f"{path}.volumeMounts[{j}].name: {mount['name']!r} is the operator's own volume "
                    f"({', '.join(RESERVED_VOLUMES)} are reserved); use another name")
    return None


def _volume_problem(volumes: list) -> Optional[str]:
    for i, volume in enumerate(volumes):
        if not isinstance(volume, dict):
            continue
        path = f"spec.volumes[{i}]"
        if volume.get("name") in RESERVED_VOLUMES:
            return (f"{path}.name: {volume['name']!r} is the operator's own volume "
                    f"({', '.join(RESERVED_VOLUMES)} are reserved); use another name")
        if "hostPath" in volume:
            return f"{path}.hostPath: trial pods may not mount the node's file system; use a PersistentVolumeClaim"
        sources = (volume.get("projected") or {}).get("sources") or []
        if any(isinstance(s, dict) and "serviceAccountToken" in s for s in sources):
            return f"{path}.projected.sources.serviceAccountToken: {_NO_TOKEN}"
    return None
