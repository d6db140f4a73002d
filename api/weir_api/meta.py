"""Shared building blocks: the base model, Kubernetes-style conditions and selectors.

All weir models use camelCase names on the wire (as every Kubernetes API does),
reject unknown fields (a typo is an error, not a silently ignored key) and carry
a description on every field: the CRD generator turns those into the text of
``kubectl explain``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from weir_api import limits


class Model(BaseModel):
    """Base of every weir API model."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=False,
        frozen=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it goes to the API server or a file: camelCase, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` for CEL cross-field rules (``x-kubernetes-validations``)."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class LabelSelectorRequirement(Model):
    """A label selector requirement (metav1.LabelSelectorRequirement)."""

    key: str = Field(max_length=limits.MAX_NAME, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values."
    )
    values: list[str] = Field(
        default_factory=list,
        max_length=limits.MAX_VALUES,
        description="Values for In and NotIn; empty for Exists and DoesNotExist.",
    )


class LabelSelector(Model):
    """A Kubernetes label selector (metav1.LabelSelector); empty selects everything."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        max_length=limits.MAX_MATCH_ARGS,
        description="Requirements that must all hold.",
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Kubernetes label selector semantics (an empty selector matches everything)."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            if requirement.operator == "In" and value not in requirement.values:
                return False
            if requirement.operator == "NotIn" and present and value in requirement.values:
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True


ConditionType = Literal["Ready", "Reconciling", "Stalled", "Degraded"]


class Condition(Model):
    """One aspect of the object's state (metav1.Condition), read by kubectl wait, kstatus and
    Argo CD."""

    type: ConditionType = Field(
        description="Ready: every targeted node runs this generation. Reconciling: some nodes "
        "have not caught up yet. Stalled: the spec is invalid and nothing was rendered. "
        "Degraded: some nodes failed to compile, verify or attach the program."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition was set for."
    )
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="A CamelCase word for programs (e.g. VerifierRejected).",
    )
    message: str = Field(
        default="", max_length=limits.MAX_MESSAGE, description="What happened, for humans."
    )
