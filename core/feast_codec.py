"""The codec of Feast's Redis online layout: one module writes it and reads it.

Feast's Redis online store keeps one hash per entity key and project:

* **Key**: the entity key serialised with version 3 (``<u32 n>``, then per join key
  sorted by name ``<u32 2><u32 len><name>``, then per value ``<u32 type><u32
  len><little-endian bytes>``), followed by the project name. Views on the same join
  keys share one hash.
* **Fields**: ``mmh3("<view>:<feature>")`` (4 bytes, little-endian, unsigned) per
  feature, ``_ts:<view>`` for the row's event timestamp.
* **Values**: serialised ``feast.types.Value`` protobufs (null and NaN are the empty
  ``Value``), timestamps as serialised ``google.protobuf.Timestamp``.

The encoders are column-wise (NumPy and Arrow over a whole batch, producing RESP
commands); the decoders are vectorised over a read's replies. Neither builds protobuf
objects. Materialisation and Feast pushes write through the encoders
(:mod:`core.feast_redis`); the scorer's online reader reads through the decoders. Value
types are Feast's ``ValueType`` codes as plain integers, so the scorer never imports
Feast.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if sys.byteorder != "little":
    raise ImportError("core.feast_codec assumes a little-endian machine")

# Feast's ValueType codes (feast.value_type.ValueType) of the scalar types.
STRING, INT32, INT64, DOUBLE, FLOAT, BOOL = 2, 3, 4, 5, 6, 7
# feast.types.Value field tags (field number << 3 | wire type).
STRING_TAG, INT32_TAG, INT64_TAG, DOUBLE_TAG, FLOAT_TAG, BOOL_TAG = (
    0x12,
    0x18,
    0x20,
    0x29,
    0x35,
    0x38,
)
VARINT_TAGS = {INT64: INT64_TAG, INT32: INT32_TAG}
FIXED_TAGS = {DOUBLE: (DOUBLE_TAG, "<f8"), FLOAT: (FLOAT_TAG, "<f4")}
TIMESTAMP_SECONDS_TAG, TIMESTAMP_NANOS_TAG = 0x08, 0x10
MAX_VARINT = 10
EMPTY = pa.scalar(b"", pa.binary())


def field_hash(view: str, feature: str) -> bytes:
    """Feast's hash field of a feature: 4-byte little-endian unsigned murmur3."""
    return mmh3.hash(f"{view}:{feature}", signed=False).to_bytes(4, "little")


def ts_field(view: str) -> bytes:
    """The field holding a view's row timestamp."""
    return f"_ts:{view}".encode()


def key_prefix(join_keys: Sequence[str]) -> bytes:
    """The part of every entity key of these join keys (sorted) before the values."""
    return struct.pack("<I", len(join_keys)) + b"".join(
        struct.pack("<II", STRING, len(k.encode())) + k.encode() for k in join_keys
    )


def entity_key(
    prefix: bytes, types: Sequence[int], values: Sequence[object], project: bytes
) -> bytes:
    """The Redis key of one entity: ``values`` follow the sorted join keys of ``prefix``."""
    parts = [prefix]
    for value_type, value in zip(types, values, strict=True):
        if value_type == INT64:
            parts.append(struct.pack("<IIq", value_type, 8, value))
        elif value_type == INT32:
            parts.append(struct.pack("<IIi", value_type, 4, value))
        else:
            encoded = str(value).encode()
            parts.append(struct.pack("<II", value_type, len(encoded)) + encoded)
    parts.append(project)
    return b"".join(parts)


# Encoding, column-wise.


@dataclass(frozen=True)
class RowLayout:
    """Everything about a view's Redis layout that does not depend on the rows."""

    name: str
    project: bytes
    join_keys: dict[str, int]  # join key -> value type code
    timestamp_column: str
    features: list[tuple[str, int, bytes]]  # (name, value type code, field hash)
    key_ttl_seconds: int | None

    @property
    def ts_field(self) -> bytes:
        return ts_field(self.name)


@dataclass(frozen=True)
class _Piece:
    """A ragged byte column as a padded matrix: row ``i`` is ``matrix[i, :lengths[i]]``.

    Runs of pieces become one Arrow binary array with a single boolean gather, which is
    what makes a whole row of numeric fields cost a handful of NumPy passes.
    """

    matrix: np.ndarray
    lengths: np.ndarray


Part: TypeAlias = _Piece | pa.Array | bytes


def redis_keys(layout: RowLayout, batch: pa.RecordBatch) -> pa.Array:
    """Entity key, serialisation version 3, followed by the project name."""
    names = sorted(layout.join_keys)
    values = [p for n in names for p in _entity_value(batch.column(n), layout.join_keys[n], n)]
    return _assemble([key_prefix(names), *values, layout.project], batch.num_rows)


def _u32(value: int) -> bytes:
    return np.uint32(value).tobytes()


