"""Online features straight from Feast's Redis layout, one pipelined round trip.

Feast's SDK turns every value into a protobuf object and every entity into a Python
dict; for an auction over hundreds of ads that costs tens of milliseconds (DESIGN.md).
This reader keeps Feast's layout and semantics and does the work column-wise:

* **Layout** is Feast's, written and read through one codec (:mod:`core.feast_codec`):
  views on the same join keys share one hash, so one ``HMGET`` per entity reads every
  view on it. Numbers are decoded in a few NumPy passes over all replies at once,
  strings in Python. An empty value is null (Feast writes null and NaN that way) and
  so is a view that never wrote the entity.
* **TTL**, unlike Feast's online path (feast issue 6821): a view's values older than its
  TTL at the request instant are missing, as the offline join would treat them.

:meth:`OnlineReader.read` returns, per entity group, numeric columns (float64 with NaN,
and exact int64 with a presence mask for id-valued features) and string columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from core import feast_codec
from core.feast_codec import decode_numbers, decode_string, decode_timestamps
from feature_repo import contract
from serving.redis_pipe import RedisPipe, hmget, pack_hmget_prefix

VALUE_TYPE_CODES = {contract.INT64: feast_codec.INT64, contract.STRING: feast_codec.STRING}


@dataclass(frozen=True)
class ViewFields:
    """One view's fields inside its entity hash."""

    name: str
    features: tuple[contract.Feature, ...]
    ttl_micros: int  # 0: no TTL
    first: int  # index of the view's first feature field in the group's HMGET
    ts_index: int  # index of its ``_ts`` field


@dataclass(frozen=True)
class EntityGroup:
    """Views sharing one set of join keys, read with one ``HMGET`` per entity."""

    join_keys: tuple[str, ...]  # sorted, as Feast serialises them
    key_types: tuple[int, ...]
    views: tuple[ViewFields, ...]
    fields: tuple[bytes, ...]
    key_prefix: bytes

    def key(self, values: Sequence[Any], project: bytes) -> bytes:
        """The Redis key of one entity; ``values`` follow ``join_keys``."""
        return feast_codec.entity_key(self.key_prefix, self.key_types, values, project)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for v in self.views for f in v.features]

    @cached_property
    def columns(self) -> dict[str, int]:
        return {f.name: v.first + i for v in self.views for i, f in enumerate(v.features)}


@dataclass(frozen=True)
class OnlineLayout:
    """The hashes and fields to read for a set of feature views, grouped by join keys."""

    project: bytes
    groups: dict[str, EntityGroup]  # by name: the join keys joined with "+"

    @classmethod
    def of(
        cls,
        views: Iterable[str] | Mapping[str, Iterable[str]],
        project: str = "adstack",
    ) -> OnlineLayout:
        """``views``: view names (every feature), or view name -> the features to read."""
        wanted = (
            {name: set(features) for name, features in views.items()}
            if isinstance(views, Mapping)
            else {name: None for name in views}
        )
        by_keys: dict[tuple[str, ...], list[contract.ViewSpec]] = {}
        for name in wanted:
            spec = contract.ALL_VIEWS[name]
            by_keys.setdefault(tuple(sorted(spec.join_keys)), []).append(spec)
        groups = {}
        for join_keys, specs in by_keys.items():
            fields: list[bytes] = []
            view_fields = []
            for spec in specs:
                chosen = wanted[spec.name]
                features = tuple(f for f in spec.features if chosen is None or f.name in chosen)
                first = len(fields)
                fields += [feast_codec.field_hash(spec.name, f.name) for f in features]
                fields.append(feast_codec.ts_field(spec.name))
                view_fields.append(
                    ViewFields(
                        spec.name,
                        features,
                        int(spec.ttl.total_seconds() * 1_000_000),
                        first,
                        len(fields) - 1,
                    )
                )
            dtypes = {e.join_key: e.dtype for spec in specs for e in spec.entities}
            prefix = feast_codec.key_prefix(join_keys)
            groups["+".join(join_keys)] = EntityGroup(
                join_keys,
                tuple(VALUE_TYPE_CODES[dtypes[k]] for k in join_keys),
                tuple(view_fields),
                tuple(fields),
                prefix,
            )
        return cls(project.encode(), groups)


