"""Learning-curve tables: every row a configuration trained for real, one value per epoch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LearningCurveTable:
    name: str
    metric: str
    mode: str
    configs: list[dict]
    curves: np.ndarray  # (rows, max_resource): objective after each epoch
    epoch_seconds: np.ndarray  # (rows, max_resource): wall time of each epoch

    @property
    def n_rows(self) -> int:
        return self.curves.shape[0]

    @property
    def max_resource(self) -> int:
        return self.curves.shape[1]

    def final_values(self) -> np.ndarray:
        return self.curves[:, -1]

    def top_threshold(self, fraction: float) -> float:
        """Objective a fully trained row must reach to be in the table's top ``fraction``."""
        finals = self.final_values() if self.mode == "min" else -self.final_values()
        threshold = float(np.quantile(finals, fraction, method="inverted_cdf"))
        return threshold if self.mode == "min" else -threshold

    @staticmethod
    def load(path: str | Path) -> "LearningCurveTable":
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable learning-curve table ({err})") from None
        missing = [k for k in ("metric", "mode", "configs", "curves", "epoch_seconds") if k not in doc]
        if missing:
            raise ValueError(f"{path}: missing keys {missing}; see bench/tables/README.md for the format")
        curves = np.asarray(doc["curves"], dtype=float)
        seconds = np.asarray(doc["epoch_seconds"], dtype=float)
        if curves.ndim != 2 or curves.shape != seconds.shape or curves.shape[0] != len(doc["configs"]):
            raise ValueError(f"{path}: curves, epoch_seconds and configs disagree in shape")
        return LearningCurveTable(doc.get("name", path.stem), doc["metric"], doc["mode"], doc["configs"], curves, seconds)
