"""`adstack batch` as a user runs it: bad arguments get a clear error. (Both entry
points, `spark-submit pipelines/batch_features.py` killed mid-run and `adstack batch`
rerunning it, are held to the same tables in tests/reliability/test_spark_kill.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_a_reversed_range_is_refused_with_a_message(events: Path) -> None:
    result = run(
        [str(BIN / "adstack"), "batch", "--start", "2026-01-07", "--end", "2026-01-06"], events
    )
    assert result.returncode == 2
    assert "is after --end" in result.stdout + result.stderr
