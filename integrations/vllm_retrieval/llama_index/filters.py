"""Translate LlamaIndex ``MetadataFilters`` into the store's Mongo-like filter dicts."""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

__all__ = ["SUPPORTED_OPERATORS", "to_store_filter"]

_OPERATORS: dict[FilterOperator, str] = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    # Array fields: the store matches a value against any element of a stored list.
    FilterOperator.ANY: "$in",
    FilterOperator.CONTAINS: "$eq",
}
_LISTS = (FilterOperator.IN, FilterOperator.NIN, FilterOperator.ANY, FilterOperator.ALL)

SUPPORTED_OPERATORS: frozenset[FilterOperator] = frozenset({*_OPERATORS, FilterOperator.ALL})
"""The LlamaIndex operators the multi-vector store can evaluate."""

_WHY_NOT = {
    FilterOperator.TEXT_MATCH: "the store has no full-text index on metadata",
    FilterOperator.TEXT_MATCH_INSENSITIVE: "the store has no full-text index on metadata",
    FilterOperator.IS_EMPTY: "the store's filters cannot test for a missing or empty field",
}


def _one(flt: MetadataFilter) -> dict[str, Any]:
    op = FilterOperator(flt.operator)
    if op not in SUPPORTED_OPERATORS:
        supported = ", ".join(o.name for o in FilterOperator if o in SUPPORTED_OPERATORS)
        why = _WHY_NOT.get(op, "it has no translation")
        raise ValueError(
            f"FilterOperator.{op.name} ({op.value!r}) on key {flt.key!r} is not supported by "
            f"the multi-vector store ({why}); supported operators: {supported}"
        )
    value: Any = flt.value
    if op in _LISTS:
        if value is None:
            raise ValueError(f"FilterOperator.{op.name} on key {flt.key!r} needs a list value")
        value = list(value) if isinstance(value, (list, tuple)) else [value]
    elif isinstance(value, list):
        raise ValueError(f"FilterOperator.{op.name} on key {flt.key!r} needs a single value")
    if op == FilterOperator.ALL:  # the list field holds every value
        if not value:
            raise ValueError(f"FilterOperator.ALL on key {flt.key!r} needs a non-empty list")
        parts = [{flt.key: {"$eq": v}} for v in value]
        return parts[0] if len(parts) == 1 else {"$and": parts}
    return {flt.key: {_OPERATORS[op]: value}}


def _many(filters: MetadataFilters) -> dict[str, Any] | None:
    parts: list[dict[str, Any]] = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            sub = _many(item)
            if sub is not None:
                parts.append(sub)
        elif isinstance(item, MetadataFilter):
            parts.append(_one(item))
        else:  # pragma: no cover - guarded by MetadataFilters' own validation
            raise TypeError(f"unsupported filter {type(item).__name__}")
    if not parts:
        return None
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return parts[0] if len(parts) == 1 else {"$or": parts}
    if condition == FilterCondition.NOT:
        # LlamaIndex's NOT matches when none of the filters match.
        return {"$not": parts[0] if len(parts) == 1 else {"$or": parts}}
    raise ValueError(f"FilterCondition {condition!r} is not supported")  # pragma: no cover


def to_store_filter(
    filters: MetadataFilters | MetadataFilter | dict[str, Any] | None,
) -> dict[str, Any] | None:
    """The store filter for LlamaIndex ``filters`` (a dict passes through unchanged).

    ``FilterOperator`` EQ, NE, GT, GTE, LT, LTE, IN and NIN are translated, and for list
    fields ANY (holds one of the values), ALL (holds every value) and CONTAINS (holds the
    value); so are the conditions AND, OR and NOT (NOT: none of the filters match, as in
    LlamaIndex) and nested ``MetadataFilters``. NE and NIN also match nodes without the
    field (as LlamaIndex's own stores do). TEXT_MATCH, TEXT_MATCH_INSENSITIVE and IS_EMPTY
    raise ``ValueError`` naming the operator and why.
    Returns ``None`` when there is nothing to filter on.
    """
    if filters is None:
        return None
    if isinstance(filters, dict):
        return dict(filters) or None
    if isinstance(filters, MetadataFilters):
        return _many(filters)
    if isinstance(filters, MetadataFilter):
        return _one(filters)
    raise TypeError(
        f"filters must be MetadataFilters, MetadataFilter or a dict, got {type(filters).__name__}"
    )
