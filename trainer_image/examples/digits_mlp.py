"""Example trainer: an MLP on scikit-learn's digits (bundled, no download), SGD with momentum.

The hyperparameters are those of the benchmark tables in bench/tables/; every
one has a default, so an empty config trains. Reports val_error (the
objective), val_loss and train_loss every epoch. Runs on CUDA when present.

Config keys (defaults in DEFAULTS): learning_rate, batch_size, momentum,
activation (tanh|relu), n_units, n_layers, weight_decay, dropout, seed,
amp (mixed precision: float16 on CUDA, bfloat16 on CPU), lr_schedule
(constant|cosine; cosine anneals to 0 at HPO_MAX_EPOCH).

    HPO_UNTIL_EPOCH=5 HPO_CHECKPOINT_DIR=/tmp/d/ckpt HPO_METRICS_FILE=/tmp/d/m.jsonl \
        python digits_mlp.py
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hpo_trainer
from hpo_trainer import torch_state

DEFAULTS = {
    "learning_rate": 0.05,
    "batch_size": 32,
    "momentum": 0.9,
    "activation": "relu",
    "n_units": 64,
    "n_layers": 2,
    "weight_decay": 1e-5,
    "dropout": 0.0,
    "seed": 0,
    "amp": False,
    "lr_schedule": "constant",
}
SPLIT_SEED = 0  # the validation split never changes with the trial's seed: trials stay comparable
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def read_config(raw: dict) -> dict:
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"digits_mlp: unknown config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    config = {**DEFAULTS, **raw}
    if config["activation"] not in ACTIVATIONS:
        raise SystemExit(f"digits_mlp: activation must be one of {sorted(ACTIVATIONS)}, got {config['activation']!r}")
    if config["lr_schedule"] not in ("constant", "cosine"):
        raise SystemExit(f"digits_mlp: lr_schedule must be constant or cosine, got {config['lr_schedule']!r}")
    return config


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (pixels 0..16, labels) read from the file it bundles, without importing it.

    Importing sklearn (and the scipy it pulls in) took about as long as importing torch: the larger
    part of a resumed trial's start-up. The file is found from sklearn's package location alone.
    """
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_digits  # another layout: let sklearn find it

        digits = sklearn_digits()
        return digits.data, digits.target
    with gzip.open(path, "rt", encoding="utf-8") as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class share of `draws`, rounded as sklearn's StratifiedShuffleSplit rounds (ties broken by `rng`)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def stratified_split(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: the same as sklearn's train_test_split(range(n), test_size=...,
    random_state=seed, stratify=labels), so the validation set, and every result, stay as they were."""
    n_test = math.ceil(test_size * len(labels))
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_train = _approximate_mode(counts, len(labels) - n_test, rng)
    n_val = _approximate_mode(counts - n_train, n_test, rng)
    train: list = []
    val: list = []
    for i in range(len(classes)):
        members = by_class[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(members[: n_train[i]])
        val.extend(members[n_train[i]: n_train[i] + n_val[i]])
    return rng.permutation(train), rng.permutation(val)


def load_data(device: torch.device):
    pixels, labels = load_digits()
    x = torch.tensor(pixels / 16.0, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)
    train_idx, val_idx = (torch.as_tensor(i) for i in stratified_split(labels, 0.2, SPLIT_SEED))
    train = TensorDataset(x[train_idx], y[train_idx])
    return train, x[val_idx].to(device), y[val_idx].to(device)


def build_model(config: dict) -> nn.Module:
    layers: list[nn.Module] = []
    width = 64
    for _ in range(int(config["n_layers"])):
        layers += [nn.Linear(width, int(config["n_units"])), ACTIVATIONS[config["activation"]](), nn.Dropout(config["dropout"])]
        width = int(config["n_units"])
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def main() -> None:
    ctx = hpo_trainer.TrialContext.from_env()
    config = read_config(dict(ctx.config))
    torch_state.seed_everything(int(config["seed"]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    train_set, x_val, y_val = load_data(device)
    # The loader shuffles with its own generator, saved in every checkpoint.
    shuffle = torch.Generator().manual_seed(int(config["seed"]))
    loader = DataLoader(train_set, batch_size=int(config["batch_size"]), shuffle=True, generator=shuffle)

    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["learning_rate"], momentum=config["momentum"],
        weight_decay=config["weight_decay"],
    )
    if config["lr_schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ctx.max_epoch)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    # A scaler only matters for float16; disabled it is a no-op.
    scaler = torch.amp.GradScaler(device.type, enabled=bool(config["amp"]) and amp_dtype == torch.float16)
    loss_fn = nn.CrossEntropyLoss()
    state = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, generators=[shuffle])

    start = torch_state.restore(ctx, **state)
    for epoch in ctx.epochs(start):
        model.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=bool(config["amp"])):
                loss = loss_fn(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item() * len(yb)
            count += len(yb)
        scheduler.step()

        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=bool(config["amp"])):
            logits = model(x_val).float()
        val_loss = loss_fn(logits, y_val).item()
        val_error = int((logits.argmax(dim=1) != y_val).sum()) / len(y_val)
        if not math.isfinite(val_loss):
            val_error = 1.0  # diverged: argmax over NaN logits is meaningless (the tables use 1.0 too)

        torch_state.save(ctx, epoch, **state)  # durable before the runner can see the epoch
        hpo_trainer.report(epoch, val_error=val_error, val_loss=val_loss, train_loss=total / count)


if __name__ == "__main__":
    main()
