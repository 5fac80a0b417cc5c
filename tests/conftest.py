"""Shared fixtures: a real throwaway redis-server, one local SparkSession, and the real
sample logs when present."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from adstack import redis_server
from core.settings import get_settings

SAMPLE_LOGS = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port for the whole session, stopped at the end."""
    directory = tmp_path_factory.mktemp("redis")
    server = redis_server.start(directory, redis_server.free_port(), persist=False)
    yield server.url
    redis_server.stop(directory)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point every setting at a fresh temporary folder; returns that folder."""
    monkeypatch.chdir(tmp_path)
    for name in ("REDIS_URL", "ADSTACK_DATA", "DEMO_SCALE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def sample_logs() -> Path:
    if not SAMPLE_LOGS.is_dir():
        pytest.skip(f"real sample logs not found at {SAMPLE_LOGS} (a fresh clone has none)")
    return SAMPLE_LOGS


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the whole run (starting one takes ~10 s)."""
    from core.spark import spark_session

    session = spark_session("adstack-tests", "local[2]")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def serving_stack(tmp_path_factory: pytest.TempPathFactory, spark):
    """The scorer's stack (tests/stack.py), built once for the serving tests and the
    reliability suite; its redis-server is stopped at the end of the session."""
    from tests import stack

    yield from stack.build(tmp_path_factory, spark)
