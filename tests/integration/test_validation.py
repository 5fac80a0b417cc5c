"""Validation on the real stack: two simulated worlds that differ only by the simulator's
device-mix drift knob, the Spark batch job, a real Feast repo and its point-in-time
joins, and the GX drift and quality suites.

The two worlds share the seed, so before the drift day they are identical and after it
they differ only through the device draws and what follows from them (clicks and
conversions). Comparing the same days of the two worlds isolates what the knob did,
which a comparison across days cannot: a simulated log starts empty, so 30-day counts
and ad ages grow from day to day in both worlds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from artifact.feature_map import FeatureMap
from core.settings import get_settings
from feature_repo import contract
from pipelines import batch_features
from pipelines.simulator import SimulationConfig, write_simulation
from tests.integration.test_training import applied_repo, point_settings_at
from training import dataset
from training.train import fit_feature_map
from validation import drift, quality
from validation.gx import Runner

START = datetime(2026, 3, 2, tzinfo=UTC)
DRIFT_DAY = 5
CONFIG = SimulationConfig(
    days=8, users=3_000, ads=150, impressions_per_day=20_000, seed=11, start=START
)
END = START + timedelta(days=CONFIG.days)
# Same-distribution splits in the test (the benchmark runs 50: bench/validation.py).
SEEDS = 10
# Request-time and profile inputs, and everything counted from impressions alone: the
# device knob cannot move them (the worlds draw the same requests, users and ads).
CLICK_DRIVEN = {"clicks", "conversions", "ctr", "cvr", "click_share", "spend"}
UNMOVED = (
    {f.name for f in contract.REQUEST_FEATURES if f.name != "device"}
    | {f.name for spec in contract.PROFILE_VIEWS for f in spec.features}
    | {
        f.name
        for spec in contract.DAILY_VIEWS
        for f in spec.features
        if f.measure not in CLICK_DRIVEN
    }
)


@dataclass
class World:
    root: Path
    training_set: dataset.TrainingSet

    def rows_between(self, first_day: int, end_day: int) -> pd.DataFrame:
        frame = self.training_set.frame
        at = frame["event_timestamp"]
        return frame[
            (at >= START + timedelta(days=first_day)) & (at < START + timedelta(days=end_day))
        ]


def _world(root: Path, spark, redis_url: str, config: SimulationConfig) -> World:
    data = root / "data"
    write_simulation(config, data / "events", data / "ground_truth")
    batch_features.run(spark, data, START.date() + timedelta(days=1), END.date())
    repo = applied_repo(root, data, redis_url)
    store = FeatureStore(repo_path=str(repo))
    training_set = dataset.build(
        store, data, "ctr", START, END, split=dataset.SplitRequest(calibration_days=1, test_days=1)
    )
    return World(root, training_set)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory, spark, redis_url: str) -> Iterator[dict[str, World]]:
    built = {}
    for name, drift_day in (("control", None), ("device", DRIFT_DAY)):
        config = SimulationConfig(
            days=CONFIG.days, users=CONFIG.users, ads=CONFIG.ads,
            impressions_per_day=CONFIG.impressions_per_day, seed=CONFIG.seed, start=START,
            drift_day=drift_day, drift_kind="device",
        )  # fmt: skip
        built[name] = _world(tmp_path_factory.mktemp(name), spark, redis_url, config)
    yield built
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def feature_map(worlds: dict[str, World]) -> FeatureMap:
    """What drift reads of a CTR model: its fitted feature map."""
    return fit_feature_map(worlds["control"].training_set)


def test_device_drift_is_detected_on_device_and_not_on_the_other_inputs(
    worlds: dict[str, World], feature_map: FeatureMap
) -> None:
    runner = Runner()
    # Before the knob turns, the two worlds are one world: nothing drifts.
    before = drift.run(
        runner,
        drift.reference_profile(worlds["control"].rows_between(3, DRIFT_DAY), "ctr", feature_map),
        worlds["device"].rows_between(3, DRIFT_DAY),
    )
    assert before.passed and before.drifted == []
    reference = drift.reference_profile(
        worlds["control"].rows_between(DRIFT_DAY, 99), "ctr", feature_map
    )
    report = drift.run(runner, reference, worlds["device"].rows_between(DRIFT_DAY, 99))
    by_name = {f.feature: f for f in report.features}
    assert "device" in report.drifted, report.as_dict()
    assert {"kl_divergence", "psi"} <= set(by_name["device"].failed_checks)
    assert not report.passed
    compared_unmoved = UNMOVED & set(by_name)
    assert len(compared_unmoved) >= 20, compared_unmoved
    assert not set(report.drifted) & UNMOVED, report.drifted
    # Whatever else drifted is counted from clicks and conversions, which the device mix
    # really changes (CTR +6%, CVR -13% in the simulator's hidden model).
    measures = {f.name: f.measure for s in contract.DAILY_VIEWS for f in s.features}
    others = set(report.drifted) - {"device"}
    assert all(measures.get(name) in CLICK_DRIVEN for name in others), others


def test_same_distribution_splits_raise_no_false_alarms(
    worlds: dict[str, World], feature_map: FeatureMap
) -> None:
    pool = worlds["control"].rows_between(DRIFT_DAY, 99).reset_index(drop=True)
    runner = Runner()
    alarms = []
    for seed in range(SEEDS):
        order = np.random.default_rng(seed).permutation(len(pool))
        half = len(order) // 2
        reference = drift.reference_profile(pool.iloc[order[:half]], "ctr", feature_map)
        report = drift.run(runner, reference, pool.iloc[order[half:]])
        alarms.append(report.drifted)
    # 0 of 50 in the benchmark; here every one of the splits must be clean.
    assert not any(alarms), alarms


def test_quality_suites_pass_on_the_batch_tables_and_catch_bad_rows(
    worlds: dict[str, World], tmp_path: Path
) -> None:
    data = worlds["control"].root / "data"
    runner = Runner(docs_dir=tmp_path / "docs")
    for spec in contract.VIEWS.values():
        result = quality.check_view(runner, data, spec, END)
        assert result.passed, [c.describe() for s in result.suites for c in s.failures]
        assert result.rows_checked > 0
    # A week later the newest rows are past their TTL: freshness fails.
    stale = quality.check_view(runner, data, contract.USER_DAILY, END + timedelta(days=7))
    assert [c.check for s in stale.suites for c in s.failures] == ["freshness"]
    # Out-of-range and missing values are caught, with the feature named.
    newest = sorted((data / "features" / "user_daily").glob("date=*"))[-1]
    rows = pd.read_parquet(newest)
    rows.loc[rows.index[:5], "user_ctr_7d"] = 1.5
    rows.loc[rows.index[:5], "user_clicks_7d"] = None
    rows.loc[rows.index[5:10], "user_ctr_7d"] = None  # with impressions
    bad = runner.validate("bad", quality.view_expectations(contract.USER_DAILY), rows)
    failed = {(c.check, c.feature) for c in bad.failures}
    assert ("range", "user_ctr_7d") in failed
    assert ("not_null", "user_clicks_7d") in failed
    assert ("present_with_denominator", "user_ctr_7d") in failed
    assert runner.build_docs().exists()


def test_training_set_suite_flags_a_broken_join(worlds: dict[str, World]) -> None:
    training_set = worlds["control"].training_set
    runner = Runner()
    assert quality.check_training_set(runner, training_set).passed
    broken = dataset.TrainingSet(
        training_set.frame.assign(**{f.name: None for f in contract.AD_DAILY.features}),
        training_set.task, training_set.service, training_set.features,
        training_set.splits, training_set.labels,
    )  # fmt: skip
    result = quality.check_training_set(runner, broken)
    assert [(c.check, c.feature) for c in result.failures] == [("coverage", "ad_impressions_1d")]


def test_the_spark_engine_runs_the_same_suites_with_the_same_answers(
    worlds: dict[str, World], feature_map: FeatureMap, spark
) -> None:
    from adstack.validate import spark_frame

    reference = drift.reference_profile(
        worlds["control"].rows_between(DRIFT_DAY, 99), "ctr", feature_map
    )
    # A quarter of the inputs and the device: on Spark every expectation is a job.
    reference.columns = [
        c for i, c in enumerate(reference.columns) if i % 4 == 0 or c.name == "device"
    ]
    current = worlds["device"].rows_between(DRIFT_DAY, 99)
    on_pandas = drift.run(Runner(), reference, current)
    assert "device" in on_pandas.drifted
    frame = spark_frame(spark, current, reference)
    on_spark = drift.run(Runner(), reference, frame)
    assert on_spark.drifted == on_pandas.drifted
    for ours, theirs in zip(on_spark.features, on_pandas.features, strict=True):
        assert ours.psi == pytest.approx(theirs.psi, abs=1e-9), ours.feature
        assert ours.ks == pytest.approx(theirs.ks, abs=1e-9), ours.feature
        assert ours.current_mean == pytest.approx(theirs.current_mean), ours.feature
    data = worlds["control"].root / "data"
    for spec in (contract.USER_DAILY, contract.AD_PROFILE):
        result = quality.check_view(Runner(), data, spec, END, engine="spark", spark=spark)
        assert result.passed, [c.describe() for s in result.suites for c in s.failures]


def test_validate_command_exits_non_zero_and_says_what_failed_by_how_much(
    worlds: dict[str, World], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from adstack.cli import app

    root = worlds["control"].root
    point_settings_at(monkeypatch, root, root / "feature_repo", redis_url)
    fresh = CliRunner().invoke(app, ["validate", "--suite", "quality", "--as-of", END.isoformat()])
    assert fresh.exit_code == 0, fresh.output
    summary = json.loads((root / "reports" / "validation" / "summary.json").read_text())
    assert summary["passed"] and len(summary["quality"]) == len(contract.VIEWS)
    assert (root / "reports" / "validation" / "data_docs" / "index.html").exists()
    week_later = (END + timedelta(days=7)).isoformat()
    stale = CliRunner().invoke(app, ["validate", "--suite", "quality", "--as-of", week_later])
    assert stale.exit_code == 1
    # One line per failure: the view, the check, what was observed and what was allowed.
    assert "quality_user_daily_partitions: date freshness: observed 2026-03-10" in stale.output
    assert "allowed min_value=2026-03-15" in stale.output
    bad = CliRunner().invoke(app, ["validate", "--suite", "nonsense"])
    assert bad.exit_code == 2 and "unknown suites" in bad.output
    get_settings.cache_clear()
