"""Run Feast on the project's feature repo the way a Feast user would.

``adstack apply`` runs the ``feast`` command line in ``feature_repo/`` with the data
root and Redis of adstack's settings in its environment; ``adstack materialize`` loads
the online store. Both profiles are supported: DuckDB (default) and Spark.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.settings import Settings

PROFILES = {"duckdb": "feature_store.yaml", "spark": "feature_store.spark.yaml"}


def feast_env(settings: Settings, profile: str = "duckdb") -> dict[str, str]:
    """Environment for Feast: absolute data root, the Redis in use, the source type."""
    if profile not in PROFILES:
        raise ValueError(f"unknown offline profile {profile!r}; choose from {sorted(PROFILES)}")
    return {
        **os.environ,
        "ADSTACK_DATA": str(settings.data_root.resolve()),
        "REDIS_URL": settings.effective_redis_url,
        "ADSTACK_OFFLINE_STORE": profile,
    }


def feast_cli(
    settings: Settings, *args: str, profile: str = "duckdb"
) -> subprocess.CompletedProcess:
    """``feast -c <repo> -f <profile yaml> <args>``; raises with Feast's output on failure."""
    repo = settings.feature_repo.resolve()
    command = [
        str(Path(sys.executable).with_name("feast")),
        "-c",
        str(repo),
        "-f",
        str(repo / PROFILES[profile]),
        *args,
    ]
    result = subprocess.run(
        command, env=feast_env(settings, profile), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise FeastCommandError(" ".join(args), result.stdout + result.stderr)
    return result


class FeastCommandError(RuntimeError):
    def __init__(self, command: str, output: str) -> None:
        super().__init__(f"feast {command} failed:\n{output.strip()}")
