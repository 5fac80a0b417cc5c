"""Starting Spark or a new MLflow store prints nothing a user did not ask for: no launch
warnings about the host, no schema migrations."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_new_registry_store_logs_no_migrations(tmp_path):
    # In a process of its own: MLflow's log handler keeps the stderr of the moment it was
    # first imported, which inside a test session may be another test's capture.
    script = (
        "from artifact import registry\n"
        "from core.settings import get_settings\n"
        "registry.client(get_settings()).search_experiments()\n"
    )
    env = {**os.environ, "ADSTACK_STATE_DIR": str(tmp_path / "state")}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "state" / "mlflow.db").exists()
    assert "database tables" not in result.stdout + result.stderr


def test_spark_starts_without_host_or_native_library_warnings(tmp_path):
    script = (
        "from core.spark import spark_session\n"
        "spark = spark_session('quiet', 'local[1]')\n"
        "print('rows', spark.range(3).count())\n"
        "spark.stop()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "rows 3" in result.stdout
    for noise in ("NativeCodeLoader", "native-hadoop", "resolves to a loopback", " WARN "):
        assert noise not in result.stderr, result.stderr
