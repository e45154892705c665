"""Save and restore everything a PyTorch training run needs to continue bit-for-bit.

A paused trial resumes in a new process, so besides weights and optimizer
state the checkpoint carries every random number generator the next epoch
will draw from: Python's `random`, numpy's global generator, torch's CPU and
CUDA generators, and any `torch.Generator` the trainer owns (pass the one
given to `DataLoader(generator=...)`: the loader draws its shuffling order and
worker seeds from it). With those restored, epochs 1..9 + pause + 10..27 give
the same weights as 1..27 straight through on CPU with deterministic
algorithms (see `seed_everything`).

torch is imported inside the functions, so `import hpo_trainer` works without it.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import checkpoint, trace
from .context import TrialContext

FORMAT_VERSION = 1


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError("hpo_trainer.torch_state needs torch; install it or use hpo_trainer.checkpoint") from error
    return torch


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with deterministic=True also make torch pick deterministic kernels.

    Call it before building the model. On resume, `restore` then overwrites the
    generators with their saved states, so seeding again does no harm.
    """
    torch = _torch()
    random.seed(seed)
    _numpy_seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this set before its first use to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def _numpy_seed(seed: int) -> None:
    try:
        import numpy
    except ImportError:
        return  # numpy is optional; without it there is no numpy generator to seed
    numpy.random.seed(seed % 2**32)


def _rng_state(generators: Sequence[Any]) -> dict[str, Any]:
    torch = _torch()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    try:
        import numpy
    except ImportError:
        numpy = None
    if numpy is not None:
        name, keys, pos, has_gauss, cached = numpy.random.get_state(legacy=True)
        # Plain ints and lists, so the checkpoint loads with weights_only=True.
        state["numpy"] = [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], generators: Sequence[Any]) -> None:
    torch = _torch()
    saved_generators = state.get("generators", [])
    if len(saved_generators) != len(generators):
        raise ValueError(
            f"checkpoint holds {len(saved_generators)} torch.Generator state(s) but "
            f"{len(generators)} generator(s) were passed to restore; pass the same ones as to save"
        )
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    for generator, saved in zip(generators, saved_generators):
        generator.set_state(saved)
    if "numpy" in state:
        import numpy

        name, keys, pos, has_gauss, cached = state["numpy"]
        numpy.random.set_state((name, numpy.asarray(keys, dtype=numpy.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        saved_cuda = state["cuda"]
        if len(saved_cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved_cuda)
        else:
            print(
                f"hpo_trainer: checkpoint has CUDA RNG state for {len(saved_cuda)} device(s), "
                f"this process sees {torch.cuda.device_count()}; CUDA RNG not restored",
                file=sys.stderr,
            )


def _as_tuple(value: Any) -> Any:
    # random.setstate wants the nested tuples back; a round-trip may give lists.
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def capture(
    *,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    generators: Sequence[Any] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The training state as one dict of tensors and plain values (loads with weights_only=True)."""
    return {
        "format": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": _rng_state(generators),
        "extra": dict(extra or {}),
    }


def apply(
    state: Mapping[str, Any],
    *,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    generators: Sequence[Any] = (),
    extra: dict[str, Any] | None = None,
) -> None:
    """Load a `capture`d state into live objects. Objects passed here must have been saved."""
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint format {state.get('format')!r} is not {FORMAT_VERSION}")
    model.load_state_dict(state["model"])
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if target is None:
            continue
        if state.get(name) is None:
            raise ValueError(f"restore was given a {name} but the checkpoint has no {name} state; pass it to save too")
        target.load_state_dict(state[name])
    _set_rng_state(state["rng"], generators)
    if extra is not None:
        extra.update(state.get("extra", {}))


def save(
    ctx: TrialContext,
    epoch: int,
    *,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    generators: Sequence[Any] = (),
    extra: Mapping[str, Any] | None = None,
    keep: int = checkpoint.DEFAULT_KEEP,
) -> Path:
    """Checkpoint the end of `epoch` into ctx.checkpoint_dir; durable when this returns.

    Call it every epoch, before `hpo_trainer.report(epoch, ...)`: then any
    epoch a runner has seen reported can be resumed from.
    """
    state = capture(
        model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        generators=generators, extra=extra,
    )
    return checkpoint.save(ctx.checkpoint_dir, epoch, state, keep=keep, serializer="torch",
                           last=epoch >= ctx.max_epoch)


def restore(
    ctx: TrialContext,
    *,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    generators: Sequence[Any] = (),
    extra: dict[str, Any] | None = None,
) -> int:
    """Load the newest good checkpoint at or before ctx.start_epoch; return its epoch (0: none, train from scratch).

    Train `ctx.epochs(returned)`. The result is below start_epoch only when the
    checkpoint of start_epoch is missing or damaged; the trainer then re-trains
    the gap (deterministically) and `report` skips the epochs already reported.
    `extra`, if given, is filled with the extra values that were saved.
    """
    if ctx.start_epoch == 0:
        trace.mark("restored", epoch=0, seconds=0.0)
        return 0
    started = time.perf_counter()
    found = checkpoint.latest(ctx.checkpoint_dir, max_epoch=ctx.start_epoch)
    if found is None:
        print(
            f"hpo_trainer: no checkpoint up to epoch {ctx.start_epoch} in {ctx.checkpoint_dir}; "
            f"training from scratch",
            file=sys.stderr,
        )
        trace.mark("restored", epoch=0, seconds=time.perf_counter() - started)
        return 0
    if found.epoch < ctx.start_epoch:
        print(
            f"hpo_trainer: checkpoint of epoch {ctx.start_epoch} unusable; resuming from epoch {found.epoch}",
            file=sys.stderr,
        )
    apply(
        found.payload, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        generators=generators, extra=extra,
    )
    trace.mark("restored", epoch=found.epoch, seconds=time.perf_counter() - started)
    return found.epoch
