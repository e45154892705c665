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

from hpo_operator.sidecar.reporter import Sidecar, trainer_exited
from hpo_operator.sidecar.trial_api import trial_api

log = logging.getLogger("hpo.sidecar")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    token_dir = Path(os.environ.get("HPO_TOKEN_DIR", "/var/run/secrets/hpo.dev/serviceaccount"))
    trial = os.environ["HPO_TRIAL"]
    ns_file = token_dir / "namespace"
    namespace = os.environ.get("HPO_NAMESPACE") or ns_file.read_text().strip()
    metrics = Path(os.environ["HPO_METRICS_FILE"])
    # Its trial's status is all the sidecar reads and writes: observations and problems are
    # appended with JSON patches, and the operator announces the problems as Events.
    api = trial_api(token_dir, namespace, trial)
    sidecar = Sidecar(metrics, Path(os.environ["HPO_CONTROL_FILE"]), os.environ["HPO_OBJECTIVE"], api.read_status,
                      api.append, trainer_exited(Path(str(metrics) + ".exit")),
                      poll_seconds=float(os.environ.get("HPO_SIDECAR_POLL", "0.2")),
                      attempt=int(os.environ["HPO_ATTEMPT"]) if os.environ.get("HPO_ATTEMPT") else None,
                      run_fence=int(os.environ["HPO_RUN_FENCE"]) if os.environ.get("HPO_RUN_FENCE") else None)
    code = sidecar.run()
    log.info("Finished trial=%s observations_sent=%d", trial, sidecar.sent)
    return code


if __name__ == "__main__":
    sys.exit(main())
