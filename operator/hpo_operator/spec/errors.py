"""Turn pydantic's validation errors into messages that name the manifest field and the fix.

``spec.searchSpace.lr.min: must be > 0 for a log scale (got 0); use a positive
lower bound or a linear domain`` rather than a nested pydantic dump.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from hpo_operator.spec.search_space import DOMAIN_TYPES

# A validator message may start with the sub-field it is about ("min: ...").
_LEADING_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]/-]*(?:, [A-Za-z_][\w.-]*)*): (.*)$", re.S)


class ManifestError(ValueError):
    """An invalid manifest; ``problems`` lists one ``field: message`` string each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _path(loc: tuple) -> list[str]:
    parts: list[str] = []
    space_at = None
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        if space_at is not None and i == space_at + 1:
            parts.append(item)  # the user's own parameter name, kept as written
        elif space_at is not None and i == space_at + 2 and item in DOMAIN_TYPES:
            continue  # the discriminated union's tag, not a field
        elif item.startswith("function-") or item in ("int", "str", "float"):
            continue  # pydantic's names for validators and union members
        else:
            parts.append(_camel(item))
        if item in ("searchSpace", "search_space"):
            space_at = i
    return parts


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for e in err.errors():
        parts = _path(tuple(e["loc"]))
        msg = e["msg"]
        msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
        m = _LEADING_FIELD.match(msg)
        if m and e["type"] == "value_error":
            parts.append(m.group(1))
            msg = m.group(2)
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling against the HPOExperiment reference (docs/manifest.md)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "union_tag_invalid":
            msg = f"type must be one of {', '.join(DOMAIN_TYPES)}"
        elif e["type"] == "union_tag_not_found":
            parts.append("type")
            msg = f"required; one of {', '.join(DOMAIN_TYPES)}"
        elif e["type"] == "dict_type":
            msg = "must be a mapping (name: value), not a list or a scalar"
        msg = msg.replace("Input should be", "must be")
        path = ".".join(parts).replace(".[", "[")
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        problems.append(f"{path}: {msg}")
    return problems
