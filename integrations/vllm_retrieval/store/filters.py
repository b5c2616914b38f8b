"""The store's metadata filter language (Mongo/Chroma-like dicts) and its Qdrant translation.

Grammar (what LangChain users expect)::

    {"field": value}                                  equality (str, int, bool or float)
    {"field": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte": x}}
    {"field": {"$in"|"$nin": [x, ...]}}              any-of / none-of (str or int values)
    {"$and": [f, ...]}  {"$or": [f, ...]}  {"$not": f}

Several keys in one dict (or several operators on one field) are all required. ``$ne`` and
``$nin`` also match documents that lack the field (as in MongoDB). Field names address the
document metadata: ``"year"`` is the payload path ``metadata.year``; dotted names reach into
nested dicts. An unknown operator raises ``ValueError`` naming it.

:func:`parse_filter` validates a dict into a small backend-neutral tree; each Qdrant backend
turns the tree into its own filter objects with :func:`to_qdrant` and a :class:`FilterFactory`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "And",
    "AnyOf",
    "Eq",
    "FilterFactory",
    "FilterNode",
    "Not",
    "Or",
    "Range",
    "parse_filter",
    "to_qdrant",
]

PAYLOAD_PREFIX = "metadata."
_RANGE_OPS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
_FIELD_OPS = ("$eq", "$ne", "$in", "$nin", *_RANGE_OPS)
_LOGICAL = ("$and", "$or", "$not")

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Eq:
    """``key == value``."""

    key: str
    value: Scalar


@dataclass(frozen=True)
class AnyOf:
    """``key`` equals one of ``values`` (all str or all int)."""

    key: str
    values: tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class Range:
    """Numeric range on ``key`` (bounds that are None are open)."""

    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class And:
    """All children hold."""

    children: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Or:
    """At least one child holds."""

    children: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Not:
    """The child does not hold."""

    child: FilterNode


FilterNode = Eq | AnyOf | Range | And | Or | Not


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"filter field names must be non-empty strings, got {key!r}")
    if key.startswith("$"):
        raise ValueError(
            f"unknown filter operator {key!r} (known: {', '.join(_LOGICAL + _FIELD_OPS)})"
        )
    return PAYLOAD_PREFIX + key


def _scalar(key: str, op: str, value: Any) -> Scalar:
    if isinstance(value, (str, bool, int, float)):
        if isinstance(value, float) and value != value:
            raise ValueError(f"filter {op} on {key!r}: NaN is not comparable")
        return value
    raise ValueError(
        f"filter {op} on {key!r} needs a str, int, float or bool, got {type(value).__name__}"
    )


def _values(key: str, op: str, values: Any) -> tuple[str, ...] | tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, set, frozenset)):
        raise ValueError(f"filter {op} on {key!r} needs a list of values, got {values!r}")
    items = list(values)
    if not items:
        raise ValueError(f"filter {op} on {key!r} needs at least one value")
    if all(isinstance(v, str) for v in items):
        return tuple(str(v) for v in items)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return tuple(int(v) for v in items)
    raise ValueError(f"filter {op} on {key!r} needs all-str or all-int values, got {items!r}")


def _field(name: str, spec: Any) -> FilterNode:
    key = _check_key(name)
    if not isinstance(spec, Mapping):
        return Eq(key, _scalar(name, "equality", spec))
    if not spec:
        raise ValueError(f"empty operator dict for filter field {name!r}")
    parts: list[FilterNode] = []
    bounds: dict[str, float] = {}
    for op, value in spec.items():
        if op == "$eq":
            parts.append(Eq(key, _scalar(name, op, value)))
        elif op == "$ne":
            parts.append(Not(Eq(key, _scalar(name, op, value))))
        elif op == "$in":
            parts.append(AnyOf(key, _values(name, op, value)))
        elif op == "$nin":
            parts.append(Not(AnyOf(key, _values(name, op, value))))
        elif op in _RANGE_OPS:
            if not _is_number(value) or value != value:
                raise ValueError(f"filter {op} on {name!r} needs a number, got {value!r}")
            bounds[_RANGE_OPS[op]] = float(value)
        else:
            raise ValueError(
                f"unknown filter operator {op!r} on field {name!r} (known: {', '.join(_FIELD_OPS)})"
            )
    if bounds:
        parts.append(Range(key, **bounds))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _node(spec: Any) -> FilterNode:
    if not isinstance(spec, Mapping):
        raise ValueError(f"a filter must be a dict, got {type(spec).__name__}")
    if not spec:
        raise ValueError("empty filter dict inside a combinator")
    parts: list[FilterNode] = []
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"{key} needs a non-empty list of filters, got {value!r}")
            children = tuple(_node(v) for v in value)
            parts.append(And(children) if key == "$and" else Or(children))
        elif key == "$not":
            parts.append(Not(_node(value)))
        else:
            parts.append(_field(key, value))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def parse_filter(spec: Mapping[str, Any] | None) -> FilterNode | None:
    """Validate a filter dict into a tree (``None`` or ``{}`` mean no filter)."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ValueError(f"a filter must be a dict, got {type(spec).__name__}")
    if not spec:
        return None
    return _node(spec)


@dataclass(frozen=True)
class FilterFactory:
    """How one Qdrant API spells conditions (Qdrant Edge and qdrant-client differ slightly)."""

    match_value: Callable[[str, Scalar], Any]
    match_any: Callable[[str, list[Any]], Any]
    range: Callable[[str, dict[str, float]], Any]
    filter: Callable[..., Any]  # filter(must=..., should=..., must_not=...)


def to_qdrant(node: FilterNode, f: FilterFactory) -> Any:
    """A Qdrant filter object for a parsed tree (the top level is always a Filter)."""
    cond = _cond(node, f)
    if isinstance(node, (And, Or, Not)):
        return cond
    return f.filter(must=[cond])


def _cond(node: FilterNode, f: FilterFactory) -> Any:
    if isinstance(node, Eq):
        if isinstance(node.value, float):
            return f.range(node.key, {"gte": node.value, "lte": node.value})
        return f.match_value(node.key, node.value)
    if isinstance(node, AnyOf):
        return f.match_any(node.key, list(node.values))
    if isinstance(node, Range):
        bounds = {
            k: v
            for k, v in (("gt", node.gt), ("gte", node.gte), ("lt", node.lt), ("lte", node.lte))
            if v is not None
        }
        return f.range(node.key, bounds)
    if isinstance(node, And):
        return f.filter(must=[_cond(c, f) for c in node.children])
    if isinstance(node, Or):
        return f.filter(should=[_cond(c, f) for c in node.children])
    return f.filter(must_not=[_cond(node.child, f)])