def _entity_value(column: pa.Array, value_type: int, name: str) -> list[Part]:
    """``<u32 type><u32 length><bytes>`` of one join key's values."""
    if value_type in (INT64, INT32):
        width, dtype = (8, "<i8") if value_type == INT64 else (4, "<i4")
        values = _numbers(column, dtype).view(np.uint8).reshape(-1, width)
        header = _u32(value_type) + _u32(width)
        return [header, _Piece(values, np.full(len(values), width, np.int64))]
    if value_type == STRING:
        text = pc.cast(column, pa.string()).cast(pa.binary())
        lengths = _lengths(text).astype("<u4").view(np.uint8).reshape(-1, 4)
        return [_u32(STRING), _Piece(lengths, np.full(len(text), 4)), text]
    raise NotImplementedError(f"join key {name!r} of type {value_type!r} is not supported")


def timestamps_micros(batch: pa.RecordBatch, column: str) -> np.ndarray:
    """Event timestamps as UTC microseconds since the epoch (naive values are UTC)."""
    values = batch.column(column)
    if pa.types.is_timestamp(values.type) and values.type.unit != "us":
        values = pc.cast(values, pa.timestamp("us", values.type.tz), safe=False)
    return np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def timestamp_protos(micros: np.ndarray) -> list[_Piece]:
    """Serialised ``google.protobuf.Timestamp`` per value (zero fields omitted)."""
    seconds, rest = np.divmod(micros, 1_000_000)
    return [
        _varint(seconds, TIMESTAMP_SECONDS_TAG, seconds == 0),
        _varint(rest * 1000, TIMESTAMP_NANOS_TAG, rest == 0),
    ]


def value_protos(column: pa.Array, value_type: int) -> list[Part]:
    """Serialised ``feast.types.Value`` per row; null (and NaN) is the empty Value."""
    if value_type in VARINT_TAGS:
        values = _numbers(pc.fill_null(column, 0), "<i8")
        return [_varint(values, VARINT_TAGS[value_type], _nulls(column))]
    if value_type in FIXED_TAGS:
        tag, dtype = FIXED_TAGS[value_type]
        values = _numbers(pc.fill_null(column, 0.0), dtype)
        missing = _nulls(column) | np.isnan(values)
        matrix = np.empty((len(values), 1 + values.itemsize), np.uint8)
        matrix[:, 0] = tag
        matrix[:, 1:] = values.view(np.uint8).reshape(len(values), -1)
        return [_Piece(matrix, np.where(missing, 0, matrix.shape[1]))]
    if value_type == STRING:
        text = pc.fill_null(pc.cast(column, pa.string()).cast(pa.binary()), b"")
        return [_varint(_lengths(text), STRING_TAG, _nulls(column)), text]
    # Feast only for the types without a vectorised encoder (lists, bytes, ...), so the
    # scorer, which reads through this module, does not import it.
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    values = column.to_numpy(zero_copy_only=False)
    protos = python_values_to_proto_values(values, ValueType(value_type))
    return [pa.array([p.SerializeToString() for p in protos], pa.binary())]


def _numbers(column: pa.Array, dtype: str) -> np.ndarray:
    target = pa.from_numpy_dtype(np.dtype(dtype))
    return np.ascontiguousarray(
        pc.cast(column, target, safe=False).to_numpy(zero_copy_only=False), dtype
    )


def _nulls(column: pa.Array) -> np.ndarray:
    return np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)


def _lengths(values: pa.Array) -> np.ndarray:
    return np.asarray(pc.binary_length(values).to_numpy(zero_copy_only=False), np.int64)


def _varint(values: np.ndarray, tag: int, omit: np.ndarray) -> _Piece:
    """``tag`` then the protobuf varint of each int64 (two's complement); omitted rows empty."""
    rest = values.astype(np.int64).view(np.uint64).copy()
    columns = [np.full(len(rest), tag, np.uint8)]
    lengths = np.ones(len(rest), np.int64)
    while True:
        columns.append((rest & np.uint64(0x7F)).astype(np.uint8))
        rest >>= np.uint64(7)
        more = rest != 0
        if not more.any():
            break
        columns[-1] |= np.where(more, 0x80, 0).astype(np.uint8)
        lengths += more
    return _Piece(np.stack(columns, axis=1), np.where(omit, 0, lengths + 1))


