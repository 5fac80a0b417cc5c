"""The Spark batch job killed while it writes, then rerun, leaves exactly what an
uninterrupted run leaves.

The job runs as users run it, ``spark-submit pipelines/batch_features.py --start ...
--end ...`` with ``ADSTACK_DATA`` naming the data root. It writes one table after the
other, each through dynamic partition overwrite: task files go under
``<table>/.spark-staging-<job>/`` and the partitions are moved into place at the end.
Its whole process group (the JVM and the Python driver) is SIGKILLed as soon as the
second table, ``ad_daily``, has a file in staging: ``user_daily`` is committed,
``ad_daily`` is half written and the other tables are missing. The job is then
run to completion with the other command users run, ``adstack batch`` (so the two
entry points are held to the same tables). Every feature table must then equal, row
for row and column for column, the tables of an uninterrupted run over a copy of the
same events, with the same ``date=`` partitions, and readers must see nothing of the
killed run (Spark leaves a killed job's staging directory in place): pyarrow reading a
table's folder, and DuckDB reading the glob the Feast sources use.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds

from feature_repo import contract
from pipelines import batch_features
from pipelines.simulator import SimulationConfig, write_simulation

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")
FIRST_END, LAST_END = date(2026, 1, 6), date(2026, 1, 9)
CONFIG = SimulationConfig(days=4, users=400, ads=80, impressions_per_day=4_000, seed=11)
STAGING = ".spark-staging-*"


def job_command() -> list[str]:
    return [
        str(SPARK_SUBMIT),
        "pipelines/batch_features.py",
        "--start",
        FIRST_END.isoformat(),
        "--end",
        LAST_END.isoformat(),
    ]


def rerun_command() -> list[str]:
    return [
        str(Path(sys.executable).with_name("adstack")),
        "batch",
        "--start",
        FIRST_END.isoformat(),
        "--end",
        LAST_END.isoformat(),
    ]


def job_env(data_root: Path, scratch: Path) -> dict[str, str]:
    """The user's environment: this venv's Python for the driver, the data root, and
    Spark's scratch space kept inside the test's folder (a killed JVM leaves it)."""
    return {
        **os.environ,
        "ADSTACK_DATA": str(data_root),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_DIRS": str(scratch),
    }


@dataclass(frozen=True)
class Written:
    """What a data root's feature folder holds: committed partitions per table and
    Parquet files under staging directories per table."""

    committed: dict[str, list[str]]
    staged_files: dict[str, int]

    @classmethod
    def of(cls, data_root: Path) -> Written:
        features = data_root / contract.FEATURES_DIR
        tables = sorted(p for p in features.iterdir() if p.is_dir()) if features.exists() else []
        return cls(
            {t.name: found for t in tables if (found := partitions(t))},
            {t.name: staged_files(t) for t in tables if any(t.glob(STAGING))},
        )


def staged_files(table: Path) -> int:
    return sum(1 for staging in table.glob(STAGING) for _ in staging.rglob("*.parquet"))


def partitions(table: Path) -> list[str]:
    return sorted(p.name for p in table.glob("date=*") if p.is_dir())


def kill_once_staged(job: subprocess.Popen, table: Path) -> None:
    """SIGKILL the job's process group as soon as a Parquet file of ``table`` is in
    staging, and wait until no process of the group is left."""
    deadline = time.monotonic() + 600
    while not staged_files(table):
        assert job.poll() is None, f"the job ended before writing {table.name}"
        assert time.monotonic() < deadline, f"the job did not start writing {table.name}"
        time.sleep(0.02)
    assert job.poll() is None, "the job finished before the kill"
    os.killpg(job.pid, signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(job.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError("processes of the killed job are still running")


def read_table(directory: Path, keys: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """A table as readers see it (pyarrow, hive partitions), sorted by its keys, and the
    files they read relative to ``directory``."""
    dataset = ds.dataset(directory, format="parquet", partitioning="hive")
    frame = dataset.to_table().to_pandas()
    assert not frame.duplicated(keys).any()
    files = [str(Path(f).relative_to(directory)) for f in dataset.files]
    return frame.sort_values(keys, ignore_index=True), files


def duckdb_rows(directory: Path) -> int:
    """Rows of the glob the DuckDB offline store reads (feature_repo/data_sources.py)."""
    query = f"SELECT count(*) FROM read_parquet('{directory}/*/*.parquet')"
    return duckdb.sql(query).fetchall()[0][0]


def test_a_job_killed_while_writing_and_rerun_leaves_what_an_uninterrupted_run_leaves(
    spark, tmp_path: Path
) -> None:
    data_root = tmp_path / "killed" / "data"
    write_simulation(CONFIG, data_root / "events", data_root / "ground_truth")
    reference_root = tmp_path / "reference" / "data"
    shutil.copytree(data_root / "events", reference_root / "events")
    env = job_env(data_root, tmp_path / "spark-scratch")

    job = subprocess.Popen(
        job_command(),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    kill_once_staged(job, contract.table_dir(data_root, contract.AD_DAILY.name))
    at_kill = Written.of(data_root)
    # Killed mid-run: the first table committed, the second still in staging (its
    # commit removes the staging directory), none of the later ones begun.
    assert contract.USER_DAILY.name in at_kill.committed, at_kill
    assert at_kill.staged_files.get(contract.AD_DAILY.name, 0) > 0, at_kill
    assert set(at_kill.committed) <= {contract.USER_DAILY.name, contract.AD_DAILY.name}, at_kill

    rerun = subprocess.run(
        rerun_command(), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]
    assert "feature tables in" in rerun.stdout
    expected_rows = batch_features.run(spark, reference_root, FIRST_END, LAST_END)

    features = data_root / contract.FEATURES_DIR
    reference_features = reference_root / contract.FEATURES_DIR
    tables = {p.name for p in features.iterdir()}
    assert tables == {p.name for p in reference_features.iterdir()} == set(contract.VIEWS)
    for name in sorted(tables):
        spec = contract.VIEWS[name]
        keys = [*spec.join_keys, "event_timestamp"]
        directory, reference_directory = features / name, reference_features / name
        assert partitions(directory) == partitions(reference_directory), name
        actual, files = read_table(directory, keys)
        expected, _ = read_table(reference_directory, keys)
        assert all(re.fullmatch(r"date=[\d-]+/part-[^/]+\.parquet", f) for f in files), files
        pd.testing.assert_frame_equal(actual, expected, check_exact=True, obj=name)
        assert duckdb_rows(directory) == len(expected) == expected_rows[name], name
