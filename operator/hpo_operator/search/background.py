"""Model fits off the decision path, for the operator and ``hpo run``.

A backend decides (pause, stop, promote) the moment a result arrives; a model
fit must never hold that up. :class:`BackgroundFits` wraps a model-based
searcher: results and restores go into it at once (cheap dictionary
updates), and one worker thread fits the model on a snapshot of the records
whenever they changed, leaving its pick for the next new trial. A new trial
takes the pick of the last finished fit, or a random draw when none is ready
(or when the trial falls in the searcher's random share); it never waits.
A fit's cost is bounded by the model's own caps on the points it fits
(``MAX_POINTS``, ``MAX_BAD``), not by a timer; how often fits run, by a
rest after each one (``FIT_SHARE``), so that a model refitted on every
result (the gp's costs about 10 ms) never takes more than a tenth of a core
from the decisions.

The simulator fits synchronously instead (``ModelSearcher.suggest``): there a
run must be a function of its seed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Collection, Iterable, Mapping, Optional, Sequence

import numpy as np

from hpo_operator.search.model_based import ModelSearcher

FIT_SHARE = 0.1  # of one core's time, at most, spent fitting; the pick is then at most ~10 fits' time old


class BackgroundFits:
    def __init__(self, inner: ModelSearcher):
        self.inner = inner
        self._lock = threading.Lock()
        self._pick: Optional[dict[str, Any]] = None  # from the last finished fit, for the next new trial
        self._fitting = False
        self._dirty = False  # records changed since the running fit took its snapshot
        self._pending: list[int] = []
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpo-model-fit")
        self.fits = 0  # finished fits, for tests and logs

    # ---- the searcher interface ------------------------------------------------
    def exhausted(self, trial_index: int) -> bool:
        return self.inner.exhausted(trial_index)

    def suggest(self, trial_index: int, pending: Collection[int] = ()) -> Optional[dict[str, Any]]:
        with self._lock:
            if trial_index in self.inner.configs:
                return self.inner.configs[trial_index]  # a created trial's configuration never changes
            if self.inner.exhausted(trial_index):
                return None
            rng = np.random.default_rng([self.inner.seed, trial_index, 0x5EA])
            config, self._pick = self._pick, None
            if config is None or rng.random() < self.inner.random_fraction:
                config = self.inner.random_pick(trial_index, rng)
            self.inner.remember(trial_index, config)
            self._pending = [t for t in pending if t != trial_index] + [trial_index]
        self._request_fit()
        return config

    def on_result(self, trial_index: int, resource: int, value: float, seconds: Optional[float] = None) -> None:
        with self._lock:
            before = self.inner.data.count()
            self.inner.on_result(trial_index, resource, value, seconds)
            changed = self.inner.data.count() != before
        if changed:
            self._request_fit()

    def restore(self, trials: Iterable[tuple[int, Mapping[str, Any], Sequence[tuple]]]) -> None:
        with self._lock:
            self.inner.restore(trials)
        self._request_fit()

    # ---- the worker --------------------------------------------------------------
    def _request_fit(self) -> None:
        with self._lock:
            if self._fitting:
                self._dirty = True
                return
            self._fitting = True
            self._dirty = False
        self._worker.submit(self._fit)

    def _fit(self) -> None:
        started = time.monotonic()
        pick = None
        try:
            with self._lock:
                snapshot = self.inner.snapshot()
                pending = [t for t in self._pending if t in snapshot.x]
                seed = [self.inner.seed, len(snapshot.configs), 0xF17]
            pick = snapshot.model_pick(np.random.default_rng(seed), pending)
            with self._lock:
                self.inner.adopt_cache(snapshot)
        finally:
            with self._lock:
                if pick is not None:
                    self._pick = pick
                self.fits += 1
            # Rest before the next fit (results that arrive meanwhile wait for it), so that fits take at
            # most FIT_SHARE of a core: the decisions share the process (and its GIL) and the machine.
            time.sleep((time.monotonic() - started) * (1 / FIT_SHARE - 1))
            with self._lock:
                self._fitting = False
                again = self._dirty
        if again:
            self._request_fit()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no fit runs (tests, ``hpo run`` before exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._fitting:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


__all__ = ["BackgroundFits"]
