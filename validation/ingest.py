"""Great Expectations checks that every ingested batch passes, row by row.

Suites are built from the canonical schema (required columns, time column, key) plus
the few rules a schema cannot say: bids and prices non-negative, a price never above
its bid, labels in {0, 1}, a click after its impression, a conversion after its click,
ads and campaigns known to the catalog. Cross-table rules are checked on columns
derived before validation (``_impression_timestamp``, ``_ad_known``, ...), so GX sees
one frame and reports the failing row indices of each expectation.

Each expectation carries its reason in ``meta["reason"]``; :func:`failing_rows`
returns, per reason, the mask of rows that failed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from core import events


@dataclass(frozen=True)
class TimeBounds:
    """Event times outside [not_before, not_after] are rejected (clock errors, the future)."""

    not_before: pd.Timestamp
    not_after: pd.Timestamp

    @classmethod
    def default(cls, now: pd.Timestamp | None = None) -> TimeBounds:
        now = now if now is not None else pd.Timestamp.now(tz="UTC")
        # One hour of allowed clock skew for producers slightly ahead of us.
        return cls(pd.Timestamp("2000-01-01", tz="UTC"), now + pd.Timedelta(hours=1))


def _reason(expectation: gxe.Expectation, reason: str) -> gxe.Expectation:
    expectation.meta = {"reason": reason}
    return expectation


def _not_null(column: str) -> gxe.Expectation:
    return _reason(gxe.ExpectColumnValuesToNotBeNull(column=column), f"{column} is null")


def _at_least(column: str, minimum: float) -> gxe.Expectation:
    return _reason(
        gxe.ExpectColumnValuesToBeBetween(column=column, min_value=minimum),
        f"{column} below {minimum}",
    )


def _is_false(column: str, reason: str) -> gxe.Expectation:
    return _reason(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[False]), reason)


def _not_before(later: str, earlier: str, reason: str) -> gxe.Expectation:
    return _reason(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=later, column_B=earlier, or_equal=True, ignore_row_if="either_value_is_missing"
        ),
        reason,
    )


def _in_time_bounds(column: str, bounds: TimeBounds) -> gxe.Expectation:
    return _reason(
        gxe.ExpectColumnValuesToBeBetween(
            column=column, min_value=bounds.not_before, max_value=bounds.not_after
        ),
        f"{column} outside [{bounds.not_before:%Y-%m-%d}, {bounds.not_after:%Y-%m-%d %H:%M}]",
    )


def schema_expectations(table: events.Table, bounds: TimeBounds) -> list[gxe.Expectation]:
    """What the canonical schema itself says: required ids present, times sane, keys unique."""
    checks = [_not_null(column) for column in table.required()]
    checks.append(_in_time_bounds(table.time_column, bounds))
    key = "+".join(table.key)
    checks.append(_is_false("_key_seen_before", f"duplicate {key}"))
    return checks


def table_expectations(table: events.Table, bounds: TimeBounds) -> list[gxe.Expectation]:
    checks = schema_expectations(table, bounds)
    if table is events.IMPRESSIONS:
        checks += [
            _at_least("position", 1),
            _at_least("bid", 0),
            _at_least("price_paid", 0),
            _not_before("bid", "price_paid", "price_paid above bid"),
            _reason(
                gxe.ExpectColumnValuesToBeBetween(
                    column="logging_propensity", min_value=0, max_value=1, strict_min=True
                ),
                "logging_propensity outside (0, 1]",
            ),
            _is_false("_ad_unknown", "ad_id not in the ad catalog"),
        ]
    elif table is events.CLICKS:
        checks += [
            _is_false("_impression_unknown", "click of an unknown impression"),
            _not_before("event_timestamp", "_impression_timestamp", "click before its impression"),
        ]
    elif table is events.CONVERSIONS:
        checks += [
            _at_least("value", 0),
            _is_false("_click_unknown", "conversion without a click"),
            _not_before("event_timestamp", "_click_timestamp", "conversion before its click"),
        ]
    elif table is events.ADS:
        checks += [
            _at_least("bid", 0),
            _reason(
                gxe.ExpectColumnValuesToBeInSet(
                    column="bid_type", value_set=list(events.BID_TYPES)
                ),
                f"bid_type not in {list(events.BID_TYPES)}",
            ),
            _is_false("_campaign_unknown", "campaign_id not in the campaign catalog"),
        ]
    elif table is events.CAMPAIGNS:
        checks.append(_at_least("daily_budget", 0))
    return checks


def flat_log_expectations(bounds: TimeBounds) -> list[gxe.Expectation]:
    """A flat log row is an impression with its labels and its ad's catalog fields."""
    checks = [
        check
        for check in table_expectations(events.IMPRESSIONS, bounds)
        if check.meta["reason"] != "ad_id not in the ad catalog"
    ]
    checks += [
        _reason(gxe.ExpectColumnValuesToBeInSet(column=label, value_set=[0, 1]), f"{label} not 0/1")
        for label in ("click", "conversion")
    ]
    checks += [
        _not_before("click_timestamp", "event_timestamp", "click before its impression"),
        _not_before("conversion_timestamp", "click_timestamp", "conversion before its click"),
        _not_before("conversion_timestamp", "event_timestamp", "conversion before its impression"),
        _not_before("click", "conversion", "conversion without a click"),
        _at_least("conversion_value", 0),
        _reason(
            gxe.ExpectColumnValuesToBeInSet(column="bid_type", value_set=list(events.BID_TYPES)),
            f"bid_type not in {list(events.BID_TYPES)}",
        ),
    ]
    return checks


class IngestValidator:
    """One ephemeral GX context per ingest run, one suite per kind of batch."""

    def __init__(self, bounds: TimeBounds):
        self.bounds = bounds
        self._suites: dict[str, gx.ExpectationSuite] = {}

    @cached_property
    def _context(self):  # GX does not export its context type
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        return context

    @cached_property
    def _batch_definition(self):
        asset = self._context.data_sources.add_pandas("ingest").add_dataframe_asset("batch")
        return asset.add_batch_definition_whole_dataframe("whole")

    def suite(self, name: str) -> gx.ExpectationSuite:
        if name not in self._suites:
            if name == "flat_log":
                checks = flat_log_expectations(self.bounds)
            else:
                checks = table_expectations(events.TABLES[name], self.bounds)
            suite = self._context.suites.add(gx.ExpectationSuite(name=f"ingest_{name}"))
            for check in checks:
                suite.add_expectation(check)
            self._suites[name] = suite
        return self._suites[name]

    def failing_rows(self, suite_name: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per failed expectation's reason, a boolean mask over ``frame``'s rows."""
        frame = frame.reset_index(drop=True)
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(self.suite(suite_name), result_format={"result_format": "COMPLETE"})
        failures: dict[str, np.ndarray] = {}
        for check in result.results:
            reason = check.expectation_config.meta["reason"]
            if check.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"expectation '{reason}' could not run on {suite_name}: "
                    f"{check.exception_info.get('exception_message')}"
                )
            if check.success:
                continue
            mask = np.zeros(len(frame), dtype=bool)
            mask[np.asarray(check.result.get("unexpected_index_list") or [], dtype=np.int64)] = True
            failures[reason] = mask
        return failures
