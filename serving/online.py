"""Online features straight from Feast's Redis layout, one pipelined round trip.

Feast's SDK turns every value into a protobuf object and every entity into a Python
dict; for an auction over hundreds of ads that costs tens of milliseconds (DESIGN.md).
This reader keeps Feast's layout and semantics and does the work column-wise:

* **Keys** are Feast's: the entity key serialised with version 3 (``<u32 n>``, then per
  join key sorted by name ``<u32 2><u32 len><name>``, then per value ``<u32 type><u32
  len><little-endian bytes>``), followed by the project name. Views on the same join
  keys share one hash, so one ``HMGET`` per entity reads every view on it.
* **Fields** are Feast's: ``mmh3("<view>:<feature>")`` (4 bytes, little-endian,
  unsigned) per feature and ``_ts:<view>`` for the row's event timestamp.
* **Values** are serialised ``feast.types.Value`` protobufs, decoded here without
  protobuf objects: fixed-width doubles and varint integers in a few NumPy passes over
  all replies at once, strings in Python. An empty value is null (Feast writes null and
  NaN that way) and so is a view that never wrote the entity.
* **TTL**, unlike Feast's online path (feast issue 6821): a view's values older than its
  TTL at the request instant are missing, as the offline join would treat them.

:meth:`OnlineReader.read` returns, per entity group, numeric columns (float64 with NaN,
and exact int64 with a presence mask for id-valued features) and string columns.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from feature_repo import contract
from serving.redis_pipe import RedisPipe, hmget, pack_hmget_prefix

# feast.types.Value field tags (field number << 3 | wire type) and ValueType codes.
STRING_TAG, INT32_TAG, INT64_TAG, DOUBLE_TAG, FLOAT_TAG, BOOL_TAG = (
    0x12,
    0x18,
    0x20,
    0x29,
    0x35,
    0x38,
)
VALUE_TYPE_CODES = {contract.INT64: 4, contract.STRING: 2}
TIMESTAMP_SECONDS_TAG, TIMESTAMP_NANOS_TAG = 0x08, 0x10
MAX_VARINT = 10


def _mmh3(text: str) -> bytes:
    """Feast's hash field name: 4-byte little-endian unsigned murmur3 of ``text``."""
    import mmh3

    return mmh3.hash(text, signed=False).to_bytes(4, "little")


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
        parts = [self.key_prefix]
        for value_type, value in zip(self.key_types, values, strict=True):
            if value_type == VALUE_TYPE_CODES[contract.INT64]:
                parts.append(struct.pack("<IIq", value_type, 8, value))
            else:
                encoded = str(value).encode()
                parts.append(struct.pack("<II", value_type, len(encoded)) + encoded)
        parts.append(project)
        return b"".join(parts)

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
                fields += [_mmh3(f"{spec.name}:{f.name}") for f in features]
                fields.append(f"_ts:{spec.name}".encode())
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
            prefix = struct.pack("<I", len(join_keys)) + b"".join(
                struct.pack("<II", VALUE_TYPE_CODES[contract.STRING], len(k)) + k.encode()
                for k in join_keys
            )
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


def decode_numbers(values: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric ``Value`` protobufs, vectorised: float64 (NaN when empty or not numeric),
    exact int64 of the integer values, and which values were integers."""
    n = len(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    buffer = np.frombuffer(b"".join(values) + bytes(MAX_VARINT + 1), dtype=np.uint8)
    starts = np.cumsum(lengths) - lengths
    tags = np.where(lengths > 0, buffer[starts], 0)
    floats = np.full(n, np.nan)
    ints = np.zeros(n, dtype=np.int64)

    doubles = np.flatnonzero(tags == DOUBLE_TAG)
    if doubles.size:
        raw = buffer[(starts[doubles] + 1)[:, None] + np.arange(8)]
        floats[doubles] = raw.copy().view("<f8").ravel()
    singles = np.flatnonzero(tags == FLOAT_TAG)
    if singles.size:
        raw = buffer[(starts[singles] + 1)[:, None] + np.arange(4)]
        floats[singles] = raw.copy().view("<f4").ravel()
    varints = np.flatnonzero((tags == INT64_TAG) | (tags == INT32_TAG) | (tags == BOOL_TAG))
    if varints.size:
        ints[varints] = _varints(buffer, starts[varints] + 1, lengths[varints] - 1)
        floats[varints] = ints[varints]
    is_int = np.zeros(n, dtype=bool)
    is_int[varints] = True
    return floats, ints, is_int


def _varints(buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Little-endian base-128 varints (protobuf int64: negatives take 10 bytes)."""
    positions = np.arange(MAX_VARINT)
    raw = buffer[starts[:, None] + positions].astype(np.uint64)
    raw[positions[None, :] >= lengths[:, None]] = 0
    shifted = (raw & np.uint64(0x7F)) << (np.uint64(7) * positions.astype(np.uint64))
    return np.bitwise_or.reduce(shifted, axis=1).view(np.int64)


# Strings (categories, bid types) and row timestamps (a batch view's window end) repeat
# across entities and requests: decoded ones are remembered, up to a bound.
_CACHE_LIMIT = 100_000
_strings: dict[bytes, str | None] = {b"": None}
_stamps: dict[bytes, int] = {b"": 0}


def decode_string(value: bytes) -> str | None:
    cached = _strings.get(value, _strings)
    if cached is not _strings:
        return cached  # type: ignore[return-value]
    text = None
    if value[0] == STRING_TAG:
        length, at = _varint(value, 1)
        text = value[at : at + length].decode()
    if len(_strings) < _CACHE_LIMIT:
        _strings[value] = text
    return text


def decode_timestamps(values: Sequence[bytes]) -> np.ndarray:
    """Serialised ``google.protobuf.Timestamp`` values as UTC micros (an absent or empty
    value is the epoch, as protobuf parses it)."""
    out = []
    for value in values:
        micros = _stamps.get(value)
        if micros is None:
            micros = _timestamp(value)
            if len(_stamps) < _CACHE_LIMIT:
                _stamps[value] = micros
        out.append(micros)
    return np.array(out, dtype=np.int64)


def _timestamp(value: bytes) -> int:
    seconds = nanos = at = 0
    while at < len(value):
        tag = value[at]
        number, at = _varint(value, at + 1)
        if tag == TIMESTAMP_SECONDS_TAG:
            seconds = number
        elif tag == TIMESTAMP_NANOS_TAG:
            nanos = number
    return seconds * 1_000_000 + nanos // 1000


def _varint(value: bytes, at: int) -> tuple[int, int]:
    number = shift = 0
    while True:
        byte = value[at]
        number |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return number, at
        shift += 7


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
