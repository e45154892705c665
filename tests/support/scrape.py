"""The operator's /metrics page read the way Prometheus reads it (prometheus_client's parser)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One scrape: sample name -> [(labels, value)]."""

    def __init__(self, text: str):
        self.samples: dict[str, list[tuple[dict, float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((s.labels, s.value))

    @classmethod
    def of(cls, url: str, timeout: float = 5.0) -> "Scrape":
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return cls(answer.read().decode())

    def total(self, name: str, **labels) -> float:
        """The sum over the series of ``name`` whose labels include ``labels`` (0 if there are none)."""
        return sum(v for have, v in self.samples.get(name, []) if labels.items() <= have.items())

    def by(self, name: str, label: str, **labels) -> dict[str, float]:
        """``label``'s value -> the sample's, for the series of ``name`` with ``labels``."""
        return {have[label]: v for have, v in self.samples.get(name, []) if labels.items() <= have.items()}

    def has(self, **labels) -> bool:
        """Some series carries these labels."""
        return any(labels.items() <= have.items() for series in self.samples.values() for have, _ in series)
