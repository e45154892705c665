"""The environment contract between the operator and the metrics sidecar of a trial pod.

The operator's pod builder writes these variables into the sidecar container
(``SidecarEnv.to_env``) and the sidecar reads them back at start
(``SidecarEnv.from_env``), so both sides use one list of names. The trainer's
side of the pod has its own contract, ``hpo_trainer.contract``; the metrics and
control files are named by the same variables in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from hpo_trainer import contract as trainer_contract

from hpo_operator.resources import GROUP

ENV_TRIAL = "HPO_TRIAL"  # the HPOTrial's name
ENV_ATTEMPT = "HPO_ATTEMPT"  # the run (pod attempt) number, 1-based; stamped on each observation and problem
# The trial's status.runFence when the run was launched. From the launch, not read at start: a sidecar that
# starts after its run was judged over would otherwise take the raised fence for its own.
ENV_RUN_FENCE = "HPO_RUN_FENCE"
ENV_OBJECTIVE = "HPO_OBJECTIVE"  # the metric the experiment optimises (its name in the metrics lines)
ENV_METRICS_FILE = trainer_contract.ENV_METRICS_FILE  # the trainer's JSON-lines file the sidecar reads
ENV_CONTROL_FILE = trainer_contract.ENV_CONTROL_FILE  # where the sidecar writes the operator's decisions
ENV_TOKEN_DIR = "HPO_TOKEN_DIR"  # projected service-account token, CA and namespace (in a pod)
# Outside a pod only (tests, a sidecar run by hand): the namespace, where no token directory says it.
ENV_NAMESPACE = "HPO_NAMESPACE"
ENV_POLL = "HPO_SIDECAR_POLL"  # seconds between reads of the metrics file
# "0": judge the trainer's end by its exit marker only, not by watching the pod's processes (a test double
# that runs the sidecar as a plain process, beside unrelated ones).
ENV_WATCH_PROCESSES = "HPO_SIDECAR_WATCH_PROCESSES"

DEFAULT_TOKEN_DIR = f"/var/run/secrets/{GROUP}/serviceaccount"
DEFAULT_POLL_SECONDS = 0.2


class SidecarEnvError(ValueError):
    """A variable of the contract is missing or malformed; the message names it."""


@dataclass(frozen=True)
class SidecarEnv:
    trial: str
    objective: str
    metrics_file: str
    control_file: str
    attempt: Optional[int] = None  # None: a run launched before attempts were numbered
    run_fence: Optional[int] = None  # None: take the fence on record when the sidecar starts
    token_dir: str = DEFAULT_TOKEN_DIR
    namespace: Optional[str] = None  # None: the token directory's namespace file says it
    poll_seconds: float = DEFAULT_POLL_SECONDS
    watch_processes: bool = True

    def to_env(self) -> list[dict]:
        """The container's ``env`` entries."""
        return [{"name": name, "value": value} for name, value in self.to_environ().items()]

    def to_environ(self) -> dict[str, str]:
        """The variables as a process environment; the optional ones only where they differ from the default."""
        pairs = [(ENV_TRIAL, self.trial)]
        if self.attempt is not None:
            pairs.append((ENV_ATTEMPT, str(self.attempt)))
        if self.run_fence is not None:
            pairs.append((ENV_RUN_FENCE, str(self.run_fence)))
        pairs += [(ENV_OBJECTIVE, self.objective), (ENV_METRICS_FILE, self.metrics_file),
                  (ENV_CONTROL_FILE, self.control_file), (ENV_TOKEN_DIR, self.token_dir)]
        if self.namespace is not None:
            pairs.append((ENV_NAMESPACE, self.namespace))
        if self.poll_seconds != DEFAULT_POLL_SECONDS:
            pairs.append((ENV_POLL, repr(self.poll_seconds)))
        if not self.watch_processes:
            pairs.append((ENV_WATCH_PROCESSES, "0"))
        return dict(pairs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SidecarEnv:
        """Read the contract from a process environment; SidecarEnvError names the first bad variable."""
        return cls(
            trial=_required(environ, ENV_TRIAL),
            objective=_required(environ, ENV_OBJECTIVE),
            metrics_file=_required(environ, ENV_METRICS_FILE),
            control_file=_required(environ, ENV_CONTROL_FILE),
            attempt=_whole(environ, ENV_ATTEMPT, minimum=1),
            run_fence=_whole(environ, ENV_RUN_FENCE, minimum=0),
            token_dir=environ.get(ENV_TOKEN_DIR) or DEFAULT_TOKEN_DIR,
            namespace=environ.get(ENV_NAMESPACE) or None,
            poll_seconds=_seconds(environ, ENV_POLL, DEFAULT_POLL_SECONDS),
            watch_processes=_flag(environ, ENV_WATCH_PROCESSES),
        )


_FIX = "the operator sets it in the trial pod's sidecar container; set it by hand when running the sidecar outside one"


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name)
    if not value:
        raise SidecarEnvError(f"{name} is not set: {_FIX}")
    return value


def _whole(environ: Mapping[str, str], name: str, minimum: int) -> Optional[int]:
    text = environ.get(name)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise SidecarEnvError(f"{name} must be a whole number >= {minimum}, got {text!r}: {_FIX}")
    return value


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise SidecarEnvError(f"{name} must be a number of seconds > 0, got {text!r}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    text = environ.get(name, "1") or "1"
    if text not in ("0", "1"):
        raise SidecarEnvError(f"{name} must be 0 or 1, got {text!r}")
    return text == "1"


__all__ = ["DEFAULT_TOKEN_DIR", "SidecarEnv", "SidecarEnvError"]
