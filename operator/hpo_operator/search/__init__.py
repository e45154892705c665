"""Layer 2: search-space sampling and searchers."""

from hpo_operator.search.domains import finite_values, from_unit, sample, to_unit
from hpo_operator.search.gp import LearningCurveGPSearcher
from hpo_operator.search.kde import DensityRatioSearcher
from hpo_operator.search.searchers import (
    MODEL_SEARCHERS,
    GridSearcher,
    RandomSearcher,
    Searcher,
    TableRowSearcher,
    make_searcher,
)

__all__ = [
    "DensityRatioSearcher", "GridSearcher", "LearningCurveGPSearcher", "MODEL_SEARCHERS", "RandomSearcher",
    "Searcher", "TableRowSearcher", "finite_values", "from_unit", "make_searcher", "sample", "to_unit",
]
