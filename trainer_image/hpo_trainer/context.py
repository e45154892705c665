"""What a trainer is asked to do, read from the environment contract (see contract.py).

`TrialContext.from_env()` is the one place that parses the variables, so a
bad value fails at start-up with a message naming the variable, instead of
half way through training.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import contract, trace
from .checkpoint import checkpoint_epoch
from .control import wait_for_decision

T = TypeVar("T")

# Used when a runner leaves the informational names unset (e.g. run by hand).
DEFAULT_NAME = "local"


class TrialContextError(ValueError):
    """An environment variable of the contract is missing or malformed."""


@dataclass(frozen=True)
class TrialContext:
    config: Mapping[str, Any]
    until_epoch: int
    checkpoint_dir: Path
    metrics_file: Path
    start_epoch: int = 0
    max_epoch: int | None = None  # None -> until_epoch (an int after construction)
    trial_id: str = DEFAULT_NAME
    experiment: str = DEFAULT_NAME
    data_dir: Path | None = None
    control_file: Path | None = None  # None: the runner does not promote in place
    decision_timeout: float = contract.DEFAULT_DECISION_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_epoch is None:
            object.__setattr__(self, "max_epoch", self.until_epoch)
        _check_epochs(self.start_epoch, self.until_epoch, self.max_epoch)
        if not 0 <= self.decision_timeout < math.inf:
            raise TrialContextError(
                f"{contract.ENV_DECISION_TIMEOUT} must be a finite number of seconds, 0 or more, got {self.decision_timeout}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrialContext:
        """Parse the contract's variables from `environ` (default: os.environ)."""
        env = os.environ if environ is None else environ
        required = (contract.ENV_UNTIL_EPOCH, contract.ENV_CHECKPOINT_DIR, contract.ENV_METRICS_FILE)
        missing = [name for name in required if not env.get(name)]
        if missing:
            raise TrialContextError(
                f"{', '.join(missing)} not set. A runner (hpo run, the operator) sets "
                f"these; to run a trainer by hand, set them yourself, e.g. "
                f"{contract.ENV_UNTIL_EPOCH}=3 {contract.ENV_CHECKPOINT_DIR}=/tmp/trial/ckpt "
                f"{contract.ENV_METRICS_FILE}=/tmp/trial/metrics.jsonl, or call "
                f"hpo_trainer.run_by_hand(...)."
            )
        until = _int_var(env, contract.ENV_UNTIL_EPOCH, None)
        data_dir = env.get(contract.ENV_DATA_DIR)
        control_file = env.get(contract.ENV_CONTROL_FILE)
        return cls(
            config=_config_var(env),
            until_epoch=until,
            start_epoch=_int_var(env, contract.ENV_START_EPOCH, 0),
            max_epoch=_int_var(env, contract.ENV_MAX_EPOCH, until),
            checkpoint_dir=Path(env[contract.ENV_CHECKPOINT_DIR]),
            metrics_file=Path(env[contract.ENV_METRICS_FILE]),
            trial_id=env.get(contract.ENV_TRIAL_ID) or DEFAULT_NAME,
            experiment=env.get(contract.ENV_EXPERIMENT) or DEFAULT_NAME,
            data_dir=Path(data_dir) if data_dir else None,
            control_file=Path(control_file) if control_file else None,
            decision_timeout=_float_var(env, contract.ENV_DECISION_TIMEOUT, contract.DEFAULT_DECISION_TIMEOUT),
        )

    @classmethod
    def for_local(
        cls,
        workdir: Path | str,
        *,
        until_epoch: int,
        config: Mapping[str, Any] | None = None,
        start_epoch: int | None = None,
        max_epoch: int | None = None,
        trial_id: str = DEFAULT_NAME,
        experiment: str = DEFAULT_NAME,
        data_dir: Path | str | None = None,
    ) -> TrialContext:
        """A context rooted in `workdir` (checkpoints/ and metrics.jsonl inside it).

        start_epoch=None resumes after the newest complete checkpoint in the
        folder, so calling this again with a larger until_epoch continues a
        paused run.
        """
        workdir = Path(workdir)
        checkpoint_dir = workdir / "checkpoints"
        if start_epoch is None:
            start_epoch = checkpoint_epoch(checkpoint_dir)
        return cls(
            config=dict(config or {}),
            until_epoch=until_epoch,
            start_epoch=start_epoch,
            max_epoch=max_epoch,
            checkpoint_dir=checkpoint_dir,
            metrics_file=workdir / "metrics.jsonl",
            trial_id=trial_id,
            experiment=experiment,
            data_dir=Path(data_dir) if data_dir is not None else None,
        )

    def to_env(self) -> dict[str, str]:
        """The contract's variables for this context; `from_env(ctx.to_env()) == ctx`."""
        env = {
            contract.ENV_TRIAL_ID: self.trial_id,
            contract.ENV_EXPERIMENT: self.experiment,
            contract.ENV_CONFIG: json.dumps(dict(self.config)),
            contract.ENV_START_EPOCH: str(self.start_epoch),
            contract.ENV_UNTIL_EPOCH: str(self.until_epoch),
            contract.ENV_MAX_EPOCH: str(self.max_epoch),
            contract.ENV_CHECKPOINT_DIR: str(self.checkpoint_dir),
            contract.ENV_METRICS_FILE: str(self.metrics_file),
        }
        if self.data_dir is not None:
            env[contract.ENV_DATA_DIR] = str(self.data_dir)
        if self.control_file is not None:
            env[contract.ENV_CONTROL_FILE] = str(self.control_file)
            env[contract.ENV_DECISION_TIMEOUT] = repr(float(self.decision_timeout))
        return env

    def epochs(self, after: int | None = None) -> Iterator[int]:
        """Epochs to train: after+1 .. until_epoch (after defaults to start_epoch).

        Pass the epoch `torch_state.restore` returned: it is lower than
        start_epoch only when the checkpoint of start_epoch was lost.

        With a control file (promote in place), once the loop body of the last
        epoch has run (checkpoint saved, metrics reported) the iterator waits
        up to decision_timeout for the runner's decision and, if it raises
        `until`, goes on yielding epochs in this same process.
        """
        epoch = self.start_epoch if after is None else after
        until = self.until_epoch
        while True:
            while epoch < until:
                epoch += 1
                yield epoch
            extended = self._decision(until)
            if extended is None or extended <= until:
                return
            until = extended

    def _decision(self, until: int) -> int | None:
        if self.control_file is None:
            return None
        decided = wait_for_decision(self.control_file, until, self.decision_timeout)
        trace.mark("decision", epoch=until, until=decided)
        if decided is not None and decided > self.max_epoch:
            print(
                f"hpo_trainer: control file asks for epoch {decided}, beyond {contract.ENV_MAX_EPOCH}="
                f"{self.max_epoch}; stopping at {self.max_epoch}",
                file=sys.stderr,
            )
            return self.max_epoch
        return decided


