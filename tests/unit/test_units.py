"""Units on literal values: time in UTC micros, money rounding on both engines, billing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pandas as pd

from core import units
from core.spark import money_micros as spark_money_micros


def test_instants_spans_and_series_agree() -> None:
    moment = datetime(2026, 1, 5, 13, 30, 15, 123456, tzinfo=UTC)
    expected = 1_767_619_815_123_456
    assert units.instant_micros(moment) == expected
    assert units.instant_micros(moment.replace(tzinfo=None)) == expected  # naive is UTC
    east = moment.astimezone(timezone(timedelta(hours=5)))
    assert units.instant_micros(east) == expected
    assert units.micros_datetime(expected) == moment
    assert units.span_micros(timedelta(days=1)) == units.MICROS_PER_DAY == 86_400_000_000
    series = pd.Series(pd.to_datetime([moment, moment + timedelta(hours=1)], utc=True))
    assert units.series_micros(series).tolist() == [expected, expected + units.MICROS_PER_HOUR]
    assert units.series_micros(series.astype("datetime64[ms, UTC]"))[0] == expected // 1000 * 1000


def test_money_rounds_half_to_even_on_numpy_and_spark(spark) -> None:
    amounts = [0.0000005, 0.0000015, 0.0000025, 1.2345675, 2.5e-6, 0.3, 17.0]
    ours = units.money_micros(np.array(amounts))
    assert ours.tolist()[:3] == [0, 2, 2]  # half to even, not half up
    frame = spark.createDataFrame([(a,) for a in amounts], "price double")
    theirs = [r[0] for r in frame.select(spark_money_micros(frame["price"])).collect()]
    assert theirs == ours.tolist()


def test_billing_rule() -> None:
    assert units.billed_bid_type("click") == "CPC"
    assert units.billed_bid_type("conversion") == "CPA"
    assert units.billed_bid_type("impression") is None
