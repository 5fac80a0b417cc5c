"""Units: time in UTC microseconds, money in whole micros, and what is billed when.

Every timestamp adstack computes with is an int64 count of microseconds since the Unix
epoch, UTC (Parquet stores them so, with a time zone; a naive value means UTC). Every
amount of money that is summed is an int64 count of micros of the currency: integer sums
are exact in any order, so a rerun gives the same bits and batch and stream agree to the
last digit. Features divide by :data:`MONEY_MICROS` once, at the end.

The hour and the day are the feature contract's (its request-time features are
calendar features); everything else about units is here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from feature_repo.contract import MICROS_PER_DAY as MICROS_PER_DAY  # re-exported
from feature_repo.contract import MICROS_PER_HOUR as MICROS_PER_HOUR  # re-exported

MICROS_PER_SECOND = MICROS_PER_HOUR // 3_600
MONEY_MICROS = 1_000_000  # micros per unit of the currency

# What is billed when: the event at which each bid type pays its clearing price. A CPM
# ad would pay at the impression; adstack's catalog has CPC and CPA ads.
BILLED_AT = {"CPC": "click", "CPA": "conversion"}


def billed_bid_type(event: str) -> str | None:
    """The bid type whose clearing price is billed at ``event`` (impression, click,
    conversion); None when no bid type pays then."""
    return next((bid_type for bid_type, at in BILLED_AT.items() if at == event), None)


def span_micros(span: timedelta) -> int:
    """A duration in whole microseconds."""
    return span // timedelta(microseconds=1)


def instant_micros(moment: datetime) -> int:
    """An instant in UTC micros; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return span_micros(moment - datetime(1970, 1, 1, tzinfo=UTC))


def series_micros(times: pd.Series) -> np.ndarray:
    """Time-zone-aware timestamps, whatever their unit, as int64 UTC micros."""
    return times.astype("datetime64[us, UTC]").astype("int64").to_numpy()


def now_micros() -> int:
    return time.time_ns() // 1000


def micros_datetime(micros: int) -> datetime:
    """UTC micros as an aware datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))


def money_micros(amounts: np.ndarray) -> np.ndarray:
    """Amounts of the currency as int64 micros, rounded half to even (``np.round``).

    The Spark job rounds the same way with ``bround`` (:func:`core.spark.money_micros`);
    ``tests/unit/test_units.py`` holds the two to the same answers."""
    return np.round(np.asarray(amounts, dtype=np.float64) * MONEY_MICROS).astype(np.int64)
