"""Small torch models built from a configuration."""

from __future__ import annotations

import torch
from torch import nn


def mlp(config: dict, n_inputs: int, n_classes: int) -> nn.Module:
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[config["activation"]]
    layers: list[nn.Module] = [nn.Flatten()]
    width = n_inputs
    for _ in range(config["n_layers"]):
        layers += [nn.Linear(width, config["n_units"]), act(), nn.Dropout(config["dropout"])]
        width = config["n_units"]
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def cnn(config: dict, image_side: int, n_classes: int) -> nn.Module:
    """Two conv+pool blocks, then one hidden dense layer with dropout."""
    c = config["channels"]
    side = image_side // 4
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * c * side * side, config["n_units"]), nn.ReLU(), nn.Dropout(config["dropout"]),
        nn.Linear(config["n_units"], n_classes),
    )


def build(family: str, config: dict, x_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    if family == "mlp":
        n_inputs = 1
        for d in x_shape[1:]:
            n_inputs *= d
        return mlp(config, n_inputs, n_classes)
    if family == "cnn":
        if len(x_shape) != 4:
            raise ValueError("model family cnn needs an image data set (fashion_mnist)")
        return cnn(config, x_shape[-1], n_classes)
    raise ValueError(f"unknown model family {family!r}")
