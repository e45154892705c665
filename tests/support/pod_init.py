"""TEST DOUBLE of a pod's shared process namespace: process 1 of a private PID namespace.

The node double runs ``unshare --pid --fork --mount-proc --kill-child python pod_init.py SPEC``
for a pod with ``shareProcessNamespace: true``. Like the pod's pause process,
this is process 1: it starts the trainer, then the sidecar, reaps each when it
exits, and writes each exit code to a file for the node double (the
kubelet's container statuses). The sidecar is told nothing: it sees the
trainer end through the namespace's own /proc, as it does in a pod.

SPEC is a JSON file: {"containers": [{"name", "argv", "env", "log"}, ...], "exit_dir"}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    exit_dir = Path(spec["exit_dir"])
    procs = {}
    for c in spec["containers"]:  # trainer first: the kubelet starts containers in order
        with open(c["log"], "ab") as log:
            procs[c["name"]] = subprocess.Popen(c["argv"], env=c["env"], stdout=log, stderr=subprocess.STDOUT)
    while procs:
        for name, proc in list(procs.items()):
            code = proc.poll()  # reaps it: its /proc entry goes, as a container's process does
            if code is not None:
                (exit_dir / f"{name}.exit-code").write_text(str(code))
                del procs[name]
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
