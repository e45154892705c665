"""``python -m hpo_operator.sidecar``: run the metrics sidecar of one trial pod.

Its environment is the contract in ``sidecar/contract.py`` (trial, run, fence, objective, metrics and control
files, token directory), written by the operator's pod builder.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hpo_operator.sidecar.contract import SidecarEnv, SidecarEnvError
from hpo_operator.sidecar.reporter import Sidecar, trainer_exited
from hpo_operator.sidecar.trial_api import trial_api

log = logging.getLogger("hpo.sidecar")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        env = SidecarEnv.from_env(os.environ)
    except SidecarEnvError as err:
        log.error("Refused to start: %s", err)
        return 2
    token_dir = Path(env.token_dir)
    namespace = env.namespace or (token_dir / "namespace").read_text().strip()
    metrics = Path(env.metrics_file)
    # Its trial's status is all the sidecar reads and writes: observations and problems are
    # appended with JSON patches, and the operator announces the problems as Events.
    api = trial_api(token_dir, namespace, env.trial)
    sidecar = Sidecar(metrics, Path(env.control_file), env.objective, api.read_status, api.append,
                      trainer_exited(Path(str(metrics) + ".exit"), watch_processes=env.watch_processes),
                      poll_seconds=env.poll_seconds, attempt=env.attempt, run_fence=env.run_fence)
    code = sidecar.run()
    log.info("Finished trial=%s observations_sent=%d", env.trial, sidecar.sent)
    return code


if __name__ == "__main__":
    sys.exit(main())
