"""Example trainer: a small CNN on Fashion-MNIST, read straight from the original IDX gzip files.

Where the files are looked for, in order: $HPO_DATA_DIR, $HPO_DATA_DIR/fashion-mnist,
/usr/share/datasets/fashion-mnist (Debian package `dataset-fashion-mnist`).
Only the training files are read; the last sixth of them is the fixed
validation set (the t10k files stay untouched for a final test).
CUDA with mixed precision (float16 + GradScaler) when a GPU is present.

Config keys (defaults in DEFAULTS): learning_rate, momentum, batch_size,
channels, hidden, dropout, weight_decay, seed, amp (used on CUDA only),
train_subset (0 = all; a smaller number makes epochs quick).
"""

from __future__ import annotations

import gzip
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
    "momentum": 0.9,
    "batch_size": 128,
    "channels": 16,
    "hidden": 128,
    "dropout": 0.25,
    "weight_decay": 5e-4,
    "seed": 0,
    "amp": True,
    "train_subset": 0,
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGES, LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
VAL_FRACTION = 1 / 6  # 10,000 of the 60,000 training images


def find_data(data_dir: Path | None) -> Path:
    candidates = ([data_dir, data_dir / "fashion-mnist"] if data_dir else []) + [SYSTEM_DIR]
    for folder in candidates:
        if (folder / IMAGES).is_file() and (folder / LABELS).is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise SystemExit(
        f"fashion_mnist_cnn: {IMAGES} and {LABELS} not found in any of: {tried}. "
        f"Install the Debian package dataset-fashion-mnist, or mount a folder with the "
        f"original gzip'd IDX files and point HPO_DATA_DIR at it."
    )


def read_idx(path: Path) -> np.ndarray:
    """Decode one gzip'd IDX file: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, data."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:3] != b"\x00\x00\x08":
        raise SystemExit(f"fashion_mnist_cnn: {path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise SystemExit(f"fashion_mnist_cnn: {path} holds {data.size} bytes, header says {shape}")
    return data.reshape(shape)


def load_data(folder: Path, train_subset: int):
    images = torch.tensor(read_idx(folder / IMAGES), dtype=torch.float32).unsqueeze(1) / 255.0
    labels = torch.tensor(read_idx(folder / LABELS), dtype=torch.long)
    if len(images) != len(labels):
        raise SystemExit(f"fashion_mnist_cnn: {len(images)} images but {len(labels)} labels in {folder}")
    n_val = max(1, int(len(labels) * VAL_FRACTION))
    x_train, y_train = images[:-n_val], labels[:-n_val]
    if train_subset:
        x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    return TensorDataset(x_train, y_train), images[-n_val:], labels[-n_val:]


def build_model(config: dict) -> nn.Module:
    c, hidden = int(config["channels"]), int(config["hidden"])
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),        # 28 -> 14
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 14 -> 7
        nn.Flatten(), nn.Dropout(config["dropout"]),
        nn.Linear(2 * c * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, 10),
    )


def evaluate(model, x_val, y_val, device, amp: bool) -> tuple[float, float]:
    model.eval()
    loss_sum, wrong = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y_val), 1000):
            xb, yb = x_val[start:start + 1000].to(device), y_val[start:start + 1000].to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(xb).float()
            loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
            wrong += int((logits.argmax(dim=1) != yb).sum())
    return wrong / len(y_val), loss_sum / len(y_val)


def main() -> None:
    ctx = hpo_trainer.TrialContext.from_env()
    unknown = set(ctx.config) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"fashion_mnist_cnn: unknown config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    config = {**DEFAULTS, **ctx.config}
    folder = find_data(ctx.data_dir)
    torch_state.seed_everything(int(config["seed"]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = bool(config["amp"]) and device.type == "cuda"

    train_set, x_val, y_val = load_data(folder, int(config["train_subset"]))
    shuffle = torch.Generator().manual_seed(int(config["seed"]))
    loader = DataLoader(train_set, batch_size=int(config["batch_size"]), shuffle=True, generator=shuffle,
                        pin_memory=device.type == "cuda")
    model = build_model(config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["learning_rate"], momentum=config["momentum"],
                                weight_decay=config["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=ctx.max_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    state = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, generators=[shuffle])

    start = torch_state.restore(ctx, **state)
    for epoch in ctx.epochs(start):
        model.train()
        total, count = 0.0, 0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = nn.functional.cross_entropy(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item() * len(yb)
            count += len(yb)
        scheduler.step()
        val_error, val_loss = evaluate(model, x_val, y_val, device, amp)
        if not math.isfinite(val_loss):
            val_error = 1.0  # diverged: argmax over NaN logits is meaningless
        torch_state.save(ctx, epoch, **state)  # durable before the runner can see the epoch
        hpo_trainer.report(epoch, val_error=val_error, val_loss=val_loss, train_loss=total / count)


if __name__ == "__main__":
    main()
