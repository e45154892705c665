"""Start and stop trainer processes for local runs: command, environment, GPUs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

from hpo_trainer import contract

from hpo_operator.engine import Launch


def trainer_command(spec, manifest_dir: Path) -> list[str]:
    """The trainer command for local runs.

    ``spec.local.command`` if given, else the trainer container's command and
    args. ``python``/``python3`` becomes this interpreter, and an argument that
    names an existing file relative to the manifest's folder is made absolute,
    so ``hpo run`` works from any working directory.
    """
    container = spec.trainer()
    command = list(spec.local.command or (container.get("command") or []) + (container.get("args") or []))
    if not command:
        raise ValueError(
            "spec.local.command: the trainer container has no command; give one for local runs, "
            "e.g. local: {command: [python, train.py]}"
        )
    if os.path.basename(command[0]) in ("python", "python3"):
        command[0] = sys.executable
    for i, arg in enumerate(command[1:], 1):
        candidate = manifest_dir / arg
        if not os.path.isabs(arg) and candidate.exists():
            command[i] = str(candidate.resolve())
    return command


def container_env(spec) -> dict[str, str]:
    """Literal ``env`` entries of the trainer container (valueFrom needs a cluster and is skipped)."""
    out = {}
    for item in spec.trainer().get("env") or []:
        if isinstance(item, dict) and "name" in item and "value" in item:
            out[item["name"]] = str(item["value"])
    return out


def visible_gpus() -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists."""
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        return [g for g in preset.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


@dataclass
class TrialPaths:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def control(self) -> Path:
        return self.root / "control.json"

    def log(self, attempt: int) -> Path:
        return self.root / f"run-{attempt}.log"


def write_control(path: Path, decided_epoch: int, until: int) -> None:
    """Tell a running trainer the decision for its latest epoch (atomic replace)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({contract.CONTROL_DECIDED_EPOCH: decided_epoch, contract.CONTROL_UNTIL: until}))
    os.replace(tmp, path)


class TrainerProcess:
    """One run of a trainer: a subprocess in its own process group, output to a log file."""

    def __init__(self, launch: Launch, command: list[str], env: dict[str, str], paths: TrialPaths):
        self.launch = launch
        self.paths = paths
        paths.checkpoints.mkdir(parents=True, exist_ok=True)
        self.log_path = paths.log(launch.attempt)
        self._log: IO[bytes] = open(self.log_path, "ab")
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        if not self._log.closed:
            self._log.close()

    def failure_message(self, code: int) -> str:
        """Why the run failed, quoting the end of its output (a traceback's last lines name the cause)."""
        tail = output_tail(self.log_path)
        quoted = f"; last output: {tail}" if tail else ""
        return f"trainer exited with code {code}{quoted}; log: {self.log_path}"


# The failure message is printed as one line and kept in results.json: a few
# lines are enough to name the cause, the full output stays in the log.
TAIL_LINES = 3
TAIL_CHARS = 400


def output_tail(path: Path, lines: int = TAIL_LINES, max_chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` non-blank lines of a log, joined with " | ", at most ``max_chars`` (its end kept)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    joined = " | ".join(kept)
    return joined if len(joined) <= max_chars else "..." + joined[-(max_chars - 3):]


def run_env(launch: Launch, spec, experiment: str, paths: TrialPaths, gpu: Optional[str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(container_env(spec))
    env.update(spec.local.env)
    env.update({
        contract.ENV_TRIAL_ID: launch.trial.name,
        contract.ENV_EXPERIMENT: experiment,
        contract.ENV_CONFIG: json.dumps(launch.trial.config),
        contract.ENV_START_EPOCH: str(launch.start_epoch),
        contract.ENV_UNTIL_EPOCH: str(launch.until),
        contract.ENV_MAX_EPOCH: str(spec.scheduler.max_resource),
        contract.ENV_CHECKPOINT_DIR: str(paths.checkpoints.resolve()),
        contract.ENV_METRICS_FILE: str(paths.metrics.resolve()),
        contract.ENV_CONTROL_FILE: str(paths.control.resolve()),
    })
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env
