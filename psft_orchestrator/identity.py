"""Which stage fields make up a node's identity (its fingerprint), marked at the field.

In the spirit of Marin's `versioned`: a field declared with `param(...)` belongs to the node's
fingerprint, so changing it computes a new node; a field declared with `setting(...)` changes
how a node is run, logged or shown (log/eval/save cadence, resources, labels, worker count), not
what it computes, so changing it keeps the node cached. Every top-level field of a stage model
carries one of the two marks (a test checks it), so a new hyperparameter cannot silently fall
out of the fingerprint. Nested models (a suite, `kl:`) count as one value of their field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

MARK = "fingerprint"


def param(*args: Any, **kwargs: Any) -> Any:
    """A pydantic `Field` that belongs to the fingerprint (what the node computes)."""
    return Field(*args, json_schema_extra={MARK: True}, **kwargs)


def setting(*args: Any, **kwargs: Any) -> Any:
    """A pydantic `Field` left out of the fingerprint (how the node is run, logged or shown)."""
    return Field(*args, json_schema_extra={MARK: False}, **kwargs)


def mark(info: FieldInfo) -> bool | None:
    """True (`param`), False (`setting`) or None (an unmarked plain `Field`)."""
    extra = info.json_schema_extra
    return extra.get(MARK) if isinstance(extra, dict) else None


def fingerprint_fields(model: type[BaseModel]) -> list[str]:
    """Names of the model's fields that belong to the fingerprint, in declaration order."""
    return [name for name, info in model.model_fields.items() if mark(info) is True]


def unmarked_fields(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if mark(info) is None]
