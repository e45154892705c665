"""``python -m hpo_operator.sidecar``: run the metrics sidecar of one trial pod.

Environment: HPO_TRIAL (trial name), HPO_ATTEMPT (run number), HPO_RUN_FENCE (the trial's runFence at launch),
HPO_OBJECTIVE (metric), HPO_METRICS_FILE,
HPO_CONTROL_FILE, HPO_TOKEN_DIR (projected token, CA and namespace; absent
outside a pod, where KUBECONFIG and HPO_NAMESPACE are used instead).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from kubernetes import client, config

from hpo_operator.sidecar.reporter import GROUP, VERSION, Sidecar, trainer_exited

log = logging.getLogger("hpo.sidecar")


def api_client(token_dir: Path) -> client.ApiClient:
    token = token_dir / "token"
    if token.exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        cfg.host = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
        cfg.api_key = {"authorization": "Bearer " + token.read_text().strip()}
        ca = token_dir / "ca.crt"
        cfg.ssl_ca_cert = str(ca) if ca.exists() else None
        cfg.verify_ssl = ca.exists()
        return client.ApiClient(cfg)
    return config.new_client_from_config(os.environ.get("KUBECONFIG"))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token_dir = Path(os.environ.get("HPO_TOKEN_DIR", "/var/run/secrets/hpo.dev/serviceaccount"))
    trial = os.environ["HPO_TRIAL"]
    ns_file = token_dir / "namespace"
    namespace = os.environ.get("HPO_NAMESPACE") or ns_file.read_text().strip()
    metrics = Path(os.environ["HPO_METRICS_FILE"])
    api = api_client(token_dir)
    custom = client.CustomObjectsApi(api)

    # Its trial's status is all the sidecar reads and writes: observations and problems are
    # appended with JSON patches, and the operator announces the problems as Events.
    def read_status() -> dict:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "hpotrials", trial)
        return obj.get("status") or {}

    def append(patch: list[dict]) -> dict:
        obj = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "hpotrials", trial, patch,
                                                           _content_type="application/json-patch+json")
        return obj.get("status") or {}

    sidecar = Sidecar(metrics, Path(os.environ["HPO_CONTROL_FILE"]), os.environ["HPO_OBJECTIVE"], read_status,
                      append, trainer_exited(Path(str(metrics) + ".exit")),
                      poll_seconds=float(os.environ.get("HPO_SIDECAR_POLL", "0.2")),
                      attempt=int(os.environ["HPO_ATTEMPT"]) if os.environ.get("HPO_ATTEMPT") else None,
                      run_fence=int(os.environ["HPO_RUN_FENCE"]) if os.environ.get("HPO_RUN_FENCE") else None)
    code = sidecar.run()
    log.info("Finished trial=%s observations_sent=%d", trial, sidecar.sent)
    return code


if __name__ == "__main__":
    sys.exit(main())
