"""Batch sources over the Spark job's feature tables, and the push sources.

Each feature table is Parquet partitioned by ``date=YYYY-MM-DD`` (the window end's UTC
date) under ``<data root>/features/<view>``. The same definitions serve two offline
stores: DuckDB (the default, ``feature_store.yaml``) reads them as file sources; the
Spark offline store (``feature_store.spark.yaml``) needs Spark sources, selected with
``ADSTACK_OFFLINE_STORE=spark``.
"""

import os
from pathlib import Path

from contract import PUSH_SOURCES, VIEWS, data_root, push_log_name, table_dir
from feast import FileSource, PushSource
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

DATA_ROOT = data_root(Path(__file__).resolve().parent)
OFFLINE_STORE = os.environ.get("ADSTACK_OFFLINE_STORE", "duckdb")
if OFFLINE_STORE not in ("duckdb", "spark"):
    raise ValueError(f"ADSTACK_OFFLINE_STORE must be duckdb or spark, not {OFFLINE_STORE!r}")


def table_source(name: str, description: str) -> DataSource:
    directory = table_dir(DATA_ROOT, name)
    if OFFLINE_STORE == "spark":
        return SparkSource(
            name=name,
            path=str(directory),
            file_format="parquet",
            timestamp_field="event_timestamp",
            description=description,
        )
    return FileSource(
        name=name,
        path=f"{directory}/*/*.parquet",
        timestamp_field="event_timestamp",
        description=description,
    )


BATCH_SOURCES = {name: table_source(name, spec.description) for name, spec in VIEWS.items()}

# The stream worker pushes here. With PushMode.ONLINE_AND_OFFLINE the rows are also
# appended to the source's log table (one new Parquet file per push and date, see
# core.feast_provider), so point-in-time training sets see the values serving saw.
PUSH = {
    name: PushSource(
        name=name,
        batch_source=table_source(push_log_name(name), f"Offline log of {name}."),
        description=spec.description,
    )
    for name, spec in PUSH_SOURCES.items()
}
