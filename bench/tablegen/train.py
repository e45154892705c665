"""Train one configuration for a number of epochs; record validation error and CPU seconds per epoch."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from tablegen.data import Split
from tablegen.models import build

DIVERGED = 1.0  # validation error recorded for every epoch from the one where training diverged


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step``: linear warmup, then constant or cosine to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def train(config: dict, family: str, split: Split, epochs: int, seed: int) -> tuple[list[float], list[float]]:
    """Validation error after each epoch, and the CPU seconds each epoch (training + evaluation) took."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build(family, config, split.x_train.shape, split.n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=config["learning_rate"], momentum=config["momentum"],
                          weight_decay=config["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    x_train, y_train = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    x_val, y_val = torch.from_numpy(split.x_val), torch.from_numpy(split.y_val)
    n = len(x_train)
    batch = min(int(config["batch_size"]), n)
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * epochs
    warmup = int(round(config.get("warmup_fraction", 0.0) * total))
    schedule = config.get("lr_schedule", "constant")
    curve: list[float] = []
    seconds: list[float] = []
    step = 0
    diverged = False
    for _ in range(epochs):
        if diverged:
            curve.append(DIVERGED)
            seconds.append(seconds[-1])  # a diverged run would still have spent an epoch's time
            continue
        # CPU time of this process, not wall time: on a shared machine wall time measures the neighbours.
        started = time.process_time()
        model.train()
        order = torch.from_numpy(rng.permutation(n))
        for i in range(0, n, batch):
            for group in opt.param_groups:
                group["lr"] = config["learning_rate"] * lr_factor(step, total, warmup, schedule)
            idx = order[i: i + batch]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            error = round(float((logits.argmax(dim=1) != y_val).sum()) / len(y_val), 6)
        if diverged or not torch.isfinite(logits).all():
            diverged = True
            error = DIVERGED
        seconds.append(time.process_time() - started)
        curve.append(error)
    return curve, seconds
