"""Materialisation of the batch feature views into Redis, with Feast's semantics, fast.

Feast's local engine converts every row to ``EntityKey`` and ``Value`` protobuf objects
in Python and hands redis-py one ``HSET`` per row; here that runs at about 9k rows/s.
This module keeps everything Feast decides and replaces only that per-row Python work:

* **What is read** is Feast's: the view's offline store is asked with the same call the
  local engine makes (``pull_all_from_table_or_query``, or ``pull_latest_...`` when
  ``materialization.pull_latest_features`` is set), so ``start <= event_timestamp <= end``
  and the column mapping are Feast's own.
* **Which row wins** is Feast's: the newest row per entity key (DuckDB's window function
  over the Arrow result, ordered by event then created timestamp, descending).
* **What Redis holds** is Feast's layout, byte for byte, built column-wise with NumPy and
  Arrow instead of per-row protobuf objects: key = entity key serialised with version 3
  followed by the project; field per feature = 4-byte little-endian unsigned
  ``mmh3("<view>:<feature>")``; field ``_ts:<view>`` = a serialised protobuf
  ``Timestamp``; values = serialised ``feast.types.Value`` (null and NaN are the empty
  ``Value``, as Feast writes them). Types without a vectorised encoder go through Feast's
  own ``python_values_to_proto_values``.
* **Dedup against Redis** is Feast's: the stored ``_ts:<view>`` of every key is read
  before the batch is written, and a row is skipped when a positive stored timestamp is
  at or after its own (Feast's rule, including its treatment of pre-1970 stamps).
* **What is recorded** is Feast's: the view goes through the same lifecycle states and
  ``registry.apply_materialization(view, project, start, end)`` records the interval, so
  ``feast materialize-incremental`` continues from it and vice versa.

``materialize_incremental`` starts each view where its last recorded interval ended; the
first time it starts at ``now - ttl``, or ``now - 52 weeks`` for a view whose ttl is 0
(Feast 0.67's rule: relative to the wall clock, not to ``end``). ``materialize`` takes
the interval explicitly, like ``feast materialize START END``. Both return the rows
written per view: rows that passed both dedups and were sent as ``HSET``.

The commands are serialised as one RESP buffer per batch and sent on a redis-py
connection (so authentication, database selection and TLS come from Feast's connection
string); replies are counted and checked for errors without building Python objects.
Only a single Redis (``redis_type: redis``) is supported; cluster and sentinel raise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView
from feast.data_source import DataSource
from feast.feature_view import FeatureViewState
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    RedisType,
    _versioned_fv_name,
)
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.type_map import python_values_to_proto_values
from feast.utils import _get_column_names, _utc_now, make_tzaware
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

BATCH_ROWS = 50_000
UNSET_TTL_LOOKBACK = timedelta(weeks=52)
EMPTY = pa.scalar(b"", pa.binary())
NULL_OR_BULK = (ord("$"), ord("_"))  # RESP2 bulk or null bulk, RESP3 null

# Value proto tags (field number << 3 | wire type) of the vectorised scalar types.
VARINT_TAGS = {ValueType.INT64: 0x20, ValueType.INT32: 0x18}
FIXED_TAGS = {ValueType.DOUBLE: (0x29, "<f8"), ValueType.FLOAT: (0x35, "<f4")}
STRING_TAG = 0x12
TIMESTAMP_SECONDS_TAG, TIMESTAMP_NANOS_TAG = 0x08, 0x10

if sys.byteorder != "little":
    raise ImportError("pipelines.materialize assumes a little-endian machine")


def materialize_incremental(
    repo_path: Path, end: datetime, views: list[str] | None = None
) -> dict[str, int]:
    """``feast materialize-incremental END``: each view from its last recorded end."""
    store = FeatureStore(repo_path=str(repo_path))
    end = make_tzaware(end)
    intervals = [(view, incremental_start(view), end) for view in _views(store, views)]
    return _run(store, intervals)


def materialize(
    repo_path: Path, start: datetime, end: datetime, views: list[str] | None = None
) -> dict[str, int]:
    """``feast materialize START END``: every view over the same interval."""
    start, end = make_tzaware(start), make_tzaware(end)
    if start > end:
        raise ValueError(f"The given start_date {start} is greater than the given end_date {end}.")
    store = FeatureStore(repo_path=str(repo_path))
    return _run(store, [(view, start, end) for view in _views(store, views)])


def incremental_start(view: FeatureView) -> datetime:
    """Feast 0.67's start: the last recorded end, else ``now - ttl`` (ttl 0: 52 weeks)."""
    if view.most_recent_end_time is not None:
        return make_tzaware(view.most_recent_end_time)
    if view.ttl is None:
        raise ValueError(
            f"No start time found for feature view {view.name}: it has no ttl and was "
            "never materialised; run materialize(start, end) once."
        )
    lookback = view.ttl if view.ttl.total_seconds() > 0 else UNSET_TTL_LOOKBACK
    return make_tzaware(_utc_now() - lookback)


