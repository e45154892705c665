"""Shared pydantic configuration: camelCase on the wire, unknown fields refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """Base of every manifest model.

    ``extra="forbid"`` turns a typo (``maxTrails``) into an error that names
    the field instead of a silently ignored setting.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_manifest(self) -> dict:
        """The camelCase dict as it appears in YAML (defaults included)."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)
