"""Search-space domains, in the vocabulary of Syne Tune, Ray Tune and Katib.

A domain is one entry of ``spec.searchSpace``::

    learning_rate: {type: loguniform, min: 1.0e-4, max: 1.0}
    batch_size:    {type: lograndint, min: 8, max: 256}
    activation:    {type: choice, values: [tanh, relu]}
    dropout:       {type: finrange, min: 0.0, max: 0.5, size: 6}

Integer domains include both ends. Only the shape is checked here; sampling
lives in :mod:`hpo_operator.search`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from hpo_operator.spec.base import SpecModel

# Bounds that keep a manifest from asking for absurd sizes (a 10^9 grid, say).
MAX_CHOICES = 1000
MAX_FINRANGE_SIZE = 10_000


class _Bounded(SpecModel):
    min: float = Field(description="Lower bound (inclusive).")
    max: float = Field(description="Upper bound (inclusive).")

    @model_validator(mode="after")
    def _check_bounds(self):
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("min, max: must be finite numbers")
        if self.max <= self.min:
            raise ValueError(f"max: must be greater than min (got min={self.min:g}, max={self.max:g}); swap them")
        return self


class _LogBounded(_Bounded):
    @model_validator(mode="after")
    def _check_positive(self):
        if self.min <= 0:
            raise ValueError(f"min: must be > 0 for a log scale (got {self.min:g}); use a positive lower bound or a linear domain")
        return self


class Uniform(_Bounded):
    type: Literal["uniform"] = "uniform"


class LogUniform(_LogBounded):
    type: Literal["loguniform"] = "loguniform"


class _IntBounded(_Bounded):
    min: int = Field(description="Lower bound (inclusive).")
    max: int = Field(description="Upper bound (inclusive).")


class RandInt(_IntBounded):
    type: Literal["randint"] = "randint"


class LogRandInt(_IntBounded, _LogBounded):
    type: Literal["lograndint"] = "lograndint"


class Choice(SpecModel):
    type: Literal["choice"] = "choice"
    values: list[Any] = Field(description="Categories to choose from (strings, numbers or booleans).")

    @model_validator(mode="after")
    def _check_values(self):
        if not self.values:
            raise ValueError("values: must not be empty; list at least one category")
        if len(self.values) > MAX_CHOICES:
            raise ValueError(f"values: at most {MAX_CHOICES} categories (got {len(self.values)})")
        for v in self.values:
            if not isinstance(v, (str, int, float, bool)):
                raise ValueError(f"values: categories must be strings, numbers or booleans (got {type(v).__name__})")
        if len({repr(v) for v in self.values}) != len(self.values):
            raise ValueError("values: categories must be distinct; remove the repeated ones")
        return self


class FinRange(_Bounded):
    """``size`` evenly spaced values from min to max, both included."""

    type: Literal["finrange"] = "finrange"
    size: int = Field(ge=2, le=MAX_FINRANGE_SIZE, description="Number of values (>= 2).")
    cast_int: bool = Field(default=False, description="Round values to integers.")


class LogFinRange(FinRange, _LogBounded):
    """``size`` values evenly spaced on a log scale from min to max."""

    type: Literal["logfinrange"] = "logfinrange"  # type: ignore[assignment]


Domain = Annotated[
    Union[Uniform, LogUniform, RandInt, LogRandInt, Choice, FinRange, LogFinRange],
    Field(discriminator="type"),
]

DOMAIN_TYPES = ("uniform", "loguniform", "randint", "lograndint", "choice", "finrange", "logfinrange")
