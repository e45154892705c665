"""Manifests that run the table-replaying test trainer (tests/trainers/curve_trainer.py)."""

from __future__ import annotations

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
        "apiVersion": "hpo.dev/v1alpha1", "kind": "HPOExperiment", "metadata": {"name": name},
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
