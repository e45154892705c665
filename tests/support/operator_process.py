"""The operator as a separate process (``python -m hpo_operator.controller``, the image's entry point: kopf run)
against a real API server, restartable and killable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from support.control_plane import free_port


class Operator:
    """The operator as a separate process (kopf run), restartable and killable."""

    def __init__(self, control_plane, namespace: str, logdir: Path, *, kubeconfig: Optional[Path] = None,
                 kopf_args: Optional[list[str]] = None, env: Optional[dict[str, str]] = None):
        """``kubeconfig``: whose credentials it runs with (default: the admin's); ``kopf_args``: the arguments
        of ``kopf``, given to the entry point (default: ``run`` watching ``namespace``); ``env``: more environment.
        Its metrics are served at ``metrics_url`` (a free port of this machine's, whatever ``env`` says: tests
        run side by side)."""
        self.metrics_port = free_port()
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig or control_plane.kubeconfig_path),
                    "HPO_RECONCILE_INTERVAL": "0.3", "HPO_SIDECAR_IMAGE": "hpo-operator:test", **(env or {}),
                    "HPO_METRICS_PORT": str(self.metrics_port)}
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.kopf_args = kopf_args or ["run", "--standalone", f"--namespace={namespace}",
                                       "-m", "hpo_operator.controller.handlers"]
        self.ns = namespace
        self.logdir = logdir
        self.proc = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.logdir / f"operator-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "hpo_operator.controller", *self.kopf_args], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)

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
        logs = sorted(self.logdir.glob("operator-*.log"), key=lambda p: int(p.stem.split("-")[-1]))  # 2 before 10
        return "\n".join(p.read_text(errors="replace") for p in logs)