def _views(store: FeatureStore, names: list[str] | None) -> list[FeatureView]:
    selected = store._get_feature_views_to_materialize(names)
    odfvs = [v.name for v in selected if isinstance(v, OnDemandFeatureView)]
    if odfvs:
        raise NotImplementedError(f"on-demand views are not materialised here: {odfvs}")
    return [v for v in selected if isinstance(v, FeatureView)]


def _run(store: FeatureStore, intervals: list[tuple[FeatureView, datetime, datetime]]) -> dict:
    written: dict[str, int] = {}
    with _Writer.connect(store) as writer:
        for view, start, end in intervals:
            written[view.name] = _materialize_view(store, writer, view, start, end)
    if written:
        store._precompute_affected_services(list(written))
    return written


def _materialize_view(
    store: FeatureStore, writer: _Writer, view: FeatureView, start: datetime, end: datetime
) -> int:
    """Load one view and record its interval, with Feast's lifecycle state transitions."""
    previous = _enter_materializing(store, view)
    try:
        rows = 0
        layout = _ViewLayout.of(store, view)
        for batch in _latest_rows(store, view, start, end):
            rows += writer.write(layout, batch)
        writer.flush()
    except Exception:
        if previous not in (None, FeatureViewState.STATE_UNSPECIFIED):
            view.state = previous
            store.registry.apply_feature_view(view, store.project, commit=True)
        raise
    store.registry.apply_materialization(view, store.project, start, end)
    return rows


def _enter_materializing(store: FeatureStore, view: FeatureView) -> FeatureViewState | None:
    previous = getattr(view, "state", None)
    if previous == FeatureViewState.MATERIALIZING:
        return FeatureViewState.GENERATED
    if previous not in (None, FeatureViewState.STATE_UNSPECIFIED):
        if not view.state.can_transition_to(FeatureViewState.MATERIALIZING):
            raise ValueError(
                f"FeatureView {view.name} cannot transition from {view.state.name} "
                "to MATERIALIZING."
            )
        view.state = FeatureViewState.MATERIALIZING
        store.registry.apply_feature_view(view, store.project, commit=True)
    return previous


# Reading: Feast's offline store, newest row per entity key.


def _latest_rows(
    store: FeatureStore, view: FeatureView, start: datetime, end: datetime
) -> Iterator[pa.RecordBatch]:
    """Rows with ``start <= ts <= end`` from Feast's offline store, newest per entity."""
    table = _pull(store, view, start, end)
    source = _source(view)
    order = [source.timestamp_field]
    if source.created_timestamp_column and source.created_timestamp_column in table.column_names:
        order.append(source.created_timestamp_column)
    keys = [column.name for column in view.entity_columns]
    yield from newest_per_key(table, keys, order).to_batches(max_chunksize=BATCH_ROWS)


def newest_per_key(table: pa.Table, keys: list[str], order: list[str]) -> pa.Table:
    """One row per key: the first by ``order`` descending (Feast's local dedup node)."""
    if table.num_rows < 2:
        return table
    sort_keys = [(k, "ascending") for k in keys] + [(c, "descending") for c in order]
    indices = pc.sort_indices(table.select(keys + order), sort_keys=sort_keys)
    ranked = table.select(keys).take(indices)
    same = np.ones(table.num_rows - 1, bool)
    for key in keys:
        column = ranked.column(key)
        before, after = column.slice(0, len(column) - 1), column.slice(1)
        equal = pc.fill_null(pc.equal(before, after), False)
        both_null = pc.and_(pc.is_null(before), pc.is_null(after))
        same &= pc.or_(equal, both_null).to_numpy(zero_copy_only=False)
    first = np.concatenate([[True], ~same])
    return table.take(indices.filter(pa.array(first)))


def _pull(store: FeatureStore, view: FeatureView, start: datetime, end: datetime) -> pa.Table:
    """The local engine's source read: same offline-store call, same column renames."""
    entities = [store.registry.get_entity(name, store.project) for name in view.entities]
    join_keys, features, timestamp, created = _get_column_names(view, entities)
    offline_store = store._get_provider().offline_store
    pull = (
        offline_store.pull_latest_from_table_or_query
        if store.config.materialization_config.pull_latest_features
        else offline_store.pull_all_from_table_or_query
    )
    table = pull(
        config=store.config,
        data_source=_source(view),
        join_key_columns=join_keys,
        feature_name_columns=features,
        timestamp_field=timestamp,
        created_timestamp_column=created,
        start_date=start,
        end_date=end,
    ).to_arrow()
    mapping = _source(view).field_mapping or {}
    return table.rename_columns([mapping.get(name, name) for name in table.column_names])


