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

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView
from feast.data_source import DataSource
from feast.feature_view import FeatureViewState
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.utils import _get_column_names, _utc_now, make_tzaware

from core.feast_redis import BATCH_ROWS, RedisWriter, row_layout

UNSET_TTL_LOOKBACK = timedelta(weeks=52)


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
    with RedisWriter.connect(store.config) as writer:
        for view, start, end in intervals:
            written[view.name] = _materialize_view(store, writer, view, start, end)
    if written:
        store._precompute_affected_services(list(written))
    return written


def _materialize_view(
    store: FeatureStore, writer: RedisWriter, view: FeatureView, start: datetime, end: datetime
) -> int:
    """Load one view and record its interval, with Feast's lifecycle state transitions."""
    previous = _enter_materializing(store, view)
    try:
        rows = 0
        layout = row_layout(store.config, view)
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
