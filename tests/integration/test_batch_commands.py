"""`spark-submit pipelines/batch_features.py` and `adstack batch` as a user runs them:
both write the same feature tables, and bad arguments get a clear error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from feature_repo import contract
from pipelines import batch_features
from pipelines.simulator import SimulationConfig, write_simulation

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("events-only") / "data"
    config = SimulationConfig(days=2, users=100, ads=30, impressions_per_day=1_500, seed=3)
    write_simulation(config, root / "events", root / "ground_truth")
    return root


def run(command: list[str], data_root: Path) -> subprocess.CompletedProcess:
    # As from an activated virtualenv: spark-submit finds PySpark through `python3`.
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "ADSTACK_DATA": str(data_root), "PATH": path}
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=data_root.parent)


def tables(data_root: Path) -> dict[str, pd.DataFrame]:
    return {
        name: ds.dataset(contract.table_dir(data_root, name), format="parquet")
        .to_table()
        .to_pandas()
        .sort_values([*spec.join_keys, "event_timestamp"])
        .reset_index(drop=True)
        for name, spec in contract.VIEWS.items()
    }


def test_spark_submit_and_adstack_batch_write_the_same_tables(events: Path, tmp_path: Path) -> None:
    other = tmp_path / "data"
    shutil.copytree(events / "events", other / "events")
    submitted = run(
        [
            str(BIN / "spark-submit"),
            batch_features.__file__,
            "--start",
            "2026-01-06",
            "--end",
            "2026-01-07",
        ],  # fmt: skip
        events,
    )
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "user_daily:" in submitted.stdout
    by_cli = run(
        [str(BIN / "adstack"), "batch", "--start", "2026-01-06", "--end", "2026-01-07"], other
    )
    assert by_cli.returncode == 0, by_cli.stdout + by_cli.stderr[-3000:]
    assert "feature tables in" in by_cli.stdout
    submitted_tables, cli_tables = tables(events), tables(other)
    for name in contract.VIEWS:
        assert len(submitted_tables[name]) > 0, name
        pd.testing.assert_frame_equal(submitted_tables[name], cli_tables[name])
    days = sorted(p.name for p in contract.table_dir(events, "user_daily").glob("date=*"))
    assert days == ["date=2026-01-06", "date=2026-01-07"]


def test_a_reversed_range_is_refused_with_a_message(events: Path) -> None:
    result = run(
        [str(BIN / "adstack"), "batch", "--start", "2026-01-07", "--end", "2026-01-06"], events
    )
    assert result.returncode == 2
    assert "is after --end" in result.stdout + result.stderr