def _source(view: FeatureView) -> DataSource:
    if view.batch_source is None:
        raise ValueError(f"feature view {view.name} has no batch source to materialise from")
    return view.batch_source


# Serialisation: Feast's Redis layout, column-wise.


@dataclass(frozen=True)
class _ViewLayout:
    """Everything about a view's Redis layout that does not depend on the rows."""

    name: str
    project: bytes
    join_keys: dict[str, ValueType]
    timestamp_column: str
    features: list[tuple[str, ValueType, bytes]]
    key_ttl_seconds: int | None

    @property
    def ts_field(self) -> bytes:
        return f"_ts:{self.name}".encode()

    @classmethod
    def of(cls, store: FeatureStore, view: FeatureView) -> _ViewLayout:
        return cls.of_config(store.config, view)

    @classmethod
    def of_config(cls, config: RepoConfig, view: FeatureView) -> _ViewLayout:
        name = _versioned_fv_name(view, config)
        online = config.online_store
        return cls(
            name=name,
            project=config.project.encode(),
            join_keys={c.name: c.dtype.to_value_type() for c in view.entity_columns},
            timestamp_column=_source(view).timestamp_field,
            features=[
                (f.name, f.dtype.to_value_type(), _mmh3(f"{name}:{f.name}")) for f in view.features
            ],
            key_ttl_seconds=online.key_ttl_seconds,
        )


@dataclass(frozen=True)
class _Piece:
    """A ragged byte column as a padded matrix: row ``i`` is ``matrix[i, :lengths[i]]``.

    Runs of pieces become one Arrow binary array with a single boolean gather, which is
    what makes a whole row of numeric fields cost a handful of NumPy passes.
    """

    matrix: np.ndarray
    lengths: np.ndarray


Part: TypeAlias = _Piece | pa.Array | bytes


def redis_keys(layout: _ViewLayout, batch: pa.RecordBatch) -> pa.Array:
    """Entity key, serialisation version 3, followed by the project name."""
    names = sorted(layout.join_keys)
    header = [_u32(len(names))]
    for name in names:
        encoded = name.encode()
        header += [_u32(ValueType.STRING.value), _u32(len(encoded)), encoded]
    values = [p for n in names for p in _entity_value(batch.column(n), layout.join_keys[n], n)]
    return _assemble([b"".join(header), *values, layout.project], batch.num_rows)


def _u32(value: int) -> bytes:
    return np.uint32(value).tobytes()


def _entity_value(column: pa.Array, value_type: ValueType, name: str) -> list[Part]:
    """``<u32 type><u32 length><bytes>`` of one join key's values."""
    if value_type in (ValueType.INT64, ValueType.INT32):
        width, dtype = (8, "<i8") if value_type == ValueType.INT64 else (4, "<i4")
        values = _numbers(column, dtype).view(np.uint8).reshape(-1, width)
        header = _u32(value_type.value) + _u32(width)
        return [header, _Piece(values, np.full(len(values), width, np.int64))]
    if value_type == ValueType.STRING:
        text = pc.cast(column, pa.string()).cast(pa.binary())
        lengths = _lengths(text).astype("<u4").view(np.uint8).reshape(-1, 4)
        return [_u32(ValueType.STRING.value), _Piece(lengths, np.full(len(text), 4)), text]
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


def value_protos(column: pa.Array, value_type: ValueType) -> list[Part]:
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
    if value_type == ValueType.STRING:
        text = pc.fill_null(pc.cast(column, pa.string()).cast(pa.binary()), b"")
        return [_varint(_lengths(text), STRING_TAG, _nulls(column)), text]
    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
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
    layout: _ViewLayout, keys: pa.Array, batch: pa.RecordBatch, micros: np.ndarray
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


def _payload(commands: pa.Array) -> memoryview:
    offsets = np.frombuffer(commands.buffers()[1], np.int32)
    start, stop = int(offsets[commands.offset]), int(offsets[commands.offset + len(commands)])
    return memoryview(commands.buffers()[2])[start:stop]


# Writing: Feast's dedup against the stored timestamps, pipelined on one connection.


