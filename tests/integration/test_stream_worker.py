"""The stream worker on a real Redis and a real Feast repo: replayed events in, pushed
rows out, held to the recomputation from the raw events; lateness, malformed entries,
and the point-in-time view of what was pushed. Crashes during a replay are in
tests/reliability/test_stream_worker_kills.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import redis
from feast import FeatureStore

from core.event_bus import CLICK, IMPRESSION, STREAM_KEY, EventProducer, Events
from core.settings import get_settings
from feature_repo import contract
from pipelines.replay import replay, stream_events
from pipelines.simulator import SimulationConfig, write_simulation
from pipelines.stream_aggregates import STREAM_VIEWS, recompute
from pipelines.stream_features import StreamWorker, WorkerConfig

REPO_SOURCE = Path(contract.__file__).resolve().parent


def make_project(root: Path, config: SimulationConfig, redis_url: str) -> dict[str, str]:
    repo = root / "feature_repo"
    repo.mkdir(parents=True)
    for path in [*REPO_SOURCE.glob("*.py"), *REPO_SOURCE.glob("*.yaml")]:
        shutil.copy(path, repo / path.name)
    write_simulation(config, root / "data" / "events", root / "data" / "ground_truth")
    env = {
        **os.environ,
        "ADSTACK_DATA": str(root / "data"),
        "REDIS_URL": redis_url,
        "ADSTACK_FEATURE_REPO": str(repo),
    }
    feast_bin = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast_bin), "-c", str(repo), "apply"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return env


@pytest.fixture
def project(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    config = SimulationConfig(days=1, users=400, ads=60, impressions_per_day=12_000, seed=11)
    env = make_project(tmp_path, config, redis_url)
    use_env(monkeypatch, env)
    redis.Redis.from_url(redis_url).flushdb()
    yield tmp_path
    get_settings.cache_clear()


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in ("ADSTACK_DATA", "REDIS_URL", "ADSTACK_FEATURE_REPO"):
        monkeypatch.setenv(name, env[name])
    get_settings.cache_clear()


def run_worker(client: redis.Redis, repo: Path, **options) -> StreamWorker:
    config = WorkerConfig(repo_path=repo, exit_when_idle=1.0, lease_seconds=5, **options)
    worker = StreamWorker(client, FeatureStore(repo_path=str(repo)), config)
    worker.run()
    return worker


def replay_and_stream(data: Path, repo: Path, redis_url: str) -> tuple[Events, StreamWorker]:
    """Replay every event of ``data`` as fast as possible, then run the worker until idle."""
    client = redis.Redis.from_url(redis_url)
    events = stream_events(data)
    replay(EventProducer(client), events, speed=0)
    return events, run_worker(client, repo)


def online_frame(store: FeatureStore, name: str, ids: np.ndarray) -> pd.DataFrame:
    view = STREAM_VIEWS[name]
    return store.get_online_features(
        [f"{name}:{feature}" for feature in view.spec.feature_names],
        [{view.entity: int(i)} for i in ids],
    ).to_df()[[view.entity, *view.spec.feature_names]]


def assert_same(actual: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        a, b = actual[column].to_numpy(float), expected[column].to_numpy(float)
        same = (a == b) | (np.isnan(a) & np.isnan(b))
        assert same.all(), (column, a[~same][:5], b[~same][:5])


def pushed_log(data: Path, name: str) -> pd.DataFrame:
    directory = contract.table_dir(data, contract.push_log_name(contract.push_source_name(name)))
    frame = ds.dataset(directory, format="parquet", partitioning="hive").to_table().to_pandas()
    return frame.drop(columns=["date"], errors="ignore")


def test_pushed_rows_equal_the_recomputation_online_and_offline(
    project: Path, redis_url: str
) -> None:
    events, worker = replay_and_stream(project / "data", project / "feature_repo", redis_url)
    assert worker.metrics.totals["events"] == len(events) > 10_000
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    watermark = worker.aggregator.watermark
    for name, view in STREAM_VIEWS.items():
        features = view.spec.feature_names
        # Online: the values at the watermark, for every entity.
        ids = np.unique(getattr(events, view.entity))
        expected = recompute(view, events, ids, np.full(len(ids), watermark))
        assert_same(online_frame(store, name, ids), expected, features)
        # Offline: every row pushed equals the recomputation at its own timestamp.
        log = pushed_log(project / "data", name)
        stamps = log.event_timestamp.astype("datetime64[us, UTC]").astype("int64").to_numpy()
        expected = recompute(view, events, log[view.entity].to_numpy(), stamps)
        assert_same(log.reset_index(drop=True), expected, features)
        assert len(log) > len(ids)


def test_a_training_row_at_t_sees_only_values_pushed_at_or_before_t(
    project: Path, redis_url: str
) -> None:
    events, _ = replay_and_stream(project / "data", project / "feature_repo", redis_url)
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    view = STREAM_VIEWS["user_stream"]
    rng = np.random.default_rng(3)
    sample = rng.choice(len(events), 1_000, replace=False)
    # Impression times, plus a few microseconds either side of pushed stamps.
    entity_df = pd.DataFrame(
        {
            "user_id": events.user_id[sample],
            "event_timestamp": pd.to_datetime(
                events.ts[sample] + rng.integers(-2, 3, len(sample)), unit="us", utc=True
            ),
        }
    )
    joined = store.get_historical_features(
        entity_df, [f"user_stream:{f}" for f in view.spec.feature_names]
    ).to_df()
    log = pushed_log(project / "data", "user_stream")
    log_stamps = log.event_timestamp.astype("datetime64[us, UTC]").astype("int64")
    t = joined.event_timestamp.astype("datetime64[us, UTC]").astype("int64").to_numpy()
    latest = np.array(
        [
            log_stamps[(log.user_id == user) & (log_stamps <= ti)].max()
            for user, ti in zip(joined.user_id, t, strict=True)
        ]
    )
    known = ~np.isnan(latest)
    assert known.mean() > 0.9
    assert (latest[known] <= t[known]).all()
    expected = recompute(
        view, events, joined.user_id.to_numpy()[known], latest[known].astype(np.int64)
    )
    assert_same(joined[known].reset_index(drop=True), expected, view.spec.feature_names)
    assert joined[~known][view.spec.feature_names].isna().all().all()


def test_late_out_of_order_and_malformed_entries(project: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    t0 = int(pd.Timestamp("2026-01-05 10:00", tz="UTC").value // 1000)
    minute = 60_000_000

    def send(kind: int, minutes: float, user: int) -> None:
        frame = pd.DataFrame(
            {
                "kind": [kind],
                "ts": [t0 + int(minutes * minute)],
                "user_id": [user],
                "ad_id": [user],
                "campaign_id": [1],
                "impression_id": [0],
                "cost_micros": [0],
            }
        )
        EventProducer(client).send(Events.from_frame(frame))

    send(IMPRESSION, 30, 1)
    send(IMPRESSION, 27, 1)  # 3 minutes behind: counted in its own tile
    send(CLICK, 20, 1)  # 10 minutes behind: reported, not counted
    client.xadd(STREAM_KEY, {"kind": "impression", "ts": "later", "user_id": 1})
    send(IMPRESSION, 33.5, 2)
    worker = run_worker(client, project / "feature_repo")
    assert worker.metrics.totals["late"] == 1 and worker.metrics.totals["invalid"] == 1
    late = client.xrange(f"{STREAM_KEY}:late")
    assert len(late) == 1 and late[0][1][b"kind"] == b"click"
    assert b"behind the watermark" in late[0][1][b"reason"]
    invalid = client.xrange(f"{STREAM_KEY}:invalid")
    assert len(invalid) == 1 and b"missing fields" in invalid[0][1][b"reason"]
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    user = online_frame(store, "user_stream", np.array([1])).iloc[0]
    # At 10:33:30 the 5-minute window starts at 10:28: the 10:27 impression has left it
    # (an expiry row at 10:33), the 10:30 one has not; the late click never counts.
    assert (user.user_impressions_5m, user.user_impressions_1h, user.user_clicks_1h) == (1, 2, 0)
    assert client.xpending(STREAM_KEY, "stream-features")["pending"] == 0


@pytest.mark.real_logs
def test_talkingdata_replays_through_the_worker(
    tmp_path: Path, redis_url: str, sample_logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adstack.flows import ingest

    env = make_project(
        tmp_path, SimulationConfig(days=1, users=10, ads=5, impressions_per_day=10), redis_url
    )
    shutil.rmtree(tmp_path / "data" / "events")
    report = ingest(
        "talkingdata", sample_logs / "talkingdata_sample", tmp_path / "data", tmp_path / "r"
    )
    assert report.rows_quarantined == 0
    use_env(monkeypatch, env)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    events = stream_events(tmp_path / "data")
    # Every TalkingData row is an impression and its click (the log holds clicks only).
    assert np.bincount(events.kind, minlength=3)[:2].tolist() == [100_000, 100_000]
    replay(EventProducer(client), events, speed=0)
    worker = run_worker(client, tmp_path / "feature_repo")
    assert worker.metrics.totals["events"] == len(events)
    store = FeatureStore(repo_path=str(tmp_path / "feature_repo"))
    view = STREAM_VIEWS["ad_stream"]
    ids = np.unique(events.ad_id)
    expected = recompute(view, events, ids, np.full(len(ids), worker.aggregator.watermark))
    assert_same(online_frame(store, "ad_stream", ids), expected, view.spec.feature_names)
