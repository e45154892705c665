"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager.

Everything listens on 127.0.0.1 on free ports and lives in one temporary
folder; ``stop()`` ends exactly the processes it started. No kubelet: pods
are created and stored but never run (the integration tier plays the node
with a clearly named test double). The controller manager runs garbage
collection (ownerReferences), the service-account token controller and the
publisher of each namespace's ``kube-root-ca.crt`` ConfigMap (what a pod's
projected volume reads its CA from).

    with ControlPlane(bin_dir) as cp:
        print(cp.kubeconfig_path)

    python -m tests.support.control_plane up     # for a developer: prints KUBECONFIG, Ctrl-C stops
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "hpo-test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_binaries() -> Path:
    """Build or find the cached Kubernetes binaries (scripts/k8s-binaries.sh); returns the bin dir."""
    out = subprocess.run([str(REPO / "scripts" / "k8s-binaries.sh")], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return Path(out.strip().splitlines()[-1])


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    def __init__(self, bin_dir: Path, *, tokens: Optional[dict[str, tuple[str, list[str]]]] = None,
                 controller_manager: bool = True, workdir: Optional[Path] = None, audit: bool = False):
        """``tokens``: extra static tokens, token -> (user name, groups), for RBAC tests.
        ``audit``: log every completed request (who, verb, resource) to ``audit_log_path``, for counting."""
        self.bin_dir = Path(bin_dir)
        self.tokens = {ADMIN_TOKEN: ("hpo-test-admin", ["system:masters"]), **(tokens or {})}
        self.with_controller_manager = controller_manager
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="hpo-control-plane-"))
        self.port = free_port()
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.token = ADMIN_TOKEN
        self.kubeconfig_path = self.dir / "admin.kubeconfig"
        self._procs: dict[str, subprocess.Popen] = {}
        self.audit_log_path = self.dir / "audit.log" if audit else None
        self._argv: dict[str, list[str]] = {}

    # ---- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "ControlPlane":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        try:
            self._keys()
            self._spawn("etcd", [
                shutil.which("etcd") or "/usr/bin/etcd", "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.etcd_peer_port}",
                "--initial-cluster", f"default=http://127.0.0.1:{self.etcd_peer_port}",
                "--name", "default", "--log-level", "warn",
            ])
            self._spawn("kube-apiserver", [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}", "--insecure-port=0",
                f"--cert-dir={self.dir / 'certs'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={self.dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.dir / 'sa.key'}",
                "--api-audiences=https://kubernetes.default.svc",
                f"--token-auth-file={self.dir / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--enable-priority-and-fairness=false",
                "--v=1",
                *self._audit_flags(),
            ])
            self._write_kubeconfig(self.kubeconfig_path, self.token, "admin")
            self._wait_ready("/readyz", timeout=60)
            if self.with_controller_manager:
                self._spawn("kube-controller-manager", [
                    str(self.bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={self.kubeconfig_path}",
                    f"--service-account-private-key-file={self.dir / 'sa.key'}",
                    f"--root-ca-file={self.dir / 'certs' / 'apiserver.crt'}",
                    "--controllers=garbagecollector,serviceaccount,serviceaccount-token,namespace,root-ca-cert-publisher",
                    "--leader-elect=false", "--port=0", "--secure-port=0",
                    "--concurrent-gc-syncs=5", "--v=1",
                ])
                self.wait_default_service_account("default", timeout=60)
        except Exception:
            self.stop(keep_logs=True)
            raise
        self.startup_seconds = time.monotonic() - started

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 120) -> float:
        """Stop kube-apiserver and start it again on the same port, etcd and certificates (as an upgrade or
        a crashed control-plane node does); returns the seconds it answered nothing."""
        started = time.monotonic()
        self.stop_apiserver()
        time.sleep(down_seconds)
        self.start_apiserver(timeout)
        return time.monotonic() - started

    def stop_apiserver(self) -> None:
        """SIGTERM, then SIGKILL after 5 s: a graceful stop waits up to a minute for open watches to end."""
        _terminate(self._procs.pop("kube-apiserver"), grace_seconds=5)

    def start_apiserver(self, timeout: float = 120) -> None:
        self._spawn("kube-apiserver", self._argv["kube-apiserver"])
        self._wait_ready("/readyz", timeout=timeout)

    def stop(self, keep_logs: bool = False) -> None:
        for name in reversed(list(self._procs)):
            proc = self._procs.pop(name)
            if proc.poll() is None:
                _terminate(proc, grace_seconds=10)
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---- credentials -----------------------------------------------------------
    def kubeconfig_for_token(self, token: str, name: str, server: Optional[str] = None) -> Path:
        """A kubeconfig that authenticates with ``token`` (a static one or a service-account token);
        ``server``: another address to reach the API server through (a plain-HTTP proxy, say)."""
        path = self.dir / f"{name}.kubeconfig"
        self._write_kubeconfig(path, token, name, server)
        return path

    def _write_kubeconfig(self, path: Path, token: str, user: str, server: Optional[str] = None) -> None:
        # The API server's serving certificate is self-signed: trust it as the CA.
        ca = self.dir / "certs" / "apiserver.crt"
        cluster = {"server": server or self.server}
        if not cluster["server"].startswith("https://"):
            pass  # plain HTTP (a test proxy): nothing to trust
        elif ca.exists():
            cluster["certificate-authority"] = str(ca)
        else:
            cluster["insecure-skip-tls-verify"] = True
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        }
        path.write_text(json.dumps(config))

    def _keys(self) -> None:
        (self.dir / "certs").mkdir(parents=True, exist_ok=True)
        key, pub = self.dir / "sa.key", self.dir / "sa.pub"
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], check=True,
                       capture_output=True)
        lines = [f'{tok},{user},{user},"{",".join(groups)}"' for tok, (user, groups) in self.tokens.items()]
        (self.dir / "tokens.csv").write_text("\n".join(lines) + "\n")

    def _audit_flags(self) -> list[str]:
        if self.audit_log_path is None:
            return []
        policy = self.dir / "audit-policy.json"
        policy.write_text(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                      "omitStages": ["RequestReceived", "ResponseStarted"],
                                      "rules": [{"level": "Metadata"}]}))
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log_path}",
                "--audit-log-maxsize=100000"]  # megabytes; 0 would mean its default, 100

    # ---- processes -------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        self._argv[name] = argv
        log = open(self.dir / f"{name}.log", "ab")
        self._procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        log.close()

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}")

    def get(self, path: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _wait_ready(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self.get(path)
                if status == 200:
                    self._write_kubeconfig(self.kubeconfig_path, self.token, "admin")  # now with the CA
                    return
                last = f"{status} {body[:200]!r}"
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        raise ControlPlaneError(f"kube-apiserver not ready after {timeout}s ({last}):\n"
                                f"{self.log_tail('kube-apiserver')}")

    def wait_default_service_account(self, namespace: str, timeout: float) -> None:
        """Wait for the controller manager to give ``namespace`` its "default" ServiceAccount.

        Until then the API server refuses every pod created there (403, "serviceaccount
        \"default\" not found"), as a real cluster does right after a namespace is made.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            status, _ = self.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
            if status == 200:
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"controller manager made no default service account in "
                                f"{namespace!r} in {timeout}s:\n"
                                f"{self.log_tail('kube-controller-manager')}")


def _terminate(proc: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_seconds``, and reap it."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    if sys.argv[1:] != ["up"]:
        print("usage: python -m tests.support.control_plane up", file=sys.stderr)
        return 2
    with ControlPlane(ensure_binaries()) as cp:
        print(f"export KUBECONFIG={cp.kubeconfig_path}   # Ctrl-C stops etcd and the API server", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
