"""Search-space sampling and searchers: in bounds, right distribution, reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import TypeAdapter

from hpo_operator.search import GridSearcher, RandomSearcher, finite_values, from_unit, sample, to_unit
from hpo_operator.spec.search_space import Domain

domain = TypeAdapter(Domain).validate_python


def draws(d, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return [sample(d, rng) for _ in range(n)]


def test_uniform_and_loguniform_stay_in_bounds_with_the_right_spread():
    u = draws(domain({"type": "uniform", "min": -1, "max": 3}))
    assert min(u) >= -1 and max(u) <= 3 and abs(np.median(u) - 1) < 0.15
    lu = draws(domain({"type": "loguniform", "min": 1e-4, "max": 1}))
    assert min(lu) >= 1e-4 and max(lu) <= 1
    # log-uniform: the median sits at the geometric mean, a tenth of the values below 10^-3.6
    assert abs(math.log10(np.median(lu)) + 2) < 0.15
    assert 0.07 < np.mean(np.array(lu) < 10**-3.6) < 0.13


def test_integer_domains_include_both_ends():
    ri = draws(domain({"type": "randint", "min": 1, "max": 4}))
    assert set(ri) == {1, 2, 3, 4}
    lri = draws(domain({"type": "lograndint", "min": 8, "max": 256}))
    assert min(lri) == 8 and max(lri) == 256 and all(isinstance(v, int) for v in lri)
    # log scale: as many values in 8..31 as in 64..255
    small = np.mean(np.array(lri) < 32)
    large = np.mean(np.array(lri) >= 64)
    assert abs(small - large) < 0.06


def test_choice_and_finranges():
    c = draws(domain({"type": "choice", "values": ["relu", "tanh", 3]}))
    assert set(c) == {"relu", "tanh", 3}
    assert finite_values(domain({"type": "finrange", "min": 0, "max": 1, "size": 5})) == [0, 0.25, 0.5, 0.75, 1]
    lf = finite_values(domain({"type": "logfinrange", "min": 1, "max": 1000, "size": 4, "castInt": True}))
    assert lf == [1, 10, 100, 1000]
    assert set(draws(domain({"type": "logfinrange", "min": 1, "max": 1000, "size": 4, "castInt": True}))) == set(lf)


@pytest.mark.parametrize("spec", [
    {"type": "uniform", "min": -2, "max": 5}, {"type": "loguniform", "min": 1e-5, "max": 10},
    {"type": "randint", "min": 0, "max": 9}, {"type": "lograndint", "min": 1, "max": 1000},
    {"type": "choice", "values": ["a", "b", "c"]}, {"type": "finrange", "min": 0, "max": 1, "size": 11},
])
def test_unit_cube_encoding_round_trips(spec):
    d = domain(spec)
    for v in draws(d, 200):
        back = from_unit(d, to_unit(d, v))
        assert back == pytest.approx(v, rel=1e-9) if isinstance(v, float) else back == v


SPACE = {
    "lr": domain({"type": "loguniform", "min": 1e-4, "max": 1}),
    "act": domain({"type": "choice", "values": ["relu", "tanh"]}),
    "layers": domain({"type": "randint", "min": 1, "max": 3}),
}


def test_random_searcher_is_a_function_of_seed_and_index():
    a, b = RandomSearcher(SPACE, seed=7), RandomSearcher(SPACE, seed=7)
    forward = [a.suggest(i) for i in range(20)]
    backward = [b.suggest(i) for i in reversed(range(20))][::-1]
    assert forward == backward  # order of asking does not matter: restart-safe
    assert len({repr(c) for c in forward}) == 20
    assert RandomSearcher(SPACE, seed=8).suggest(0) != forward[0]


def test_grid_searcher_visits_every_point_once_then_stops():
    g = GridSearcher(SPACE, grid_points=3, seed=1)
    assert g.size == 3 * 2 * 3
    configs = [g.suggest(i) for i in range(g.size)]
    assert len({repr(sorted(c.items())) for c in configs}) == g.size
    assert g.suggest(g.size) is None
    assert [GridSearcher(SPACE, grid_points=3, seed=1).suggest(i) for i in range(g.size)] == configs


def test_configurations_do_not_depend_on_the_order_of_parameters():
    reordered = dict(reversed(list(SPACE.items())))
    assert [RandomSearcher(SPACE, 3).suggest(i) for i in range(5)] == \
        [RandomSearcher(reordered, 3).suggest(i) for i in range(5)]
    assert [GridSearcher(SPACE, 3, seed=2).suggest(i) for i in range(9)] == \
        [GridSearcher(reordered, 3, seed=2).suggest(i) for i in range(9)]
    # adding a parameter leaves the others' values alone
    more = {**SPACE, "wd": TypeAdapter(Domain).validate_python({"type": "uniform", "min": 0, "max": 1})}
    assert all(RandomSearcher(more, 3).suggest(i)["lr"] == RandomSearcher(SPACE, 3).suggest(i)["lr"] for i in range(5))
