import numpy as np
import pyarrow as pa
import pytest

from core import events
from pipelines.simulator import (
    PRICE_DRIFT,
    SimulationConfig,
    build_world,
    chunks_of_day,
    simulate_chunk,
)

SMALL = SimulationConfig(days=3, users=2_000, ads=200, impressions_per_day=20_000, seed=11)


def day_events(config: SimulationConfig, day: int):
    world = build_world(config)
    (chunk, size, first_id), *_ = chunks_of_day(config, day)
    return simulate_chunk(world, day, chunk, size, first_id)


def test_same_seed_same_events_and_ground_truth():
    first, second = day_events(SMALL, 1), day_events(SMALL, 1)
    assert first.impressions.equals(second.impressions)
    assert first.clicks.equals(second.clicks)
    assert first.ground_truth.equals(second.ground_truth)


def test_other_seed_other_events():
    other = SimulationConfig(**{**SMALL.__dict__, "seed": 12})
    assert not day_events(SMALL, 1).impressions.equals(day_events(other, 1).impressions)


def test_a_day_does_not_depend_on_how_many_days_are_simulated():
    longer = SimulationConfig(**{**SMALL.__dict__, "days": 5})
    a, b = day_events(SMALL, 2).impressions, day_events(longer, 2).impressions
    # Only the world's later ads differ; the first-day ids and times are the same draws.
    assert a.column("event_timestamp").equals(b.column("event_timestamp"))
    assert a.column("impression_id").equals(b.column("impression_id"))


def test_events_keep_the_canonical_schema_and_their_time_order():
    ev = day_events(SMALL, 0)
    assert ev.impressions.schema == events.IMPRESSIONS.schema
    assert ev.clicks.schema == events.CLICKS.schema
    imp = ev.impressions.to_pandas()
    assert imp["impression_id"].is_unique
    assert imp["position"].between(1, 4).all()
    assert (imp["price_paid"] <= imp["bid"]).all()
    clicks = ev.clicks.to_pandas().merge(imp, on="impression_id", suffixes=("_click", ""))
    assert len(clicks) == ev.clicks.num_rows
    assert (clicks["event_timestamp_click"] > clicks["event_timestamp"]).all()
    conversions = ev.conversions.to_pandas().merge(
        ev.clicks.to_pandas(), on="impression_id", suffixes=("", "_click")
    )
    assert len(conversions) == ev.conversions.num_rows
    assert (conversions["event_timestamp"] > conversions["event_timestamp_click"]).all()


def test_nothing_is_logged_after_the_end_of_the_simulation():
    ev = day_events(SMALL, SMALL.days - 1)
    for table in (ev.clicks, ev.conversions):
        times = table.column("event_timestamp").cast(pa.int64()).to_numpy()
        assert (times < SMALL.end_micros).all()


def test_ground_truth_stays_out_of_the_events():
    ev = day_events(SMALL, 0)
    assert not {"p_click", "p_conversion_given_click"} & set(ev.impressions.column_names)


def test_observed_ctr_matches_the_hidden_click_probability():
    ev = day_events(SimulationConfig(days=1, impressions_per_day=200_000, seed=3), 0)
    p_click = ev.ground_truth.column("p_click").to_numpy()
    observed = ev.clicks.num_rows
    expected = p_click.sum()
    # Bernoulli sum: within 4 standard deviations of its mean (late-night clicks near the
    # cut-off are the only ones the log may lose).
    assert abs(observed - expected) < 4 * np.sqrt((p_click * (1 - p_click)).sum()) + 50
    assert 0.01 < observed / p_click.size < 0.12


def test_new_ads_appear_only_after_they_are_created():
    world = build_world(SMALL)
    ev = day_events(SMALL, 2)
    imp = ev.impressions.to_pandas()
    created = world.ad_created_micros[imp["ad_id"].to_numpy() - 1]
    shown = imp["event_timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    assert (created < shown).all()
    new_ads = imp["ad_id"] > SMALL.ads
    assert new_ads.any(), "ads created during the simulation should be shown (cold start)"


def test_position_bias_lowers_ctr_down_the_slots():
    ev = day_events(SimulationConfig(days=1, impressions_per_day=200_000, seed=5), 0)
    imp = ev.impressions.to_pandas()
    imp["p_click"] = ev.ground_truth.column("p_click").to_numpy()
    by_slot = imp.groupby("position")["p_click"].mean()
    assert by_slot.is_monotonic_decreasing


@pytest.mark.parametrize("kind", ["device", "interest", "price"])
def test_drift_knob_changes_the_world_from_its_day(kind):
    config = SimulationConfig(
        days=4, impressions_per_day=50_000, seed=9, drift_day=2, drift_kind=kind
    )
    before, after = day_events(config, 1), day_events(config, 3)
    baseline = day_events(SimulationConfig(**{**config.__dict__, "drift_day": None}), 3)
    if kind == "device":

        def share(ev):
            devices = ev.impressions.column("device").to_numpy(zero_copy_only=False)
            return (devices == "mobile").mean()

        assert share(after) > share(before) + 0.1
        assert abs(share(baseline) - share(before)) < 0.02
    elif kind == "price":
        # Same requests and outcomes (the prices are drawn last), every price paid raised.
        def paid(ev):
            return ev.impressions.column("price_paid").to_numpy()

        assert np.array_equal(
            after.impressions.column("ad_id"), baseline.impressions.column("ad_id")
        )
        assert np.allclose(paid(after), paid(baseline) * PRICE_DRIFT, atol=1e-3)
        assert np.array_equal(
            paid(before),
            paid(day_events(SimulationConfig(**{**config.__dict__, "drift_day": None}), 1)),
        )
    else:
        world = build_world(config)
        boosted = max(1, config.categories // 4)

        def share(ev):
            categories = world.ad_category[ev.impressions.column("ad_id").to_numpy() - 1]
            return (categories < boosted).mean()

        assert share(after) > share(baseline) + 0.05


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        SimulationConfig(days=0)
    with pytest.raises(ValueError, match="drift_kind"):
        SimulationConfig(drift_kind="weather")  # type: ignore[arg-type]


def test_large_days_are_split_into_chunks_with_contiguous_ids():
    config = SimulationConfig(days=2, impressions_per_day=5_000, chunk_size=2_000)
    chunks = chunks_of_day(config, 1)
    assert [size for _, size, _ in chunks] == [1667, 1667, 1666]
    assert chunks[0][2] == 5_001 and chunks[1][2] == 5_001 + 1667
