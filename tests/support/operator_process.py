"""The operator as a separate process (kopf run) against a real API server, restartable and killable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class Operator:
    """The operator as a separate process (kopf run), restartable and killable."""

    def __init__(self, control_plane, namespace: str, logdir: Path):
        self.env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path), "HPO_RECONCILE_INTERVAL": "0.3",
                    "HPO_SIDECAR_IMAGE": "hpo-operator:test"}
        self.ns = namespace
        self.logdir = logdir
        self.proc = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.logdir / f"operator-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", f"--namespace={self.ns}",
                                      "-m", "hpo_operator.controller.handlers"], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("operator-*.log")))
