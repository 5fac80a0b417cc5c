"""The SparkSession every adstack job uses: UTC, microsecond Parquet, dynamic overwrite.

Only entry points call :func:`spark_session`. Run under ``spark-submit --master
<cluster>`` the job uses that master and its resources; run from Python it starts
Spark in ``local[*]`` mode with settings sized for one machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from core import units

# Settings the jobs' correctness depends on, whatever the cluster defaults are: day
# boundaries in UTC, Parquet timestamps in microseconds (Spark writes INT96 by default,
# and the DuckDB offline store rejects nanoseconds with a time zone), and overwrite that
# replaces only the partitions a run writes.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
}

# When Python starts the JVM itself (no spark-submit): one machine, two cores.
LAUNCH_CONF = {
    "spark.driver.memory": os.environ.get("ADSTACK_SPARK_DRIVER_MEMORY", "4g"),
    "spark.ui.enabled": "false",
    "spark.driver.extraJavaOptions": (
        f"-Dlog4j2.configurationFile={Path(__file__).with_name('log4j2.properties')}"
    ),
    # Stage bars on stderr would tear the callers' own progress display.
    "spark.ui.showConsoleProgress": "false",
}
LOCAL_SHUFFLE_PARTITIONS = "8"


def spark_session(app_name: str, master: str | None = None) -> SparkSession:
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit
        builder = builder.master(master or "local[*]")
        for key, value in LAUNCH_CONF.items():
            builder = builder.config(key, value)
    for key, value in REQUIRED_CONF.items():
        builder = builder.config(key, value)
    # The jobs use no metastore tables; keep Spark from creating spark-warehouse/ in the
    # working directory.
    builder = builder.config(
        "spark.sql.warehouse.dir", os.path.join(tempfile.gettempdir(), "adstack-spark-warehouse")
    )
    spark = builder.getOrCreate()
    for key, value in REQUIRED_CONF.items():
        spark.conf.set(key, value)
    if spark.sparkContext.master.startswith("local"):
        spark.conf.set("spark.sql.shuffle.partitions", LOCAL_SHUFFLE_PARTITIONS)
    spark.sparkContext.setLogLevel("WARN")
    return spark


@contextmanager
def spark_job(app_name: str, master: str | None = None) -> Iterator[SparkSession]:
    """The active session if there is one (left running), else a new one stopped on exit."""
    active = SparkSession.getActiveSession()
    spark = spark_session(app_name, master) if active is None else active
    try:
        yield spark
    finally:
        if active is None:
            spark.stop()


def money_micros(amount: Column) -> Column:
    """Amounts of the currency as whole micros, rounded half to even like
    :func:`core.units.money_micros` (``bround``; ``round`` would round half up)."""
    return F.bround(amount * units.MONEY_MICROS).cast("long")
