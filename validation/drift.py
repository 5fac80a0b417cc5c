"""Distribution drift of a model's inputs between its training rows and current rows.

The inputs come from the model manifest's feature map: dense features are compared as
numbers, vocabulary features (strings, hour, position) as categories; hashed ids are
not compared (their aggregates are). The reference is the profile written from the
training split when the model was trained (:func:`reference_profile`).

Two suites run per model:

- ``drift_<task>_<check>``, GX expectations on the current rows, one suite per check:
  KL divergence against the reference histogram, quantiles inside the reference's mass
  bands, mean and stdev near the reference's, and the null fraction;
- ``drift_<task>_statistics``, GX expectations on a table with one row per input
  holding the PSI and KS statistics computed by :mod:`validation.profile`.

A feature has drifted when any of its checks fails. The thresholds are effect sizes, not
p-values: with the tens of thousands of rows a check sees, a test of equality would
flag every harmless wiggle. They were set with the same-distribution splits of
``tests/integration/test_validation.py`` (false-alarm rate in BENCHMARKS.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from artifact.feature_map import HASH, FeatureMap
from validation import profile as profiles
from validation.gx import Runner, SuiteResult, check
from validation.profile import CATEGORICAL, NUMERIC, ColumnProfile, CurrentStats

REFERENCE_FILE = "reference_profile.json"
PREDICTION = "prediction"


@dataclass(frozen=True)
class Thresholds:
    psi: float = 0.1
    ks: float = 0.1
    kl: float = 0.05
    # |current mean - reference mean| at most this many reference stdevs.
    mean_shift: float = 0.25
    stdev_ratio: tuple[float, float] = (0.67, 1.5)
    # The current null fraction may exceed the reference's by this much.
    null_increase: float = 0.05
    kl_tail_weight: float = 1e-3


def model_inputs(feature_map: FeatureMap) -> list[tuple[str, str]]:
    """(name, NUMERIC or CATEGORICAL) of every input the drift suites compare."""
    inputs = [(f.name, CATEGORICAL) for f in feature_map.sparse if f.kind != HASH]
    inputs += [(f.name, NUMERIC) for f in feature_map.dense]
    return inputs


@dataclass
class Reference:
    task: str
    rows: int
    columns: list[ColumnProfile]
    prediction: ColumnProfile | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "rows": self.rows,
            "columns": [c.as_dict() for c in self.columns],
            "prediction": self.prediction.as_dict() if self.prediction else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        prediction = data.get("prediction")
        return cls(
            data["task"],
            data["rows"],
            [ColumnProfile.from_dict(c) for c in data["columns"]],
            ColumnProfile.from_dict(prediction) if prediction else None,
        )

    def write(self, directory: Path) -> Path:
        path = directory / REFERENCE_FILE
        path.write_text(json.dumps(self.as_dict()))
        return path

    @classmethod
    def read(cls, directory: Path) -> Reference:
        return cls.from_dict(json.loads((directory / REFERENCE_FILE).read_text()))


def reference_profile(
    frame: pd.DataFrame,
    task: str,
    feature_map: FeatureMap,
    predictions: np.ndarray | None = None,
) -> Reference:
    """Profile ``frame`` (the training split as Feast returned it) on the inputs of a
    ``task`` model with ``feature_map``."""
    columns = [
        profiles.numeric_profile(name, frame[name])
        if kind == NUMERIC
        else profiles.categorical_profile(name, frame[name])
        for name, kind in model_inputs(feature_map)
    ]
    prediction = None
    if predictions is not None:
        prediction = profiles.numeric_profile(PREDICTION, predictions)
    return Reference(task, len(frame), columns, prediction)


def distribution_expectations(
    columns: list[ColumnProfile], thresholds: Thresholds
) -> list[gxe.Expectation]:
    checks: list[gxe.Expectation] = []
    for p in columns:
        name = p.name
        checks.append(
            check(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=name,
                    mostly=max(0.0, round(1 - p.null_fraction - thresholds.null_increase, 6)),
                ),
                "null_fraction",
                name,
            )
        )
        if p.kind == CATEGORICAL:
            if p.weights:
                checks.append(_categorical_kl(p, thresholds))
            continue
        if p.mean is None or p.std is None:
            continue
        spread = max(thresholds.mean_shift * p.std, 1e-9)
        checks.append(
            check(
                gxe.ExpectColumnMeanToBeBetween(
                    column=name, min_value=p.mean - spread, max_value=p.mean + spread
                ),
                "mean",
                name,
            )
        )
        low, high = thresholds.stdev_ratio
        checks.append(
            check(
                gxe.ExpectColumnStdevToBeBetween(
                    column=name, min_value=p.std * low, max_value=max(p.std * high, 1e-9)
                ),
                "stdev",
                name,
            )
        )
        checks.append(
            check(
                gxe.ExpectColumnQuantileValuesToBeBetween(
                    column=name,
                    quantile_ranges={
                        "quantiles": list(profiles.QUANTILES),
                        "value_ranges": [p.bands[str(q)] for q in profiles.QUANTILES],
                    },
                    # Exact on both engines: GX turns a relative error into a string,
                    # which its Spark metric then refuses.
                    allow_relative_error=False,
                ),
                "quantiles",
                name,
            )
        )
        if len(p.histogram_edges) >= 2:
            checks.append(
                check(
                    gxe.ExpectColumnKLDivergenceToBeLessThan(
                        column=name,
                        partition_object={
                            "bins": p.histogram_edges,
                            "weights": p.histogram_weights,
                        },
                        threshold=thresholds.kl,
                        tail_weight_holdout=thresholds.kl_tail_weight,
                    ),
                    "kl_divergence",
                    name,
                )
            )
    return checks


def _categorical_kl(p: ColumnProfile, thresholds: Thresholds) -> gxe.Expectation:
    """Values outside the reference's top values share the ``OTHER`` weight (at least
    the tail holdout), so a rare or new value is not an infinite divergence."""
    known = {k: v for k, v in p.weights.items() if k != profiles.OTHER}
    holdout = max(p.weights.get(profiles.OTHER, 0.0), thresholds.kl_tail_weight)
    total = sum(known.values())
    return check(
        gxe.ExpectColumnKLDivergenceToBeLessThan(
            column=p.name,
            partition_object={
                "values": list(known),
                "weights": [v / total for v in known.values()],
            },
            threshold=thresholds.kl,
            tail_weight_holdout=holdout,
        ),
        "kl_divergence",
        p.name,
    )


def _categorical_frame(frame: Any, columns: list[ColumnProfile]) -> Any:
    """Vocabulary columns as strings (hour 7 is "7"), the way the profile counted them."""
    names = [p.name for p in columns if p.kind == CATEGORICAL]
    if isinstance(frame, pd.DataFrame):
        return frame.assign(**{n: profiles.labels(frame[n]) for n in names})
    # The Spark engine only: pandas runs never load pyspark.
    from pyspark.sql import functions as F

    return frame.withColumns({n: F.col(n).cast("string") for n in names})


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    psi: float | None
    ks: float | None
    reference_mean: float | None
    current_mean: float | None
    reference_null_fraction: float
    current_null_fraction: float
    failed_checks: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.failed_checks)


@dataclass
class DriftReport:
    task: str
    reference_rows: int
    current_rows: int
    features: list[FeatureDrift]
    suites: list[SuiteResult]
    # For the plots: the reference columns and the current summaries.
    profiles: dict[str, ColumnProfile] = field(default_factory=dict, repr=False)
    current: dict[str, CurrentStats] = field(default_factory=dict, repr=False)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.suites)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "passed": self.passed,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "drifted": self.drifted,
            "features": [asdict(f) | {"drifted": f.drifted} for f in self.features],
            "suites": [s.as_dict() for s in self.suites],
        }


def statistics_table(
    columns: list[ColumnProfile], current: dict[str, profiles.CurrentStats]
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feature": [p.name for p in columns],
            "psi": [profiles.psi(p, current[p.name]) for p in columns],
            "ks": [profiles.ks(p, current[p.name]) for p in columns],
        }
    ).astype({"psi": "float64", "ks": "float64"})


def statistics_expectations(thresholds: Thresholds) -> list[gxe.Expectation]:
    return [
        check(gxe.ExpectColumnValuesToBeBetween(column="psi", max_value=thresholds.psi), "psi"),
        check(gxe.ExpectColumnValuesToBeBetween(column="ks", max_value=thresholds.ks), "ks"),
    ]


def run(
    runner: Runner,
    reference: Reference,
    current: Any,
    thresholds: Thresholds | None = None,
    name: str | None = None,
) -> DriftReport:
    """Validate ``current`` (pandas or Spark, with the model's input columns): the same
    suites on either engine."""
    thresholds = thresholds or Thresholds()
    name = name or f"drift_{reference.task}"
    columns = reference.columns
    stats = profiles.current_stats(current, columns)
    frame = _categorical_frame(current, columns)
    # One suite per kind of check: GX's cost grows faster than linearly with the size of
    # a suite (404 expectations took 33 s on 40k rows, five suites of 80 took 8 s).
    by_check: dict[str, list[gxe.Expectation]] = {}
    for expectation in distribution_expectations(columns, thresholds):
        by_check.setdefault((expectation.meta or {})["check"], []).append(expectation)
    distributions = [
        runner.validate(f"{name}_{kind}", expectations, frame)
        for kind, expectations in by_check.items()
    ]
    table = statistics_table(columns, stats)
    statistics = runner.validate(
        f"{name}_statistics", statistics_expectations(thresholds), table, complete=True
    )
    failed: dict[str, list[str]] = {p.name: [] for p in columns}
    for suite in distributions:
        for c in suite.failures:
            if c.feature:
                failed[c.feature].append(c.check)
    for c in statistics.checks:
        for row in c.failing_rows:
            failed[table["feature"].iat[row]].append(c.check)
    rows = next(iter(stats.values())).rows if stats else 0
    for suite in distributions:
        suite.rows = rows
    statistics.rows = len(table)
    features = [
        FeatureDrift(
            p.name,
            p.kind,
            _number(table["psi"].iat[i]),
            _number(table["ks"].iat[i]),
            p.mean,
            stats[p.name].mean,
            p.null_fraction,
            stats[p.name].null_fraction,
            failed[p.name],
        )
        for i, p in enumerate(columns)
    ]
    return DriftReport(
        reference.task, reference.rows, rows, features, [*distributions, statistics],
        {p.name: p for p in columns}, stats,
    )  # fmt: skip


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
