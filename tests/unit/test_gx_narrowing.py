"""Large pandas frames are validated column group by column group: the answers must be
the ones a single whole-frame batch gives."""

from __future__ import annotations

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
import pytest

from validation import gx
from validation.gx import Runner, check


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 2_000
    impressions = rng.integers(0, 50, n).astype(float)
    frame = pd.DataFrame(
        {
            "impressions": impressions,
            "clicks": np.floor(impressions * rng.random(n)),
            "ctr": np.where(impressions > 0, 0.1, np.nan),
            "label": rng.integers(0, 2, n),
            "unread": rng.random(n),
        }
    )
    frame.loc[[3, 9, 27], "clicks"] = -1.0  # out of range
    frame.loc[[5, 11], "ctr"] = np.nan  # missing where impressions > 0
    frame.loc[5, "impressions"] = 4.0
    frame.loc[11, "impressions"] = 1.0
    frame.loc[[5, 11], "clicks"] = 0.0
    frame.loc[[40], "label"] = 3
    return frame


def _suite() -> list[gxe.Expectation]:
    return [
        check(gxe.ExpectColumnValuesToBeBetween(column="clicks", min_value=0), "range", "clicks"),
        check(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="impressions", column_B="clicks", or_equal=True
            ),
            "clicks_within_impressions",
            "clicks",
        ),
        check(
            gxe.ExpectColumnValuesToNotBeNull(
                column="ctr", row_condition="impressions>0", condition_parser="pandas"
            ),
            "present",
            "ctr",
        ),
        check(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]), "label", "label"),
        check(gxe.ExpectTableRowCountToBeBetween(min_value=10), "rows"),
        check(gxe.ExpectColumnMeanToBeBetween(column="label", max_value=0.4), "mean", "label"),
        check(gxe.ExpectColumnValuesToNotBeNull(column="absent"), "coverage", "absent"),
    ]


def _answers(result: gx.SuiteResult) -> list[tuple]:
    return sorted(
        (c.suite, c.check, c.column, c.passed, c.unexpected_percent, c.error is not None)
        for c in result.checks
    )


def test_narrowed_batches_give_the_whole_frame_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _frame()
    whole = Runner().validate("suite", _suite(), frame)
    groups = gx._by_columns(_suite(), frame)
    assert set(groups) == {
        ("clicks",), ("impressions", "clicks"), ("ctr", "impressions"), ("label",), None
    }  # fmt: skip
    assert [e.meta["check"] for e in groups[None]] == ["rows", "mean", "coverage"]

    monkeypatch.setattr(gx, "NARROW_CELLS", 0)
    narrowed = Runner().validate("suite", _suite(), frame)

    assert _answers(narrowed) == _answers(whole)
    failed = {c.check for c in narrowed.failures}
    assert failed == {"range", "present", "label", "mean", "coverage"}
    by_check = {c.check: c for c in narrowed.checks}
    assert by_check["range"].unexpected_values == [-1.0, -1.0, -1.0]
    assert by_check["coverage"].error is not None  # the missing column is reported
