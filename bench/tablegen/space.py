"""Search spaces of the generated tables, written in the manifest's searchSpace format.

A table records the space its rows were drawn from (``search_space``), so a
model-based searcher can encode the rows exactly as it would encode its own
suggestions for a manifest with that space.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Plain SGD: what the bundled digits/wine tables vary.
_SGD = {
    "learning_rate": {"type": "loguniform", "min": 1.0e-3, "max": 1.0},
    "batch_size": {"type": "lograndint", "min": 8, "max": 256},
    "momentum": {"type": "uniform", "min": 0.0, "max": 0.99},
    "weight_decay": {"type": "loguniform", "min": 1.0e-6, "max": 1.0e-1},
    "dropout": {"type": "uniform", "min": 0.0, "max": 0.6},
}

# A learning-rate schedule as part of the configuration: a linear warmup of up to
# a third of the run, then constant or cosine decay to zero at the last epoch. A
# long warmup or a high rate that only pays off once decayed make early epochs
# rank configurations differently from the final ones.
_SCHEDULE = {
    "warmup_fraction": {"type": "uniform", "min": 0.0, "max": 0.34},
    "lr_schedule": {"type": "choice", "values": ["constant", "cosine"]},
}

# Configurations that differ mostly in capacity and in how fast they learn, with
# a sensible optimizer (momentum near 0.9, no schedule, mild regularisation): a
# net too narrow or a rate too low is behind after one epoch and still behind
# after the last, so early epochs already rank the rows much as the final ones.
_CAPACITY = {
    "learning_rate": {"type": "loguniform", "min": 1.0e-4, "max": 0.1},
    "batch_size": {"type": "lograndint", "min": 16, "max": 128},
    "momentum": {"type": "uniform", "min": 0.8, "max": 0.95},
    "weight_decay": {"type": "loguniform", "min": 1.0e-6, "max": 1.0e-3},
    "dropout": {"type": "uniform", "min": 0.0, "max": 0.2},
    "activation": {"type": "choice", "values": ["tanh", "relu"]},
    "n_units": {"type": "lograndint", "min": 2, "max": 256},
    "n_layers": {"type": "randint", "min": 1, "max": 2},
}

SPACES: dict[str, dict[str, dict]] = {
    "mlp-capacity": _CAPACITY,
    "mlp": {
        **_SGD,
        "activation": {"type": "choice", "values": ["tanh", "relu"]},
        "n_units": {"type": "lograndint", "min": 16, "max": 256},
        "n_layers": {"type": "randint", "min": 1, "max": 3},
    },
    "mlp-schedule": {
        **_SGD,
        **_SCHEDULE,
        "activation": {"type": "choice", "values": ["tanh", "relu"]},
        "n_units": {"type": "lograndint", "min": 16, "max": 256},
        "n_layers": {"type": "randint", "min": 1, "max": 3},
    },
    "cnn": {
        **_SGD,
        "channels": {"type": "lograndint", "min": 4, "max": 16},
        "n_units": {"type": "lograndint", "min": 16, "max": 128},
    },
    "cnn-schedule": {
        **_SGD,
        **_SCHEDULE,
        "channels": {"type": "lograndint", "min": 4, "max": 16},
        "n_units": {"type": "lograndint", "min": 16, "max": 128},
    },
}


def draw(domain: dict, rng: np.random.Generator) -> Any:
    """One value of a manifest-format domain (the same distributions the operator's random searcher uses)."""
    kind = domain["type"]
    if kind == "uniform":
        return float(rng.uniform(domain["min"], domain["max"]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(domain["min"]), math.log(domain["max"]))))
    if kind == "randint":
        return int(rng.integers(domain["min"], domain["max"] + 1))
    if kind == "lograndint":
        # floor of a log-uniform draw over [min, max + 1): each integer gets its log-width
        value = math.exp(rng.uniform(math.log(domain["min"]), math.log(domain["max"] + 1)))
        return min(int(math.floor(value)), domain["max"])
    if kind == "choice":
        return domain["values"][int(rng.integers(len(domain["values"])))]
    raise ValueError(f"unknown domain type {kind!r}")


def draw_configs(space: dict[str, dict], n: int, seed: int) -> list[dict]:
    """``n`` configurations drawn independently from ``space`` with one seeded generator."""
    rng = np.random.default_rng(seed)
    return [{name: draw(domain, rng) for name, domain in space.items()} for _ in range(n)]
