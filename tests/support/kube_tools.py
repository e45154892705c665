"""Small helpers for tests that talk to a real API server."""

from __future__ import annotations

import subprocess
import time


def kubectl(control_plane, *args, check=True, input=None) -> subprocess.CompletedProcess:
    """Run the real kubectl against ``control_plane`` (anything with a ``kubeconfig_path``)."""
    return subprocess.run(["kubectl", "--kubeconfig", str(control_plane.kubeconfig_path), *args],
                          capture_output=True, text=True, check=check, input=input)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
