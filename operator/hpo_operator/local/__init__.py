"""Backend: trials as local processes (``hpo run``)."""

from hpo_operator.local.runner import LocalRunner

__all__ = ["LocalRunner"]
