"""The scorer's stack, built once per test session and shared by the serving tests and
the reliability suite: simulated events, the Spark batch job, a real Feast repo
materialised into its own real redis-server (so a test can stop it), streamed rows
pushed through Feast, and CTR (LR) and CVR (ESMM) models trained and registered."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore
from feast.data_source import PushMode

from adstack import redis_server
from adstack.flows import build_dataset, train
from artifact import registry
from core.settings import get_settings
from feature_repo import contract
from pipelines import batch_features
from pipelines.materialize import materialize
from pipelines.simulator import SimulationConfig, write_simulation
from tests.integration.test_training import applied_repo, point_settings_at

START = datetime(2026, 2, 2, tzinfo=UTC)
CONFIG = SimulationConfig(
    days=12, users=1_500, ads=120, impressions_per_day=12_000, seed=5, start=START
)
END = START + timedelta(days=CONFIG.days)
# Requests are made at the end of the log, where the batch rows are fresh.
REQUEST_AT = END + timedelta(hours=12)
TOKEN = "serving-test-token"


@dataclass
class Stack:
    root: Path
    repo: Path
    redis_dir: Path
    url: str
    ads: pd.DataFrame
    users: np.ndarray
    versions: dict[str, str]

    def env(self) -> dict[str, str]:
        """The settings of this stack, for a process started on it."""
        return {
            "ADSTACK_DATA": str(self.root / "data"),
            "ADSTACK_FEATURE_REPO": str(self.repo),
            "ADSTACK_STATE_DIR": str(self.root / "state"),
            "ADSTACK_REPORTS_DIR": str(self.root / "reports"),
            "REDIS_URL": self.url,
            "ADSTACK_API_TOKEN": TOKEN,
        }

    def use(self, patch: pytest.MonkeyPatch) -> None:
        """Point this process's settings at the stack for ``patch``'s lifetime."""
        point_settings_at(patch, self.root, self.repo, self.url, ADSTACK_API_TOKEN=TOKEN)


def build(tmp_path_factory: pytest.TempPathFactory, spark) -> Iterator[Stack]:
    """Build the stack, yield it, stop its Redis. The settings point at it only while
    it is built: each module using it sets them again with ``Stack.use``."""
    root = tmp_path_factory.mktemp("serving")
    redis_dir = root / "redis"
    server = redis_server.start(redis_dir, redis_server.free_port(), persist=True)
    data = root / "data"
    write_simulation(CONFIG, data / "events", data / "ground_truth")
    batch_features.run(spark, data, START.date() + timedelta(days=1), END.date())
    repo = applied_repo(root, data, server.url)
    with pytest.MonkeyPatch.context() as patch:
        point_settings_at(patch, root, repo, server.url, ADSTACK_API_TOKEN=TOKEN)
        settings = get_settings()
        materialize(repo, START - timedelta(days=365), END)
        ads = pd.read_parquet(data / "events" / "ads")
        _push_stream_rows(repo, ads)
        versions = {}
        for task, kind in (("ctr", "lr"), ("cvr", "esmm")):
            training_set = build_dataset(settings, task)
            run = train(settings, task, kind, epochs=1, promote=False, training_set=training_set)
            # The tiny simulation may miss the calibration gate; the scorer serves what
            # the alias points to, so the test sets it.
            registry.client(settings).set_registered_model_alias(
                task, registry.CHAMPION, run.registration.version
            )
            versions[task] = run.registration.version
        users = pd.read_parquet(data / "events" / "users")["user_id"].to_numpy()
    get_settings.cache_clear()
    try:
        yield Stack(root, repo, redis_dir, server.url, ads, users, versions)
    finally:
        redis_server.stop(redis_dir)


def _push_stream_rows(repo: Path, ads: pd.DataFrame) -> None:
    """Streamed rows as the stream worker writes them: Feast push, online."""
    store = FeatureStore(repo_path=str(repo))
    at = REQUEST_AT - timedelta(minutes=1)
    some = ads.iloc[: len(ads) // 2]
    ad_rows = {"ad_id": some["ad_id"].to_numpy(), "event_timestamp": at}
    for spec in contract.AD_STREAM.features:
        if spec.dtype == contract.INT64:
            ad_rows[spec.name] = np.arange(len(some)) * 3
        else:
            ad_rows[spec.name] = np.where(np.arange(len(some)) % 4 == 0, np.nan, 0.05)
    store.push("ad_stream_push", pd.DataFrame(ad_rows), to=PushMode.ONLINE)
    users = pd.read_parquet(repo.parent / "data" / "events" / "users")["user_id"].to_numpy()[:20]
    user_rows = {"user_id": users, "event_timestamp": at}
    for spec in contract.USER_STREAM.features:
        user_rows[spec.name] = np.arange(len(users))
    store.push("user_stream_push", pd.DataFrame(user_rows), to=PushMode.ONLINE)
    campaigns = ads["campaign_id"].drop_duplicates().to_numpy()
    campaign_rows = {"campaign_id": campaigns, "event_timestamp": at}
    for spec in contract.CAMPAIGN_STREAM.features:
        campaign_rows[spec.name] = (
            np.arange(len(campaigns))
            if spec.dtype == contract.INT64
            else np.linspace(0, 50, len(campaigns))
        )
    store.push("campaign_stream_push", pd.DataFrame(campaign_rows), to=PushMode.ONLINE)
