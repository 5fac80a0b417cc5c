"""``pipelines.materialize`` leaves Redis byte-identical to Feast's own materialisation.

Two copies of the feature repo share one data root; each has its own registry and its own
database on the same real redis-server. Feast 0.67 materialises one copy, ours the other,
step by step, and after every step every key, hash field and value must match:

1. first ``materialize_incremental`` (start ``now - ttl``; a row older than that is left
   out; a newer row of the same entity wins over an older one);
2. an explicit ``materialize`` over an older interval that brings late rows: older than
   what Redis holds (skipped), or for new entities (written); rows as old as the stored
   ones are skipped too;
3. a second incremental run continues from the recorded interval (microsecond stamps);
4. Feast's ``materialize_incremental`` on our copy continues from our recorded interval.

Floats carry nulls and NaN, strings nulls and empty strings, one view has two join keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import redis
from feast import FeatureStore

from bench.materialize import make_project, synthetic_table, write_table
from core.settings import get_settings
from feature_repo.contract import VIEWS
from pipelines import materialize as ours

ENTITIES = 120
FEAST_DB, OUR_DB = 1, 2


def _db_url(redis_url: str, db: int) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{db}"


def _dump(client: redis.Redis) -> dict[Any, dict[Any, Any]]:
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}


class Sides:
    """Feast's copy and ours: project roots, databases, and how to run either tool."""

    def __init__(self, root: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data = root / "data"
        self.urls = {FEAST_DB: _db_url(redis_url, FEAST_DB), OUR_DB: _db_url(redis_url, OUR_DB)}
        self.repos = {db: root / f"db{db}" / "feature_repo" for db in self.urls}
        self.monkeypatch = monkeypatch
        self.clients = {db: redis.Redis.from_url(url) for db, url in self.urls.items()}
        for db, repo in self.repos.items():
            self.clients[db].flushdb()
            repo.parent.mkdir(parents=True)
            (repo.parent / "data").symlink_to(self.data, target_is_directory=True)
            make_project(repo.parent, self.urls[db])

    def use(self, db: int) -> Path:
        self.monkeypatch.setenv("REDIS_URL", self.urls[db])
        self.monkeypatch.setenv("ADSTACK_DATA", str(self.data))
        get_settings.cache_clear()
        return self.repos[db]

    def feast_incremental(self, db: int, end: datetime) -> None:
        FeatureStore(repo_path=str(self.use(db))).materialize_incremental(end)

    def assert_identical(self) -> None:
        feast, mine = _dump(self.clients[FEAST_DB]), _dump(self.clients[OUR_DB])
        assert feast, "Feast wrote nothing: the scenario is not exercising anything"
        assert any(b"" in fields.values() for fields in feast.values()), "no null was written"
        assert sorted(mine) == sorted(feast)
        for key, fields in feast.items():
            assert mine[key] == fields, key

    def intervals(self, db: int, view: str) -> list[tuple[datetime, datetime]]:
        store = FeatureStore(repo_path=str(self.use(db)))
        return store.get_feature_view(view).materialization_intervals


@pytest.fixture
def sides(
    tmp_path: Path, settings_env: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sides]:
    (tmp_path / "data").mkdir()
    both = Sides(tmp_path, redis_url, monkeypatch)
    yield both
    for client in both.clients.values():
        client.flushdb()
        client.close()


def _write(data: Path, stamp: datetime, ids: np.ndarray, part: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, spec in VIEWS.items():
        write_table(data, name, synthetic_table(spec, ids, stamp, rng, nulls=0.2), part)


def _day(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)


def test_synthetic_tables_have_the_nulls_the_comparison_relies_on() -> None:
    table = synthetic_table(
        VIEWS["ad_profile"], np.arange(200), _day(0), np.random.default_rng(1), 0.2
    )
    assert table.column("ad_bid").null_count > 0
    assert table.column("ad_category").null_count > 0
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", "UTC")


def test_materialisation_is_byte_identical_to_feast(sides: Sides) -> None:
    ids = np.arange(ENTITIES, dtype=np.int64)
    _write(sides.data, _day(400), ids, "too_old", seed=1)
    _write(sides.data, _day(1), ids, "yesterday", seed=2)
    _write(sides.data, _day(0), ids[: ENTITIES // 2], "today", seed=3)
    first_end = datetime.now(UTC)
    sides.feast_incremental(FEAST_DB, first_end)
    written = ours.materialize_incremental(sides.use(OUR_DB), first_end)
    assert written["user_daily"] == ENTITIES
    sides.assert_identical()

    late = np.arange(ENTITIES // 4, ENTITIES + 10, dtype=np.int64)
    _write(sides.data, _day(2), late, "late", seed=4)
    start = _day(3)
    FeatureStore(repo_path=str(sides.use(FEAST_DB))).materialize(start, first_end)
    written = ours.materialize(sides.use(OUR_DB), start, first_end)
    assert written["user_daily"] == 10
    sides.assert_identical()

    stamp = first_end + timedelta(hours=1, microseconds=123_457)
    _write(sides.data, stamp, ids[::3], "next", seed=6)
    second_end = first_end + timedelta(hours=2)
    sides.feast_incremental(FEAST_DB, second_end)
    written = ours.materialize_incremental(sides.use(OUR_DB), second_end)
    assert written["user_daily"] == len(ids[::3])
    assert sides.intervals(OUR_DB, "user_daily")[-1][0] == first_end
    sides.assert_identical()

    _write(sides.data, first_end + timedelta(hours=3), ids[::5], "after", seed=7)
    third_end = first_end + timedelta(hours=4)
    for db in (FEAST_DB, OUR_DB):
        sides.feast_incremental(db, third_end)
    assert sides.intervals(OUR_DB, "user_daily")[-1] == (second_end, third_end)
    sides.assert_identical()
