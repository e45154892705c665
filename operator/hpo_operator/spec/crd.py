"""Generate the CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema (draft 2020-12, with ``$ref``, ``anyOf`` and
discriminated ``oneOf``); Kubernetes wants a *structural* OpenAPI v3 schema:
every node typed, no references, unions folded. :func:`structural` does that
conversion so the API server rejects what the models reject wherever its
schema language can say so (types, enums, bounds, required fields, patterns).
Cross-field rules (min < max, log scale > 0) are checked again by the operator.
"""

from __future__ import annotations

import copy
from typing import Any

from hpo_operator import resources
from hpo_operator.spec.experiment import MAX_EXPERIMENT_NAME, NAME_RE, HPOExperimentSpec
from hpo_operator.spec.status import HPOExperimentStatus, HPOTrialSpec, HPOTrialStatus

_DROP = {"title", "discriminator", "$defs"}


def _resolve(node: Any, defs: dict) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].split("/")[-1]]
            merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _merge_objects(variants: list[dict]) -> dict:
    """Fold a discriminated union of objects into one object with every property optional."""
    props: dict[str, dict] = {}
    for v in variants:
        for name, schema in v.get("properties", {}).items():
            schema = _convert(schema)
            if name in props:
                old = props[name]
                if "enum" in old and "enum" in schema:
                    old["enum"] = old["enum"] + [e for e in schema["enum"] if e not in old["enum"]]
                elif old.get("type") != schema.get("type") and {old.get("type"), schema.get("type")} == {"integer", "number"}:
                    old["type"] = "number"
                old.pop("default", None)
            else:
                props[name] = schema
    for schema in props.values():
        schema.pop("default", None)
    required = set.intersection(*(set(v.get("required", [])) for v in variants)) if variants else set()
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = sorted(required)
    return out


def _convert(node: dict) -> dict:
    tag = (node.get("discriminator") or {}).get("propertyName")
    node = {k: v for k, v in node.items() if k not in _DROP}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("anyOf", "oneOf"):
        if key in node:
            variants = [v for v in node.pop(key) if v.get("type") != "null"]
            types = {v.get("type") for v in variants}
            if len(variants) == 1:
                node = {**_convert(variants[0]), **{k: v for k, v in node.items() if k != "default" or v is not None}}
            elif types == {"integer", "string"}:
                node["x-kubernetes-int-or-string"] = True
            elif all(v.get("type") == "object" for v in variants):
                node = {**_merge_objects(variants), **node}
                if tag:  # the union's tag is what tells the variants apart: always required
                    node["required"] = sorted(set(node.get("required", [])) | {tag})
            else:
                node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("default", 0) in (None, "", [], {}):
        node.pop("default")  # the API server reads an empty default as null, which no type admits
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "properties" in node:
        node["properties"] = {k: _convert(v) for k, v in node["properties"].items()}
        node.setdefault("type", "object")
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _convert(node["additionalProperties"])
    elif node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if "items" in node:
        node["items"] = _convert(node["items"]) if node["items"] else {"x-kubernetes-preserve-unknown-fields": True}
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def structural(model) -> dict:
    """Structural OpenAPI v3 schema of a pydantic model (camelCase field names)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    return _convert(_resolve(copy.deepcopy(schema), defs))


def _trial_template_schema() -> dict:
    # A PodTemplateSpec is large and version-specific; check what the operator
    # relies on (containers with name and image) and keep the rest as written.
    container = {"type": "object", "required": ["name", "image"], "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"name": {"type": "string", "minLength": 1}, "image": {"type": "string", "minLength": 1}}}
    return {
        "type": "object",
        "required": ["spec"],
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "spec": {
                "type": "object",
                "required": ["containers"],
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"containers": {"type": "array", "minItems": 1, "items": container}},
            }
        },
    }


def _strip_defaults(node):
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def _crd(kind: str, plural: str, short: str, spec_schema: dict, status_schema: dict, columns: list[dict],
         metadata: dict | None = None) -> dict:
    metadata = metadata or {"type": "object"}
    # Status is written by the operator and the sidecar: no defaulting. Its schema names every field they write
    # (spec/status.py) and nothing else is kept: the API server prunes a field the models lack.
    status_schema = _strip_defaults(status_schema)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{resources.GROUP}"},
        "spec": {
            "group": resources.GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "shortNames": [short],
                      "categories": [resources.CATEGORY], "listKind": f"{kind}List"},
            "versions": [{
                "name": resources.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": metadata,
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


def _col(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict:
    col = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


def experiment_crd() -> dict:
    spec = structural(HPOExperimentSpec)
    spec["properties"]["trialTemplate"] = _trial_template_schema()
    columns = [
        _col("Phase", ".status.phase"),
        _col("Done", ".status.progress", description="Trials ended / maxTrials"),
        _col("Running", ".status.trials.running", "integer"),
        _col("Paused", ".status.trials.paused", "integer"),
        _col("Stopped", ".status.trials.stopped", "integer"),
        _col("Completed", ".status.trials.completed", "integer"),
        _col("Failed", ".status.trials.failed", "integer"),
        _col("Pending", ".status.trials.pending", "integer", priority=1),
        _col("Best", ".status.bestValue", description="Best objective value"),
        _col("Best-Trial", ".status.best.trial"),
        _col("Metric", ".spec.objective.metric", priority=1),
        _col("Scheduler", ".spec.scheduler.algorithm", priority=1),
        _col("Age", ".metadata.creationTimestamp", "date"),
    ]
    # Trial and pod names derive from the experiment's: keep it short enough for them.
    metadata = {"type": "object", "properties": {"name": {
        "type": "string", "maxLength": MAX_EXPERIMENT_NAME, "pattern": NAME_RE.pattern}}}
    return _crd(resources.EXPERIMENT_KIND, resources.EXPERIMENT_PLURAL, resources.EXPERIMENT_SHORT, spec, structural(HPOExperimentStatus), columns, metadata)


def trial_crd() -> dict:
    columns = [
        _col("Experiment", ".spec.experiment"),
        _col("Phase", ".status.phase"),
        _col("Epoch", ".status.lastEpoch", "integer"),
        _col("Until", ".status.until", "integer"),
        _col("Value", ".status.lastValue"),
        _col("Attempts", ".status.attempts", "integer"),
        _col("Pod", ".status.pod", priority=1),
        _col("Age", ".metadata.creationTimestamp", "date"),
    ]
    return _crd(resources.TRIAL_KIND, resources.TRIAL_PLURAL, resources.TRIAL_SHORT, structural(HPOTrialSpec), structural(HPOTrialStatus), columns)


def all_crds() -> dict[str, dict]:
    """File name -> CRD."""
    return {f"{resources.GROUP}_{resources.EXPERIMENT_PLURAL}.yaml": experiment_crd(),
            f"{resources.GROUP}_{resources.TRIAL_PLURAL}.yaml": trial_crd()}
