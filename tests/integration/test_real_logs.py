"""The four real sample logs ingest into the canonical model (skipped when absent)."""

import pandas as pd
import pytest

from adstack.flows import ingest
from core import events

pytestmark = pytest.mark.real_logs

EXPECTED = {
    # source: (folder, impressions, clicks, conversions, ads)
    "talkingdata": ("talkingdata_sample", 100_000, 100_000, 227, 161),
    "open_bandit": ("open_bandit", 60_000, None, 0, 160),
    "avazu": ("avazu_sample", 8_087 + 480 + 432, None, 0, None),
    "criteo": ("criteo_sample", 7_200 + 409 + 391, None, 0, None),
}


@pytest.mark.parametrize("source", list(EXPECTED))
def test_real_log_ingests_every_row(source, sample_logs, tmp_path):
    folder, impressions, clicks, conversions, ads = EXPECTED[source]
    report = ingest(source, sample_logs / folder, tmp_path / "data", tmp_path / "reports")
    assert report.rows_in == impressions
    assert report.rows_quarantined == 0, report.tables["impressions"].reasons
    root = tmp_path / "data" / "events"
    written = {t: events.read_table(events.TABLES[t], root).to_pandas() for t in events.TABLES}
    assert len(written["impressions"]) == impressions
    assert written["impressions"]["impression_id"].is_unique
    if clicks is not None:
        assert len(written["clicks"]) == clicks
    assert len(written["conversions"]) == conversions
    if ads is not None:
        assert len(written["ads"]) == ads
    # Every click belongs to an impression and is not earlier than it.
    joined = written["clicks"].merge(
        written["impressions"], on="impression_id", suffixes=("", "_imp")
    )
    assert len(joined) == len(written["clicks"])
    assert (joined["event_timestamp"] >= joined["event_timestamp_imp"]).all()
    assert str(written["impressions"]["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_real_click_rates_survive_the_mapping(sample_logs, tmp_path):
    ingest("avazu", sample_logs / "avazu_sample", tmp_path / "data", tmp_path / "reports")
    root = tmp_path / "data" / "events"
    impressions = events.read_table(events.IMPRESSIONS, root).num_rows
    clicks = events.read_table(events.CLICKS, root).num_rows
    raw = pd.read_csv(sample_logs / "avazu_sample" / "train.csv", usecols=["click"])
    assert clicks / impressions == pytest.approx(raw["click"].mean(), abs=0.02)


def test_open_bandit_keeps_positions_and_propensities(sample_logs, tmp_path):
    ingest("open_bandit", sample_logs / "open_bandit", tmp_path / "data", tmp_path / "reports")
    imp = events.read_table(events.IMPRESSIONS, tmp_path / "data" / "events").to_pandas()
    assert set(imp["position"]) == {1, 2, 3}
    assert imp["logging_propensity"].between(0, 1, inclusive="right").all()