def _check_epochs(start: int, until: int, max_epoch: int) -> None:
    if until < 1:
        raise TrialContextError(f"{contract.ENV_UNTIL_EPOCH} must be at least 1, got {until}")
    if start < 0:
        raise TrialContextError(f"{contract.ENV_START_EPOCH} must be 0 or more, got {start}")
    if start >= until:
        raise TrialContextError(
            f"{contract.ENV_START_EPOCH} ({start}) must be less than {contract.ENV_UNTIL_EPOCH} "
            f"({until}): there is nothing to train. The runner should not start this trial."
        )
    if max_epoch < until:
        raise TrialContextError(
            f"{contract.ENV_MAX_EPOCH} ({max_epoch}) must be at least {contract.ENV_UNTIL_EPOCH} ({until})"
        )


def _int_var(env: Mapping[str, str], name: str, default: int | None) -> int:
    raw = env.get(name)
    if not raw:
        if default is None:
            raise TrialContextError(f"{name} is not set")
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise TrialContextError(f"{name} must be a whole number (an epoch), got {raw!r}") from None


def _float_var(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw.strip())
    except ValueError:
        raise TrialContextError(f"{name} must be a number of seconds, got {raw!r}") from None


def _config_var(env: Mapping[str, str]) -> dict[str, Any]:
    raw = env.get(contract.ENV_CONFIG)
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise TrialContextError(
            f"{contract.ENV_CONFIG} is not valid JSON ({error.msg} at position {error.pos}); "
            f"it must be a JSON object such as '{{\"learning_rate\": 0.01}}'"
        ) from None
    if not isinstance(config, dict):
        raise TrialContextError(
            f"{contract.ENV_CONFIG} must be a JSON object such as '{{\"learning_rate\": 0.01}}', "
            f"got a JSON {type(config).__name__}"
        )
    return config


def run_by_hand(train: Callable[[], T], ctx: TrialContext) -> T:
    """Call a trainer's entry point as a runner would, without setting up the environment.

    The contract's variables of `ctx` are placed in os.environ for the call and
    the previous values put back afterwards, so a trainer written with
    `TrialContext.from_env()` and `hpo_trainer.report()` runs unchanged. Meant
    for trying a trainer locally and for tests; not thread-safe (os.environ is
    process-wide).

        ctx = TrialContext.for_local("/tmp/try", until_epoch=3, config={"learning_rate": 0.1})
        run_by_hand(main, ctx)                                # epochs 1..3
        run_by_hand(main, TrialContext.for_local("/tmp/try", until_epoch=9))  # resumes: 4..9
    """
    saved = {name: os.environ.get(name) for name in contract.ALL}
    for name in contract.ALL:
        os.environ.pop(name, None)
    os.environ.update(ctx.to_env())
    try:
        return train()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
