"""Manifests that run the table-replaying test trainer (tests/trainers/curve_trainer.py)."""

from __future__ import annotations

from hpo_operator.resources import API_VERSION, EXPERIMENT_KIND
from support.paths import CURVE_TRAINER, TABLES


def curve_manifest(name="curves", *, trials=6, parallelism=2, max_resource=9, algorithm="asha",
                   promote_in_place=False, crash_at_epoch=None, retries=2, max_failed=3, seconds=0.0,
                   command=None, seed=0) -> dict:
    space = {
        "table": {"type": "choice", "values": [str(TABLES / "digits_s44.json")]},
        "row": {"type": "randint", "min": 0, "max": 399},
        "seconds_per_epoch": {"type": "choice", "values": [seconds]},
    }
    if crash_at_epoch is not None:
        space["crash_at_epoch"] = {"type": "choice", "values": [crash_at_epoch]}
    return {
        "apiVersion": API_VERSION, "kind": EXPERIMENT_KIND, "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "val_error", "mode": "min"},
            "searchSpace": space,
            "searcher": {"algorithm": "random", "seed": seed},
            "scheduler": {"algorithm": algorithm, "maxResource": max_resource, "promoteInPlace": promote_in_place},
            "budget": {"maxTrials": trials, "parallelism": parallelism, "maxRetries": retries,
                       "maxFailedTrials": max_failed},
            "trialTemplate": {"spec": {"containers": [{
                "name": "trainer", "image": "hpo-trainer:test",
                "command": command or ["python", str(CURVE_TRAINER)],
            }]}},
        },
    }


RANDOM_SEARCHER = {"algorithm": "random"}


def node_manifest(name: str, *, trials: int, parallelism: int, scheduler: dict,
                  searcher: dict | None = RANDOM_SEARCHER, seconds_per_epoch: float | None = None, gpu: bool = False,
                  **budget) -> dict:
    """An experiment for the integration tier's node double (tests/support/node_double.py): each trial
    replays one row of digits_s44 with the test trainer at the path the double runs it from. Random draws,
    which the simulator's runs that tests compare with make too; ``searcher=None`` names no searcher, so
    the manifest default's runs."""
    space = {
        "row": {"type": "randint", "min": 0, "max": 399},
        "table": {"type": "choice", "values": [str(TABLES / "digits_s44.json")]},
    }
    if seconds_per_epoch is not None:
        space["seconds_per_epoch"] = {"type": "choice", "values": [seconds_per_epoch]}
    trainer = {"name": "trainer", "image": "hpo-trainer:test", "command": ["python", "/opt/hpo/curve_trainer.py"]}
    if gpu:
        trainer["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    spec = {
        "objective": {"metric": "val_error", "mode": "min"},
        "searchSpace": space,
        "scheduler": scheduler,
        "budget": {"maxTrials": trials, "parallelism": parallelism, **budget},
        "trialTemplate": {"spec": {"containers": [trainer]}},
    }
    if searcher is not None:
        spec["searcher"] = dict(searcher)  # a copy: RANDOM_SEARCHER is shared by every call
    return {"apiVersion": API_VERSION, "kind": EXPERIMENT_KIND, "metadata": {"name": name}, "spec": spec}
