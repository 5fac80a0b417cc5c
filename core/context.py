"""Declared context: the extra impression fields a source brings (domain, slot size, ad
exchange, floor price, ...), typed, from the log to the models and the scorer.

A source declares each field once, with a kind:

- ``categorical``: text (a domain, a city, a slot id); models embed it through a
  vocabulary of the values seen in training;
- ``numeric``: a number (a floor price, a viewability score); models read it
  normalised.

Each field is a typed column of the impressions table, ``ctx_<name>`` (string or
float64), not a map or struct column: Parquet keeps per-column types and statistics,
Spark groups by it directly, Great Expectations checks it like any other column, and a
Feast entity frame carries it through a point-in-time join unchanged. The price is that
the impressions schema depends on the data root; the declarations live next to the
events, in ``<data root>/events/_context.json``, and a later source may add fields but
not change a declared field's kind.

A request's ``context`` carries the same fields by name (``{"domain": "news.example"}``);
the scorer accepts the fields its models were trained with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from core import events

Kind = Literal["categorical", "numeric"]
KINDS: tuple[Kind, ...] = ("categorical", "numeric")
PREFIX = "ctx_"
DECLARATIONS = "_context.json"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Names the request context already has (the contract's request features).
RESERVED = frozenset({"timestamp", "position", "placement", "device", "country"})


@dataclass(frozen=True)
class ContextField:
    name: str
    kind: Kind

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(
                f"context field {self.name!r}: lower-case letters, digits and _ (at most 40), "
                "starting with a letter"
            )
        if self.name in RESERVED:
            raise ValueError(f"context field {self.name!r} is a built-in request field")
        if self.kind not in KINDS:
            raise ValueError(f"context field {self.name!r}: kind {self.kind!r}, not one of {KINDS}")

    @property
    def column(self) -> str:
        """The impressions column: ``ctx_<name>``."""
        return PREFIX + self.name

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.string() if self.kind == "categorical" else pa.float64()


def field_of_column(column: str, fields: tuple[ContextField, ...]) -> ContextField | None:
    return next((f for f in fields if f.column == column), None)


def declared(data_root: Path) -> tuple[ContextField, ...]:
    """The fields declared under ``data_root``, in declaration order (none: empty)."""
    path = events.events_root(data_root) / DECLARATIONS
    if not path.exists():
        return ()
    return tuple(ContextField(f["name"], f["kind"]) for f in json.loads(path.read_text()))


def declare(data_root: Path, fields: tuple[ContextField, ...]) -> tuple[ContextField, ...]:
    """Add ``fields`` to the data root's declarations; a field declared before with
    another kind is refused. Returns every declared field."""
    known = {f.name: f for f in declared(data_root)}
    for field in fields:
        before = known.get(field.name)
        if before is not None and before.kind != field.kind:
            raise ValueError(
                f"context field {field.name!r} is declared {before.kind} in {data_root}; this "
                f"source declares it {field.kind} (rename it, or re-ingest into a new data root)"
            )
        known.setdefault(field.name, field)
    path = events.events_root(data_root) / DECLARATIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    everything = tuple(known.values())
    path.write_text(json.dumps([{"name": f.name, "kind": f.kind} for f in everything], indent=2))
    return everything


def impressions_table(fields: tuple[ContextField, ...]) -> events.Table:
    """The impressions table with the declared context columns (nullable) at the end."""
    if not fields:
        return events.IMPRESSIONS
    base = events.IMPRESSIONS
    schema = base.schema
    for field in fields:
        schema = schema.append(pa.field(field.column, field.arrow_type, nullable=True))
    return events.Table(base.name, schema, base.time_column, base.key)
