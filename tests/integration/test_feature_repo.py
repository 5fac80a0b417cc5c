"""The Feast repo on real engines: `feast apply` and `feast materialize-incremental` as a
user runs them, online values from Redis, and the DuckDB and Spark offline stores
returning the same training rows."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from feast import FeatureStore

from core.settings import get_settings
from feature_repo import contract
from pipelines import batch_features
from pipelines.simulator import SimulationConfig, write_simulation

REPO_SOURCE = Path(contract.__file__).resolve().parent
PROJECT_ROOT = REPO_SOURCE.parent
CONFIG = SimulationConfig(days=4, users=300, ads=60, impressions_per_day=3_000, seed=5)
FIRST_END, LAST_END = date(2026, 1, 6), date(2026, 1, 9)
HALFWAY = datetime(2026, 1, 7, tzinfo=UTC)
END = datetime(2026, 1, 9, tzinfo=UTC)


def feast(repo: Path, env: dict[str, str], *args: str) -> str:
    feast_bin = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast_bin), "-c", str(repo), *args], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, spark, redis_url: str) -> Iterator[Path]:
    """A copy of the repo next to simulated events and their feature tables, applied with
    both profiles and materialised with the Feast CLI."""
    root = tmp_path_factory.mktemp("project")
    repo = root / "feature_repo"
    repo.mkdir()
    for path in [*REPO_SOURCE.glob("*.py"), *REPO_SOURCE.glob("*.yaml")]:
        shutil.copy(path, repo / path.name)
    data = root / "data"
    write_simulation(CONFIG, data / "events", data / "ground_truth")
    batch_features.run(spark, data, FIRST_END, LAST_END)
    env = {**os.environ, "ADSTACK_DATA": str(data), "REDIS_URL": redis_url}
    feast(repo, env, "apply")
    spark_env = {**env, "ADSTACK_OFFLINE_STORE": "spark"}
    feast(repo, spark_env, "-f", str(repo / "feature_store.spark.yaml"), "apply")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REDIS_URL", redis_url)
        patch.setenv("ADSTACK_DATA", str(data))
        get_settings.cache_clear()
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        # A backfill first (Feast's first incremental run starts at wall-clock now - ttl,
        # which is after these simulated days), then an incremental run continues from it.
        feast(repo, env, "materialize", "2020-01-01T00:00:00+00:00", HALFWAY.isoformat())
        feast(repo, env, "materialize-incremental", END.isoformat())
        yield root
    get_settings.cache_clear()


def latest_rows(data: Path, spec: contract.ViewSpec, end: datetime) -> pd.DataFrame:
    """The newest row per entity stamped at or before ``end``."""
    frame = ds.dataset(contract.table_dir(data, spec.name), format="parquet").to_table().to_pandas()
    frame = frame[frame.event_timestamp <= end]
    return frame.sort_values("event_timestamp").groupby(spec.join_keys).tail(1)


def same(a: object, b: object) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)):
        return b is None or (isinstance(b, float) and np.isnan(b))
    if isinstance(a, float) or isinstance(b, float):
        return b is not None and abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    return a == b


def test_feature_views_and_services_are_built_from_the_contract(project: Path) -> None:
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    views = {view.name: view for view in store.list_feature_views()}
    assert set(views) == set(contract.ALL_VIEWS)
    for name, spec in contract.ALL_VIEWS.items():
        view = views[name]
        assert [f.name for f in view.features] == spec.feature_names
        assert sorted(view.join_keys) == sorted(spec.join_keys)
        assert view.ttl == spec.ttl or (not view.ttl and not spec.ttl)
    for service_name in ("ctr_v1", "cvr_v1"):
        service = store.get_feature_service(service_name)
        for projection in service.feature_view_projections:
            spec = contract.ALL_VIEWS[projection.name]
            assert [f.name for f in projection.features] == spec.feature_names


def string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_no_feature_name_is_typed_outside_the_contract() -> None:
    names = {name for spec in contract.ALL_VIEWS.values() for name in spec.feature_names}
    allowed = {REPO_SOURCE / "contract.py", REPO_SOURCE / "feature_services.py"}
    offenders = {}
    for folder in ("adstack", "pipelines", "training", "serving", "validation", "feature_repo"):
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            if path in allowed:
                continue
            typed = string_constants(path) & names
            if typed:
                offenders[str(path.relative_to(PROJECT_ROOT))] = sorted(typed)
    assert not offenders, f"feature names typed outside the contract: {offenders}"


def test_online_values_equal_the_latest_offline_rows(project: Path) -> None:
    store = FeatureStore(repo_path=str(project / "feature_repo"))
    data = project / "data"
    users = latest_rows(data, contract.USER_DAILY, END)
    ads = pd.read_parquet(data / "events" / "ads")
    rng = np.random.default_rng(0)
    picked_users = rng.choice(users.user_id.to_numpy(), size=40, replace=False)
    picked_ads = ads.sample(40, random_state=1)
    entity_rows = [
        {
            "user_id": int(user),
            "ad_id": int(ad.ad_id),
            "advertiser_id": int(ad.advertiser_id),
            "category": str(ad.category),
        }
        for user, ad in zip(picked_users, picked_ads.itertuples(), strict=True)
    ]
    online = store.get_online_features(
        features=store.get_feature_service("ctr_v1"), entity_rows=entity_rows
    ).to_dict()

    compared = 0
    for spec in (
        contract.USER_DAILY,
        contract.AD_DAILY,
        contract.ADVERTISER_DAILY,
        contract.USER_CATEGORY_DAILY,
        contract.AD_PROFILE,
        contract.USER_PROFILE,
    ):
        latest = latest_rows(data, spec, END).set_index(spec.join_keys)
        for i, row in enumerate(entity_rows):
            key = tuple(row[k] for k in spec.join_keys)
            key = key[0] if len(key) == 1 else key
            for feature in spec.feature_names:
                expected = latest.at[key, feature] if key in latest.index else None
                actual = online[feature][i]
                assert same(expected, actual), (spec.name, key, feature, expected, actual)
                compared += expected is not None
    assert compared > 1_000


def test_duckdb_and_spark_offline_stores_return_identical_training_rows(project: Path) -> None:
    repo = project / "feature_repo"
    impressions = pd.read_parquet(project / "data" / "events" / "impressions")
    ads = pd.read_parquet(project / "data" / "events" / "ads")
    entity_df = (
        impressions.sample(400, random_state=3)[
            ["impression_id", "user_id", "ad_id", "event_timestamp"]
        ]
        .merge(ads[["ad_id", "advertiser_id", "campaign_id", "category"]], on="ad_id")
        .reset_index(drop=True)
    )
    frames = {}
    for profile, yaml in (("duckdb", "feature_store.yaml"), ("spark", "feature_store.spark.yaml")):
        store = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / yaml)
        for service in ("ctr_v1", "cvr_v1"):
            frame = store.get_historical_features(
                entity_df=entity_df, features=store.get_feature_service(service)
            ).to_df()
            frames[profile, service] = frame.sort_values("impression_id").reset_index(drop=True)[
                sorted(frame.columns)
            ]
    for service in ("ctr_v1", "cvr_v1"):
        duck, spark_frame = frames["duckdb", service], frames["spark", service]
        assert len(duck) == len(entity_df)
        joined = duck["user_impressions_7d"].notna().sum()
        assert joined > len(entity_df) / 2, "most rows should find their user's features"
        duck["event_timestamp"] = pd.to_datetime(duck["event_timestamp"], utc=True)
        spark_frame["event_timestamp"] = pd.to_datetime(spark_frame["event_timestamp"], utc=True)
        pd.testing.assert_frame_equal(
            duck, spark_frame, check_dtype=False, check_exact=False, rtol=1e-12
        )
