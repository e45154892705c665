"""Read manifests from YAML files or dicts into validated models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpo_operator.spec.errors import ManifestError, format_validation_error
from hpo_operator.spec.experiment import HPOExperiment, HPOExperimentSpec


def experiment_from_dict(doc: Any) -> HPOExperiment:
    """Validate a whole ``HPOExperiment`` object; raises ManifestError naming each bad field."""
    if not isinstance(doc, dict):
        raise ManifestError([f"(document): must be a mapping with apiVersion, kind, metadata, spec (got {type(doc).__name__})"])
    try:
        return HPOExperiment.model_validate(doc)
    except ValidationError as err:
        raise ManifestError(format_validation_error(err)) from None


def experiment_spec_from_dict(spec: Any) -> HPOExperimentSpec:
    """Validate only ``spec`` (what the operator receives from the API server)."""
    try:
        return HPOExperimentSpec.model_validate(spec)
    except ValidationError as err:
        raise ManifestError(format_validation_error(err, prefix="spec")) from None


def load_experiment(path: str | Path) -> HPOExperiment:
    """Load the first ``HPOExperiment`` document of a YAML file."""
    text = Path(path).read_text()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise ManifestError([f"(file {path}): not valid YAML: {err}"]) from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "HPOExperiment":
            return experiment_from_dict(doc)
    raise ManifestError([f"(file {path}): no document with kind: HPOExperiment"])
