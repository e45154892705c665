"""Learning-curve tables: every row a configuration trained for real, one value per epoch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import TypeAdapter, ValidationError

from hpo_operator.spec.search_space import Domain


@dataclass(frozen=True)
class LearningCurveTable:
    name: str
    metric: str
    mode: str
    configs: list[dict]
    curves: np.ndarray  # (rows, max_resource): objective after each epoch
    epoch_seconds: np.ndarray  # (rows, max_resource): wall time of each epoch
    space: Optional[dict] = None  # the search space the rows were drawn from, if the table names it

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
        space = None
        if "search_space" in doc:
            try:
                space = {k: TypeAdapter(Domain).validate_python(v) for k, v in doc["search_space"].items()}
            except ValidationError as err:
                raise ValueError(f"{path}: search_space: {err}; use the manifest's searchSpace format") from None
        return LearningCurveTable(doc.get("name", path.stem), doc["metric"], doc["mode"], doc["configs"], curves,
                                  seconds, space)
