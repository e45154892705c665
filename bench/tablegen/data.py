"""Data sets that load offline: scikit-learn's bundled ones and Debian's Fashion-MNIST IDX files."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SKLEARN_SETS = ("digits", "wine", "breast_cancer", "iris")
DATASETS = SKLEARN_SETS + ("fashion_mnist",)


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray  # float32; (n, features) or (n, 1, h, w) for images
    y_train: np.ndarray  # int64 class labels
    x_val: np.ndarray
    y_val: np.ndarray
    n_classes: int


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip'd or not) as a numpy array; the format's magic gives the dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_file(stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (FASHION_MNIST_DIR / name).exists():
            return FASHION_MNIST_DIR / name
    raise FileNotFoundError(
        f"{FASHION_MNIST_DIR / stem}.gz not found: install Fashion-MNIST with "
        "`apt-get install dataset-fashion-mnist` (bench/make-tables.sh does)")


def _subsample(x: np.ndarray, y: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = rng.permutation(len(x))[: min(n, len(x))]
    return x[idx], y[idx]


def load(name: str, *, seed: int, train_size: int, val_size: int, image_side: int = 28) -> Split:
    """A train/validation split of ``name`` drawn with ``seed``; features standardised on the train part."""
    rng = np.random.default_rng(seed)
    if name == "fashion_mnist":
        # Only the original training file is used; the test file stays untouched.
        images = read_idx(_fashion_file("train-images-idx3-ubyte")).astype(np.float32) / 255.0
        labels = read_idx(_fashion_file("train-labels-idx1-ubyte")).astype(np.int64)
        x, y = _subsample(images, labels, train_size + val_size, rng)
        if image_side != 28:
            if 28 % image_side:
                raise ValueError(f"--image-side {image_side}: must divide 28 (14, 7 or 28)")
            k = 28 // image_side
            x = x.reshape(len(x), image_side, k, image_side, k).mean(axis=(2, 4))
        x = x[:, None, :, :]
        n_classes = 10
    elif name in SKLEARN_SETS:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
        x, y = _subsample(x, y, train_size + val_size, rng)
        n_classes = int(bunch.target.max()) + 1
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if len(x) <= val_size:
        raise ValueError(f"{name}: {len(x)} examples; --val-size {val_size} leaves none to train on")
    x_val, y_val, x_train, y_train = x[:val_size], y[:val_size], x[val_size:], y[val_size:]
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std(axis=0, keepdims=True) + 1e-6
    if x.ndim == 4:  # images: one mean and scale for all pixels
        mean, std = x_train.mean(), x_train.std() + 1e-6
    return Split(((x_train - mean) / std).astype(np.float32), y_train, ((x_val - mean) / std).astype(np.float32),
                 y_val, n_classes)