def _decimal(values: np.ndarray, prefix: bytes) -> _Piece:
    """``prefix`` then the ASCII decimal digits of each non-negative integer."""
    top = int(values.max()) if len(values) else 0
    digits = np.ones(len(values), np.int64)
    for power in range(1, len(str(top))):
        digits += values >= 10**power
    matrix = np.empty((len(values), len(prefix) + len(str(top))), np.uint8)
    matrix[:, : len(prefix)] = np.frombuffer(prefix, np.uint8)
    for k in range(len(str(top))):
        scale = np.power(10, np.maximum(digits - 1 - k, 0))
        matrix[:, len(prefix) + k] = 48 + (values // scale) % 10
    return _Piece(matrix, digits + len(prefix))


def _bulk(*parts: _Piece | pa.Array) -> list[Part]:
    """RESP bulk-string pieces: ``$<length>\r\n<bytes>\r\n``."""
    length = sum(p.lengths if isinstance(p, _Piece) else _lengths(p) for p in parts)
    return [_decimal(np.asarray(length, np.int64), b"$"), b"\r\n", *parts, b"\r\n"]


def _const_bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _assemble(parts: list[Part], rows: int) -> pa.Array:
    """One binary value per row: the row's bytes of every part, in order."""
    arrays: list[pa.Array] = []
    run: list[_Piece] = []
    for part in _merge_constants(parts):
        if isinstance(part, bytes):
            constant = np.frombuffer(part, np.uint8)
            part = _Piece(np.broadcast_to(constant, (rows, len(part))), np.full(rows, len(part)))
        if isinstance(part, _Piece):
            run.append(part)
            continue
        if run:
            arrays.append(_gather(run))
            run = []
        arrays.append(part)
    if run:
        arrays.append(_gather(run))
    return arrays[0] if len(arrays) == 1 else _join(*arrays)


def _merge_constants(parts: list[Part]) -> list[Part]:
    merged: list[Part] = []
    for part in parts:
        last = merged[-1] if merged else None
        if isinstance(part, bytes) and isinstance(last, bytes):
            merged[-1] = last + part
        else:
            merged.append(part)
    return merged


def _gather(pieces: list[_Piece]) -> pa.Array:
    rows = len(pieces[0].lengths)
    width = sum(p.matrix.shape[1] for p in pieces)
    matrix = np.empty((rows, width), np.uint8)
    mask = np.empty((rows, width), bool)
    column = 0
    for piece in pieces:
        end = column + piece.matrix.shape[1]
        matrix[:, column:end] = piece.matrix
        np.less(np.arange(end - column), piece.lengths[:, None], out=mask[:, column:end])
        column = end
    offsets = np.zeros(rows + 1, np.int32)
    np.cumsum(sum(p.lengths for p in pieces), out=offsets[1:])
    data = matrix[mask]
    return pa.Array.from_buffers(
        pa.binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _join(*arrays: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(*arrays, EMPTY)


def _as_piece(values: pa.Array) -> _Piece | pa.Array:
    """A fixed-width binary array as a piece (no copy); anything else unchanged."""
    lengths = _lengths(values)
    if len(values) == 0 or values.null_count or (lengths != lengths[0]).any():
        return values
    offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset :]
    data = np.frombuffer(values.buffers()[2], np.uint8)[offsets[0] : offsets[len(values)]]
    return _Piece(data.reshape(len(values), -1), lengths)


def hset_commands(
    layout: RowLayout, keys: pa.Array, batch: pa.RecordBatch, micros: np.ndarray
) -> pa.Array:
    """One ``HSET key _ts:<view> <ts> <field> <value> ...`` per row, Feast's field order."""
    key = _as_piece(keys)
    parts: list[Part] = [
        b"*%d\r\n%s" % (2 + 2 * (1 + len(layout.features)), _const_bulk(b"HSET")),
        *_bulk(key),
        _const_bulk(layout.ts_field),
        *_bulk(*timestamp_protos(micros)),
    ]
    for name, value_type, field in layout.features:
        parts += [_const_bulk(field), *_bulk(*value_protos(batch.column(name), value_type))]
    if layout.key_ttl_seconds:
        parts += [b"*3\r\n" + _const_bulk(b"EXPIRE"), *_bulk(key)]
        parts.append(_const_bulk(str(layout.key_ttl_seconds).encode()))
    return _assemble(parts, batch.num_rows)


def hget_commands(keys: pa.Array, field: bytes) -> pa.Array:
    parts = [b"*3\r\n" + _const_bulk(b"HGET"), *_bulk(_as_piece(keys)), _const_bulk(field)]
    return _assemble(parts, len(keys))


def command_bytes(commands: pa.Array) -> memoryview:
    offsets = np.frombuffer(commands.buffers()[1], np.int32)
    start, stop = int(offsets[commands.offset]), int(offsets[commands.offset + len(commands)])
    return memoryview(commands.buffers()[2])[start:stop]


# Decoding, vectorised over a read's replies.


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
        length, at = _read_varint(value, 1)
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
    return timestamp_nanos(value) // 1000


def timestamp_nanos(value: bytes) -> int:
    """One serialised ``Timestamp`` as nanoseconds since the epoch (empty: 0)."""
    seconds = nanos = at = 0
    while at < len(value):
        tag = value[at]
        number, at = _read_varint(value, at + 1)
        if tag == TIMESTAMP_SECONDS_TAG:
            seconds = number
        elif tag == TIMESTAMP_NANOS_TAG:
            nanos = number
    return seconds * 1_000_000_000 + nanos


def _read_varint(value: bytes, at: int) -> tuple[int, int]:
    number = shift = 0
    while True:
        byte = value[at]
        number |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return number, at
        shift += 7


def stored_nanos(replies: Sequence[bytes | None]) -> np.ndarray:
    """Stored ``_ts`` replies as nanoseconds since the epoch; 0 where absent or empty."""
    cache: dict[bytes, int] = {}
    out = np.zeros(len(replies), np.int64)
    for i, raw in enumerate(replies):
        if raw:
            if raw not in cache:
                cache[raw] = timestamp_nanos(raw)
            out[i] = cache[raw]
    return out
