"""TEST DOUBLE of a kubelet: runs the integration tier's pods without containers.

The integration tier has a real API server but no kubelet. This double plays
the node for one namespace: for each new trial pod it reads the trainer
contract from the pod's env, runs the real test trainer
(tests/trainers/curve_trainer.py, which replays a learning-curve row) and the
REAL metrics sidecar (``python -m hpo_operator.sidecar``, authenticated with
the sidecar ServiceAccount's own token, so its RBAC is exercised) as local
processes, and reports pod phases through the pods/status subresource. A
folder per trial plays the checkpoint volume, a folder per pod the shared
emptyDir. Deleted pods get their processes killed and are removed (there is
no kubelet to finish a graceful deletion).

Faults it can inject (tests/support/faults.py drives them):
- ``crash_pods``: these pods' trainers crash two epochs in;
- ``crash_rate``: that share of runs crash at a random epoch of their range
  (seeded per pod name, so the same pod always gets the same fate);
- ``stop()``/``start()``: the kubelet goes down, its trainers and sidecars die
  with it, the pods stay as they are in the API; started again it behaves as
  a kubelet after a node reboot: a Running pod whose containers are gone is
  set Failed (exit code 137, reason ContainerStatusUnknown);
- ``sidecar_server``: the sidecars reach the API server through this address
  (a fault-injecting proxy).

``pod_like=True`` runs each pod's containers as a kubelet would: in a private
PID namespace (tests/support/pod_init.py is its process 1), so the sidecar
sees the trainer end through /proc and is told nothing else; and with the
pod's projected volume written out (a bound token from the TokenRequest API,
the CA from the ``kube-root-ca.crt`` ConfigMap, the namespace), the sidecar
finding the API server through ``KUBERNETES_SERVICE_HOST/PORT`` and no
kubeconfig. The checkpoint volume honours the mount's ``subPath`` either way.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError as TransportError

from hpo_operator.sidecar import contract
from hpo_operator.sidecar.contract import SidecarEnv
from support.paths import CURVE_TRAINER

POD_INIT = Path(__file__).with_name("pod_init.py")


LOST_EXIT_CODE = 137  # what a kubelet reports for a container it lost (killed, node rebooted)


@dataclass
class Run:
    pod: str
    trainer: subprocess.Popen
    sidecar: subprocess.Popen
    metrics: Path
    trial: str = ""
    attempt: int = 0
    start_epoch: int = 0
    until: int = 0
    crash_at: Optional[int] = None  # the epoch its trainer was told to crash at
    exit_code: Optional[int] = None
    finished_at: Optional[float] = None
    ended: str = ""  # "exit <code>", "deleted" or "lost" (kubelet down)
    started_at: float = 0.0  # wall clock, to read beside the operator's logs
    sidecar_killed: bool = False  # its sidecar died with the pod before it finished: what it had not sent is gone

    def reported(self) -> list[tuple[int, dict]]:
        """(epoch, line) of every complete line the trainer wrote to its metrics file."""
        out = []
        try:
            lines = self.metrics.read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            try:
                doc = json.loads(line)
                out.append((int(doc["epoch"]), doc))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line: never complete, never reported
        return out


class PodContainer:
    """A container of a pod run under pod_init.py: its exit code is the file pod_init writes when it reaps it."""

    def __init__(self, exit_file: Path, pod: subprocess.Popen):
        self.exit_file = exit_file
        self.pod = pod
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            text = self.exit_file.read_text().strip() if self.exit_file.exists() else ""
            if text:
                self.returncode = int(text)
            elif self.pod.poll() is not None:
                self.returncode = LOST_EXIT_CODE  # the pod's process 1 is gone, and the container with it
        return self.returncode

    def kill(self) -> None:
        if self.pod.poll() is None:
            self.pod.kill()  # unshare --kill-child: process 1 dies, and the whole namespace with it

    def wait(self) -> None:
        self.pod.wait()


def _transient(err: Exception) -> bool:
    """API server restarting or unreachable: a kubelet retries, so does this double."""
    if isinstance(err, (TransportError, ConnectionError)):
        return True
    return isinstance(err, ApiException) and (err.status == 0 or err.status >= 500)


class NodeDouble:
    def __init__(self, control_plane, api: client.ApiClient, namespace: str, workdir: Path,
                 crash_pods: Optional[set[str]] = None, crash_rate: float = 0.0, seed: int = 0,
                 sidecar_server: Optional[str] = None, pod_like: bool = False, ca_override: Optional[str] = None):
        """``ca_override`` (pod_like only): the ``ca.crt`` to write instead of the ConfigMap's."""
        if pod_like and sidecar_server:
            raise ValueError("pod_like sidecars reach the API server at its own address (KUBERNETES_SERVICE_HOST)")
        self.cp = control_plane
        self.core = client.CoreV1Api(api)
        self.ns = namespace
        self.dir = Path(workdir)
        self.runs: dict[str, Run] = {}
        self.created = Counter()  # pod name -> times a pod of that name was started here
        self.crash_pods = crash_pods or set()
        self.crash_rate = crash_rate
        self.seed = seed
        self.sidecar_server = sidecar_server
        self.pod_like = pod_like
        self.ca_override = ca_override
        self.projected: dict[str, list[str]] = {}  # pod -> files written into its sidecar's projected volume
        self.history: list[Run] = []  # every run ever started, in start order
        self.lost_pods: list[str] = []  # pods set Failed after a kubelet restart
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sidecar_kubeconfig: Optional[Path] = None
        self.errors: list[str] = []
        self.transient_errors = 0

    def __enter__(self) -> "NodeDouble":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- the kubelet going down and coming back ------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The kubelet goes down with its containers; the API keeps the pods as they were."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for name in list(self.runs):
            self._kill(name, "lost")

    # ---- the node loop -------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as err:  # keep playing the node; the test sees errors
                if _transient(err):
                    self.transient_errors += 1
                else:
                    self.errors.append(f"node double: {err!r}")
            self._stop.wait(0.1)

    def _step(self) -> None:
        pods = {p.metadata.name: p for p in self.core.list_namespaced_pod(self.ns).items}
        for name, pod in pods.items():
            if pod.metadata.deletion_timestamp is not None:
                self._kill(name, "deleted")
                self._force_delete(name)
            elif name not in self.runs and (pod.status.phase in (None, "Pending")):
                self._start(pod)
            elif name not in self.runs and pod.status.phase == "Running":
                self._lose(name)  # its containers died with the kubelet
        for name, run in list(self.runs.items()):
            if name not in pods:
                self._kill(name, "deleted")
                continue
            if run.exit_code is None and run.trainer.poll() is not None:
                run.exit_code = run.trainer.returncode
                run.ended = f"exit {run.exit_code}"
                if not self.pod_like:  # a pod's sidecar sees the trainer end in the shared process table
                    Path(str(run.metrics) + ".exit").write_text(str(run.exit_code))  # the sidecar's "trainer ended"
                run.finished_at = time.monotonic()
            if run.exit_code is not None and (run.sidecar.poll() is not None
                                              or time.monotonic() - run.finished_at > 30):
                self._finish(name, run)

    def _start(self, pod) -> None:
        name = pod.metadata.name
        self._post_scheduled(pod)
        self.created[name] += 1
        trainer = next(c for c in pod.spec.containers if c.name != "hpo-metrics")
        sidecar = next(c for c in pod.spec.containers if c.name == "hpo-metrics")
        env = {e.name: e.value for e in trainer.env or [] if e.value is not None}
        side_env = {e.name: e.value for e in sidecar.env or [] if e.value is not None}
        volume = next(v for v in pod.spec.volumes if v.name == "hpo-checkpoints")
        claim = volume.persistent_volume_claim.claim_name
        mount = next(m for m in trainer.volume_mounts if m.name == "hpo-checkpoints")
        ckpt = self.dir / "volumes" / claim / (mount.sub_path or "")
        poddir = self.dir / "pods" / name
        ckpt.mkdir(parents=True, exist_ok=True)
        poddir.mkdir(parents=True, exist_ok=True)
        metrics, control = poddir / "metrics.jsonl", poddir / "control.json"
        env.update(HPO_CHECKPOINT_DIR=str(ckpt), HPO_METRICS_FILE=str(metrics), HPO_CONTROL_FILE=str(control))
        start, until = int(env["HPO_START_EPOCH"]), int(env["HPO_UNTIL_EPOCH"])
        crash_at = self._crash_epoch(name, start, until)
        if crash_at is not None:
            config = json.loads(env["HPO_CONFIG"])
            config["crash_at_epoch"] = crash_at
            env["HPO_CONFIG"] = json.dumps(config)
        if self.pod_like:
            trainer_proc, sidecar_proc = self._start_pod(pod, poddir, env, side_env)
        else:
            log = open(poddir / "trainer.log", "ab")
            trainer_proc = subprocess.Popen([sys.executable, str(CURVE_TRAINER)], env={**os.environ, **env},
                                            stdout=log, stderr=subprocess.STDOUT)
            # A plain process beside others: its namespace and credentials from a kubeconfig, its trainer's
            # end from the exit marker.
            local = replace(SidecarEnv.from_env(side_env), metrics_file=str(metrics), control_file=str(control),
                            namespace=self.ns, token_dir=str(poddir / "no-token"), watch_processes=False,
                            poll_seconds=0.1)
            side_env = {**local.to_environ(), "KUBECONFIG": str(self._sidecar_config())}
            side_log = open(poddir / "sidecar.log", "ab")
            sidecar_proc = subprocess.Popen([sys.executable, "-m", "hpo_operator.sidecar"],
                                            env={**os.environ, **side_env}, stdout=side_log,
                                            stderr=subprocess.STDOUT)
        launched = SidecarEnv.from_env(side_env)
        run = Run(name, trainer_proc, sidecar_proc, metrics, trial=launched.trial, attempt=launched.attempt or 0,
                  start_epoch=start, until=until, crash_at=crash_at, started_at=time.time())
        self.runs[name] = run
        self.history.append(run)
        self._set_phase(name, "Running")

    def _post_scheduled(self, pod) -> None:
        """The Event kube-scheduler posts when it binds a pod to a node: a pod started here has one, as on a
        cluster (an outage raises, and the pod waits for the next round, unstarted)."""
        name = pod.metadata.name
        self.core.create_namespaced_event(self.ns, {
            "metadata": {"generateName": f"{name}."},
            "involvedObject": {"kind": "Pod", "namespace": self.ns, "name": name, "uid": pod.metadata.uid},
            "reason": "Scheduled", "message": f"Successfully assigned {self.ns}/{name} to the node double",
            "type": "Normal", "source": {"component": "default-scheduler"}})

    def _start_pod(self, pod, poddir: Path, env: dict, side_env: dict) -> tuple[PodContainer, PodContainer]:
        """Trainer and sidecar in one private PID namespace; the sidecar with in-cluster credentials only."""
        launched = SidecarEnv.from_env(side_env)
        token_dir = self._write_projected_volume(pod, poddir, launched.token_dir)
        host_env = {k: v for k, v in os.environ.items()
                    if k not in ("KUBECONFIG", contract.ENV_NAMESPACE, contract.ENV_WATCH_PROCESSES)}
        in_pod = replace(launched, metrics_file=env[contract.ENV_METRICS_FILE],
                         control_file=env[contract.ENV_CONTROL_FILE], token_dir=str(token_dir), poll_seconds=0.1)
        side_env.clear()
        side_env.update(in_pod.to_environ(), KUBERNETES_SERVICE_HOST="127.0.0.1",
                        KUBERNETES_SERVICE_PORT=str(self.cp.port))
        spec = {"exit_dir": str(poddir), "containers": [
            {"name": "trainer", "argv": [sys.executable, str(CURVE_TRAINER)], "env": {**os.environ, **env},
             "log": str(poddir / "trainer.log")},
            {"name": "sidecar", "argv": [sys.executable, "-m", "hpo_operator.sidecar"],
             "env": {**host_env, **side_env}, "log": str(poddir / "sidecar.log")},
        ]}
        spec_path = poddir / "pod.json"
        spec_path.write_text(json.dumps(spec))
        for name in ("trainer", "sidecar"):
            (poddir / f"{name}.exit-code").unlink(missing_ok=True)
        user_ns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        proc = subprocess.Popen(["unshare", *user_ns, "--pid", "--fork", "--mount-proc", "--kill-child",
                                 sys.executable, str(POD_INIT), str(spec_path)],
                                stdout=open(poddir / "pod.log", "ab"), stderr=subprocess.STDOUT)
        return (PodContainer(poddir / "trainer.exit-code", proc), PodContainer(poddir / "sidecar.exit-code", proc))

    def _write_projected_volume(self, pod, poddir: Path, mount_path: str) -> Path:
        """What a kubelet writes into the sidecar's projected volume: a token bound to the pod, CA, namespace."""
        sidecar = next(c for c in pod.spec.containers if c.name == "hpo-metrics")
        mount = next(m for m in sidecar.volume_mounts if m.mount_path == mount_path)
        volume = next(v for v in pod.spec.volumes if v.name == mount.name)
        out = poddir / "projected"
        out.mkdir(mode=0o700, exist_ok=True)
        files: dict[str, str] = {}
        for source in volume.projected.sources:
            if source.service_account_token:
                sat = source.service_account_token
                request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
                    audiences=[sat.audience] if sat.audience else [], expiration_seconds=sat.expiration_seconds,
                    bound_object_ref=client.V1BoundObjectReference(kind="Pod", api_version="v1",
                                                                   name=pod.metadata.name, uid=pod.metadata.uid)))
                answer = self.core.create_namespaced_service_account_token(pod.spec.service_account_name, self.ns,
                                                                           request)
                files[sat.path] = answer.status.token
            elif source.config_map:
                try:
                    data = self.core.read_namespaced_config_map(source.config_map.name, self.ns).data or {}
                except ApiException as err:
                    if err.status == 404 and source.config_map.optional:
                        continue
                    raise
                for item in source.config_map.items:
                    files[item.path] = data[item.key]
            elif source.downward_api:
                for item in source.downward_api.items:
                    if item.field_ref.field_path != "metadata.namespace":
                        raise NotImplementedError(f"node double: downward API field {item.field_ref.field_path}")
                    files[item.path] = self.ns
        if self.ca_override is not None and "ca.crt" in files:
            files["ca.crt"] = self.ca_override
        for path, text in files.items():
            (out / path).write_text(text)
        self.projected[pod.metadata.name] = sorted(files)
        return out

    def _crash_epoch(self, name: str, start: int, until: int) -> Optional[int]:
        if name in self.crash_pods:  # this run's trainer crashes two epochs in
            return start + 2
        rng = random.Random(f"{self.seed}/{name}")  # the same pod name always draws the same fate
        if rng.random() < self.crash_rate:
            return rng.randint(start + 1, until)
        return None

    def _lose(self, name: str) -> None:
        """After a restart: a pod the API says is Running has no containers here any more."""
        state = {"terminated": {"exitCode": LOST_EXIT_CODE, "reason": "ContainerStatusUnknown",
                                "message": "The container could not be located when the pod was terminated"}}
        statuses = [{"name": "trainer", "ready": False, "restartCount": 0, "image": "trainer", "imageID": "",
                     "state": state}]
        self._set_phase(name, "Failed", statuses)
        self.lost_pods.append(name)

    def _finish(self, name: str, run: Run) -> None:
        code = run.exit_code
        state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
        statuses = [{"name": "trainer", "ready": False, "restartCount": 0, "image": "trainer", "imageID": "",
                     "state": state}]
        self._set_phase(name, "Succeeded" if code == 0 else "Failed", statuses)
        del self.runs[name]

    def _kill(self, name: str, why: str) -> None:
        run = self.runs.pop(name, None)
        if run is None:
            return
        if run.exit_code is None:
            run.ended = why
        run.sidecar_killed = run.sidecar.poll() is None
        for proc in (run.trainer, run.sidecar):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _set_phase(self, name: str, phase: str, container_statuses: Optional[list] = None) -> None:
        status = {"phase": phase}
        if container_statuses:
            status["containerStatuses"] = container_statuses
        try:
            self.core.patch_namespaced_pod_status(name, self.ns, {"status": status})
        except ApiException as err:
            if err.status != 404:
                raise

    def _force_delete(self, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, self.ns, grace_period_seconds=0)
        except ApiException as err:
            if err.status != 404:
                raise

    def _sidecar_config(self) -> Path:
        """A kubeconfig holding the sidecar ServiceAccount's own token (made by the operator)."""
        if self._sidecar_kubeconfig is None:
            sa = self.core.read_namespaced_service_account("hpo-trial-sidecar", self.ns)
            deadline = time.monotonic() + 30
            while not sa.secrets and time.monotonic() < deadline:
                time.sleep(0.2)
                sa = self.core.read_namespaced_service_account("hpo-trial-sidecar", self.ns)
            secret = self.core.read_namespaced_secret(sa.secrets[0].name, self.ns)
            token = base64.b64decode(secret.data["token"]).decode()
            self._sidecar_kubeconfig = self.cp.kubeconfig_for_token(token, f"sidecar-{self.ns}",
                                                                    server=self.sidecar_server)
        return self._sidecar_kubeconfig