@dataclass
class GroupValues:
    """One entity group's features for its entities, as matrices (one row per entity,
    one column per field of the group's ``HMGET``).

    ``floats`` is float64 with NaN for missing (every numeric feature); ``ints`` the exact
    int64 of integer values where ``present``; ``strings[name]`` an object array with None
    for missing. ``expired[view]`` counts entities whose row was older than the view's
    TTL; their values are missing.
    """

    columns: dict[str, int]  # feature name -> column
    floats: np.ndarray
    ints: np.ndarray
    present: np.ndarray
    strings: dict[str, np.ndarray] = field(default_factory=dict)
    timestamps: dict[str, np.ndarray] = field(default_factory=dict)  # UTC micros
    expired: dict[str, int] = field(default_factory=dict)

    @property
    def entities(self) -> int:
        return len(self.floats)

    def number(self, name: str) -> np.ndarray:
        return self.floats[:, self.columns[name]]

    def integer(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(exact int64 values, present) of an int64 feature."""
        column = self.columns[name]
        return self.ints[:, column], self.present[:, column]

    def value(self, name: str, row: int) -> Any:
        """One value as Feast's SDK returns it: int, float, str or None."""
        if name in self.strings:
            return self.strings[name][row]
        column = self.columns[name]
        if self.present[row, column]:
            return int(self.ints[row, column])
        number = self.floats[row, column]
        return None if np.isnan(number) else float(number)

    def take(self, rows: np.ndarray, found: np.ndarray) -> GroupValues:
        """Rows by index; where ``found`` is False the row is all missing."""
        floats = self.floats[rows]
        floats[~found] = np.nan
        return GroupValues(
            self.columns,
            floats,
            self.ints[rows],
            self.present[rows] & found[:, None],
            {name: _or_none(values[rows], found) for name, values in self.strings.items()},
        )

    @classmethod
    def concat(cls, a: GroupValues, b: GroupValues) -> GroupValues:
        return cls(
            a.columns,
            np.concatenate([a.floats, b.floats]),
            np.concatenate([a.ints, b.ints]),
            np.concatenate([a.present, b.present]),
            {k: np.concatenate([v, b.strings[k]]) for k, v in a.strings.items()},
            {k: np.concatenate([v, b.timestamps[k]]) for k, v in a.timestamps.items()},
            {k: a.expired.get(k, 0) + b.expired.get(k, 0) for k in {*a.expired, *b.expired}},
        )


def _or_none(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """An object array with None where ``keep`` is False."""
    out = values.copy()
    out[~keep] = None
    return out


def decode_group(
    group: EntityGroup,
    replies: Sequence[Sequence[bytes | None]],
    now_micros: int | None,
    numbers: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> GroupValues:
    """Decode the ``HMGET`` replies of ``group`` (one per entity, fields in group order).

    ``now_micros`` is the request instant for the TTL check; None disables it (Feast's
    online semantics). ``numbers``: the replies already through :func:`decode_numbers`
    (one call for every group of a read saves its fixed cost per group)."""
    n, width = len(replies), len(group.fields)
    flat = [value or b"" for reply in replies for value in reply]
    if len(flat) != n * width:
        raise ValueError(f"expected {width} fields per entity, got {len(flat)} values")
    floats, ints, is_int = numbers if numbers is not None else decode_numbers(flat)
    out = GroupValues(
        group.columns, floats.reshape(n, width), ints.reshape(n, width), is_int.reshape(n, width)
    )
    for view in group.views:
        stamps = flat[view.ts_index :: width]
        ts = decode_timestamps(stamps)
        out.timestamps[view.name] = ts
        valid = None
        if now_micros is not None and view.ttl_micros > 0:
            # An absent stamp reads as the epoch, as Feast reads it: expired.
            valid = ts >= now_micros - view.ttl_micros
            written = np.fromiter(map(len, stamps), dtype=np.int64, count=n) > 0
            out.expired[view.name] = int((written & ~valid).sum())
            stale = ~valid
            if stale.any():
                block = slice(view.first, view.first + len(view.features))
                out.floats[stale, block] = np.nan
                out.present[stale, block] = False
        for offset, feature in enumerate(view.features):
            if feature.dtype == contract.STRING:
                texts = np.array(
                    [decode_string(v) for v in flat[view.first + offset :: width]], object
                )
                out.strings[feature.name] = texts if valid is None else _or_none(texts, valid)
    return out


class OnlineReader:
    """Reads a layout's groups for given entities with one pipelined round trip."""

    def __init__(self, layout: OnlineLayout) -> None:
        self.layout = layout
        # HMGET of each group, packed once: per request only the keys are added.
        self.packed = {
            name: pack_hmget_prefix(group.fields) for name, group in layout.groups.items()
        }

    def payload(self, entities: Mapping[str, Sequence[Sequence[Any]]]) -> tuple[bytes, int]:
        """The pipelined ``HMGET``s for ``entities`` as one RESP buffer, and their count."""
        parts, project = [], self.layout.project
        for name, rows in entities.items():
            group = self.layout.groups[name]
            head, tail = self.packed[name]
            parts += [hmget(head, tail, group.key(values, project)) for values in rows]
        return b"".join(parts), len(parts)

    def commands(self, entities: Mapping[str, Sequence[Sequence[Any]]]) -> list[tuple]:
        """``HMGET`` commands for ``entities[group] = [join-key values, ...]``."""
        commands = []
        for name, rows in entities.items():
            group = self.layout.groups[name]
            for values in rows:
                commands.append(("HMGET", group.key(values, self.layout.project), *group.fields))
        return commands

    async def read(
        self,
        pipe: RedisPipe,
        entities: Mapping[str, Sequence[Sequence[Any]]],
        now_micros: int | None,
    ) -> dict[str, GroupValues]:
        """Every group's values for the given entities, in one round trip."""
        payload, count = self.payload(entities)
        replies = await pipe.execute(payload, count)
        return self.decode(entities, replies, now_micros)

    def read_sync(
        self, client: Any, entities: Mapping[str, Sequence[Sequence[Any]]], now_micros: int | None
    ) -> dict[str, GroupValues]:
        """The same read through a redis-py client (tools and tests)."""
        pipe = client.pipeline(transaction=False)
        for command in self.commands(entities):
            pipe.execute_command(*command)
        return self.decode(entities, pipe.execute(), now_micros)

    def decode(
        self,
        entities: Mapping[str, Sequence[Sequence[Any]]],
        replies: Sequence[Sequence[bytes | None]],
        now_micros: int | None,
    ) -> dict[str, GroupValues]:
        numbers = decode_numbers([value or b"" for reply in replies for value in reply])
        out, at, offset = {}, 0, 0
        for name, rows in entities.items():
            size = len(rows) * len(self.layout.groups[name].fields)
            out[name] = decode_group(
                self.layout.groups[name],
                replies[at : at + len(rows)],
                now_micros,
                tuple(a[offset : offset + size] for a in numbers),  # type: ignore[arg-type]
            )
            at, offset = at + len(rows), offset + size
        return out