def stored_nanos(replies: Sequence[bytes | None]) -> np.ndarray:
    """Stored ``_ts`` as nanoseconds since the epoch; 0 where absent or empty (Feast)."""
    cache: dict[bytes, int] = {}
    out = np.zeros(len(replies), np.int64)
    for i, raw in enumerate(replies):
        if raw:
            if raw not in cache:
                stamp = Timestamp()
                stamp.ParseFromString(raw)
                cache[raw] = stamp.seconds * 1_000_000_000 + stamp.nanos
            out[i] = cache[raw]
    return out


class _Writer:
    """Raw RESP on one redis-py connection; a sender thread keeps Redis busy.

    Batch ``k + 1`` is serialised while the sender thread streams batch ``k`` and Redis
    applies it. Its stored timestamps are read only after batch ``k``'s writes (replies
    come in order), which is harmless: a view's batches never share an entity key.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._connection = client.connection_pool.get_connection()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resp-sender")
        self._sent: list[Future[None]] = []
        self._buffer = bytearray()
        self._pending_lines = 0

    @classmethod
    def connect(cls, store: FeatureStore) -> _Writer:
        return cls.connect_config(store.config)

    @classmethod
    def connect_config(cls, config: RepoConfig) -> _Writer:
        online = config.online_store
        if not isinstance(online, RedisOnlineStoreConfig) or online.redis_type != RedisType.redis:
            raise NotImplementedError("fast materialisation needs a single Redis online store")
        return cls(RedisOnlineStore()._get_client(online))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sender.shutdown(wait=True)
        if exc[0] is None:
            self._client.connection_pool.release(self._connection)
        else:
            self._connection.disconnect()
        self._client.close()

    def write(self, layout: _ViewLayout, batch: pa.RecordBatch) -> int:
        """Write the rows newer than what Redis holds; returns how many were written."""
        keys = redis_keys(layout, batch)
        micros = timestamps_micros(batch, layout.timestamp_column)
        commands = hset_commands(layout, keys, batch, micros)
        self._send(hget_commands(keys, layout.ts_field))
        self.flush()
        stored = stored_nanos(self._read_bulk(len(keys)))
        fresh = ~((stored > 0) & (micros * 1000 <= stored))
        if not fresh.all():
            commands = commands.filter(pa.array(fresh))
        if len(commands):
            self._send(commands)
            self._pending_lines += len(commands) * (2 if layout.key_ttl_seconds else 1)
        return len(commands)

    def flush(self) -> None:
        """Consume the replies of every write sent so far; raise on a Redis error."""
        self._raise_send_errors()
        lines, self._pending_lines = self._pending_lines, 0
        while lines:
            newlines = np.flatnonzero(np.frombuffer(self._buffer, np.uint8) == 10)
            if len(newlines) < lines:
                self._receive()
                continue
            starts = np.concatenate([[0], newlines[: lines - 1] + 1])
            errors = np.flatnonzero(np.frombuffer(self._buffer, np.uint8)[starts] == ord("-"))
            if len(errors):
                start = int(starts[errors[0]])
                message = bytes(self._buffer[start : self._buffer.index(b"\n", start)])
                raise RuntimeError(f"Redis rejected a write: {message.decode(errors='replace')}")
            del self._buffer[: int(newlines[lines - 1]) + 1]
            lines = 0

    def _send(self, commands: pa.Array) -> None:
        self._sent.append(self._sender.submit(self._send_now, commands))

    def _send_now(self, commands: pa.Array) -> None:
        self._connection.send_packed_command([_payload(commands)], check_health=False)

    def _raise_send_errors(self) -> None:
        done = [future for future in self._sent if future.done()]
        self._sent = [future for future in self._sent if not future.done()]
        for future in done:
            future.result()

    def _receive(self) -> None:
        self._raise_send_errors()
        chunk = self._connection._sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("Redis closed the connection during materialisation")
        self._buffer += chunk

    def _read_bulk(self, count: int) -> list[bytes | None]:
        """Parse ``count`` bulk-string replies (``$-1`` and RESP3's ``_`` are None)."""
        out: list[bytes | None] = []
        position = 0
        buffer = self._buffer
        while len(out) < count:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                self._receive()
                buffer = self._buffer
                continue
            kind = buffer[position]
            if kind not in NULL_OR_BULK:
                raise RuntimeError(f"unexpected Redis reply {bytes(buffer[position:end])!r}")
            length = int(buffer[position + 1 : end]) if kind == ord("$") else -1
            if length < 0:
                out.append(None)
                position = end + 2
                continue
            if len(buffer) < end + 4 + length:
                self._receive()
                buffer = self._buffer
                continue
            out.append(bytes(buffer[end + 2 : end + 2 + length]))
            position = end + 4 + length
        del self._buffer[:position]
        return out
