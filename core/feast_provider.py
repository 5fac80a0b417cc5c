"""Feast's local provider, with pushes that scale: columnar Redis writes, appending logs.

``feature_store.yaml`` names this class as its ``provider``; everything not overridden
is Feast's ``PassthroughProvider`` (what ``provider: local`` is). ``store.push(...)``
and ``store.write_to_online_store/offline_store`` keep Feast's API and checks; only two
steps behind them change:

* **Online** (``ingest_df``): Feast converts every row to protobuf objects in Python
  (about 9k rows/s here). The rows go instead through the column-wise writer of
  :mod:`core.feast_redis`, which produces Feast's Redis layout byte for byte and
  applies Feast's rule for stale rows (a row is skipped when the stored timestamp is at
  or after its own; within one call the last fresh row of a key wins, as in Feast).
  Used when the online store is a single Redis without ``skip_dedup``; otherwise Feast's.
* **Offline** (``ingest_df_to_offline_store``): Feast's DuckDB store appends to a
  Parquet source by reading the whole file and writing it back, so every push costs the
  size of the history. A source whose path is a partitioned glob
  (``<dir>/*/*.parquet``, as the repo declares every table) gets one new file per push
  and UTC date instead, ``<dir>/date=YYYY-MM-DD/<first micros>-<random>.parquet``,
  written to a temporary name and renamed, so readers never see half a file. The cost
  of a push is the size of the push. ``feast apply`` gives each empty push log a
  zero-row file with its columns, so reads work before the first push.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView, FileSource, PushSource
from feast.data_source import DataSource
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
from feast.infra.passthrough_provider import PassthroughProvider
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.type_map import feast_value_type_to_pa

from core.feast_redis import BATCH_ROWS, RedisWriter, row_layout
from core.units import MICROS_PER_DAY
from feature_repo import contract

PARTITIONED_SUFFIX = "/*/*.parquet"
# A zero-row partition: Spark skips folders starting with "_", so it has to look real.
SCHEMA_FOLDER = contract.SCHEMA_FOLDER


def partitioned_directory(source: DataSource | None) -> Path | None:
    """The directory of a ``<dir>/*/*.parquet`` file source; None for any other source."""
    if not isinstance(source, FileSource) or not source.path.endswith(PARTITIONED_SUFFIX):
        return None
    return Path(source.path[: -len(PARTITIONED_SUFFIX)])


def append_partitioned(table: pa.Table, directory: Path, timestamp_field: str) -> list[Path]:
    """Write ``table`` as new files under ``directory/date=YYYY-MM-DD/``; return them."""
    if table.num_rows == 0:
        return []
    stamps = table.column(timestamp_field)
    if not pa.types.is_timestamp(stamps.type):
        raise ValueError(f"{timestamp_field} must be a timestamp column, got {stamps.type}")
    table = table.set_column(
        table.schema.get_field_index(timestamp_field),
        timestamp_field,
        stamps.cast(pa.timestamp("us", tz="UTC")),
    )
    micros = table.column(timestamp_field).cast(pa.int64()).to_numpy(zero_copy_only=False)
    days = micros // MICROS_PER_DAY
    written = []
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        part = table.take(pa.array(rows))
        folder = directory / f"date={np.datetime64(int(day), 'D')}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{int(micros[rows].min())}-{uuid.uuid4().hex[:12]}.parquet"
        temporary = path.with_suffix(".parquet.tmp")
        pq.write_table(part, temporary, coerce_timestamps="us")
        temporary.replace(path)
        written.append(path)
    return written


def _fast_online(config: RepoConfig, view: object) -> bool:
    online = config.online_store
    return (
        isinstance(view, FeatureView)
        and not isinstance(view, OnDemandFeatureView)
        and isinstance(online, RedisOnlineStoreConfig)
        and online.redis_type == RedisType.redis
        and not online.skip_dedup
    )


class AdstackProvider(PassthroughProvider):
    def __init__(self, config: RepoConfig) -> None:
        super().__init__(config)
        self._columns: dict[Path, list[tuple[str, str]]] = {}

    def ingest_df(self, feature_view, df: pd.DataFrame, field_mapping=None) -> None:
        source = getattr(feature_view, "batch_source", None)
        if (
            not _fast_online(self.repo_config, feature_view)
            or field_mapping
            or (source is not None and source.field_mapping)
        ):
            super().ingest_df(feature_view, df, field_mapping)
            return
        table = pa.Table.from_pandas(df, preserve_index=False)
        layout = row_layout(self.repo_config, feature_view)
        with RedisWriter.connect(self.repo_config) as writer:
            for batch in table.to_batches(max_chunksize=BATCH_ROWS):
                writer.write(layout, batch)
            writer.flush()

    def ingest_df_to_offline_store(self, feature_view: FeatureView, table: pa.Table) -> None:
        source = feature_view.batch_source
        directory = partitioned_directory(source)
        if directory is None or source.field_mapping:
            super().ingest_df_to_offline_store(feature_view, table)
            return
        append_partitioned(table, directory, source.timestamp_field)

    def update_infra(
        self,
        project,
        tables_to_delete,
        tables_to_keep,
        entities_to_delete,
        entities_to_keep,
        partial,
    ) -> None:
        super().update_infra(
            project, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial
        )
        for view in tables_to_keep:
            if isinstance(getattr(view, "stream_source", None), PushSource):
                seed_push_log(view)

    def get_table_column_names_and_types_from_data_source(
        self, config: RepoConfig, data_source: DataSource
    ) -> Iterable[tuple[str, str]]:
        """Columns of a partitioned source, from its newest file.

        Feast reads a file source's schema with ``ParquetDataset(path)``, which does not
        expand globs.
        """
        directory = partitioned_directory(data_source)
        if directory is None:
            return super().get_table_column_names_and_types_from_data_source(config, data_source)
        # Feast asks on every push: once per log, not a listing of its (growing) files.
        columns = self._columns.get(directory)
        if columns is None:
            seed = directory / SCHEMA_FOLDER / "schema.parquet"
            first = seed if seed.exists() else next(directory.glob("*/*.parquet"), None)
            if first is None:
                raise FileNotFoundError(
                    f"{data_source.name} has no Parquet file under {directory}; run `feast apply`"
                )
            columns = [(field.name, str(field.type)) for field in pq.read_schema(first)]
            self._columns[directory] = columns
        return columns


def seed_push_log(view: FeatureView) -> Path | None:
    """Give an empty push log one empty file with the view's columns.

    The DuckDB offline store cannot read a glob that matches nothing, so without it a
    training set or ``feast materialize`` fails until the first push, and the Spark
    offline store cannot infer a schema from an empty folder (``feast apply`` with the
    Spark profile fails). The file is a zero-row ``date=1970-01-01`` partition, which
    both engines read as no rows.
    """
    directory = partitioned_directory(view.batch_source)
    if directory is None or any(directory.glob("*/*.parquet")):
        return None
    fields = [
        *(
            pa.field(c.name, feast_value_type_to_pa(c.dtype.to_value_type()))
            for c in view.entity_columns
        ),
        *(pa.field(f.name, feast_value_type_to_pa(f.dtype.to_value_type())) for f in view.features),
        pa.field(view.batch_source.timestamp_field, pa.timestamp("us", tz="UTC")),
    ]
    path = directory / SCHEMA_FOLDER / "schema.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.schema(fields).empty_table(), path)
    return path
