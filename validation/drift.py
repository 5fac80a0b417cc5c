"""Distribution drift of a model's inputs between its training rows and current rows.

The inputs come from the model manifest's feature map: dense features are compared as
numbers, vocabulary features (strings, hour, position) as categories; hashed ids are
not compared (their aggregates are). The reference is the profile written when the model
was trained (:func:`reference_profile`) from the last days of its training set, the
traffic most like the day that follows, not the pooled train split.

Some inputs differ between any later day and that reference without anything having
drifted; they are reported apart, with the reason, and never fail the suites
(:func:`not_judged`): the day of week (one day of traffic is one weekday), ages (they
grow by a day each day) and windows longer than the log the reference rows had (still
filling in: "warming up").

Two suites run per model:

- ``drift_<task>_<check>``, GX expectations on the current rows, one suite per check:
  KL divergence against the reference histogram, quantiles inside the reference's mass
  bands, mean and stdev near the reference's, and the null fraction;
- ``drift_<task>_statistics``, GX expectations on a table with one row per input
  holding the PSI and KS statistics computed by :mod:`validation.profile`.

A feature has drifted when at least two of its checks fail (``MIN_FAILED_CHECKS``). The
thresholds are effect sizes, not p-values: with the tens of thousands of rows a check
sees, a test of equality would flag every harmless wiggle. Each input's limits are the
larger of the threshold and a multiple of what its statistic does between the
reference's own days (``day_spread``): an input computed once a day per advertiser
holds a few dozen values a day and moves far more from day to day than one computed
per impression. False alarms and detections on next days: ``bench/validation.py``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from artifact.feature_map import HASH, FeatureMap
from feature_repo import contract
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


def not_judged(feature_map: FeatureMap, history: timedelta | None) -> dict[str, str]:
    """Model inputs the drift suites leave out, with the reason. ``history`` is how much
    log the reference's earliest row had (None: unknown, no window is judged warming)."""
    reasons = {}
    for name, _ in model_inputs(feature_map):
        window = None if history is None else contract.warming_up(name, history)
        if name in contract.CALENDAR_DAY_FEATURES:
            reasons[name] = "calendar: one day of traffic is one weekday, the reference several"
        elif name in contract.AGE_FEATURES:
            reasons[name] = "an age: it grows by a day each day, so each day differs"
        elif window is not None and history is not None:
            reasons[name] = (
                f"warming up: its {window.label} window is longer than the "
                f"{history / timedelta(days=1):.1f} days of log the reference rows had"
            )
    return reasons


@dataclass
class Reference:
    task: str
    rows: int
    columns: list[ColumnProfile]
    prediction: ColumnProfile | None = None
    # Inputs not profiled and never judged, with the reason (see not_judged).
    not_judged: dict[str, str] = field(default_factory=dict)
    # Per input, how much its statistics move between the reference's own days, each day
    # against the others (see day_spread); the checks allow a multiple of that.
    spread: dict[str, dict[str, Any]] = field(default_factory=dict)
    days: int = 0  # whole days the spread was measured on
    # The profiled rows' first and last instants and where they came from.
    window: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "rows": self.rows,
            "columns": [c.as_dict() for c in self.columns],
            "prediction": self.prediction.as_dict() if self.prediction else None,
            "not_judged": dict(self.not_judged),
            "spread": self.spread,
            "days": self.days,
            "window": dict(self.window),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        prediction = data.get("prediction")
        return cls(
            data["task"],
            data["rows"],
            [ColumnProfile.from_dict(c) for c in data["columns"]],
            ColumnProfile.from_dict(prediction) if prediction else None,
            dict(data.get("not_judged", {})),
            dict(data.get("spread", {})),
            int(data.get("days", 0)),
            dict(data.get("window", {})),
        )

    def write(self, directory: Path) -> Path:
        path = directory / REFERENCE_FILE
        path.write_text(json.dumps(self.as_dict()))
        return path

    @classmethod
    def read(cls, directory: Path) -> Reference:
        return cls.from_dict(json.loads((directory / REFERENCE_FILE).read_text()))


def _profile(name: str, kind: str, values: Any) -> ColumnProfile:
    if kind == NUMERIC:
        return profiles.numeric_profile(name, values)
    return profiles.categorical_profile(name, values)


def profile_columns(
    frame: pd.DataFrame, feature_map: FeatureMap, skip: Any = ()
) -> list[ColumnProfile]:
    """A profile of each model input of ``feature_map`` in ``frame``, but those in
    ``skip``."""
    return [
        _profile(name, kind, frame[name])
        for name, kind in model_inputs(feature_map)
        if name not in skip
    ]


def reference_profile(
    frame: pd.DataFrame,
    task: str,
    feature_map: FeatureMap,
    predictions: np.ndarray | None = None,
    history: timedelta | None = None,
) -> Reference:
    """Profile ``frame`` (training rows as Feast returned them) on the inputs of a
    ``task`` model with ``feature_map``, leaving out the inputs :func:`not_judged`
    names; ``history`` is how much log the frame's earliest row had."""
    skipped = not_judged(feature_map, history)
    columns = profile_columns(frame, feature_map, skip=skipped)
    prediction = None
    if predictions is not None:
        prediction = profiles.numeric_profile(PREDICTION, predictions)
    days = whole_days(frame)
    spread = day_spread(columns, days) if len(days) >= MIN_DAYS else {}
    return Reference(
        task, len(frame), columns, prediction, skipped, spread, len(days) if spread else 0
    )


# The reference's days measure how much a statistic moves from one undrifted day to the
# next (its root mean square over the days, each against the others). A check allows
# that many times it, and never less than the threshold: a signed difference (mean,
# quantile, log stdev ratio) NULL_SIGNED times, about the 1 in 10,000 tail of a normal
# difference; a divergence (PSI, KS, KL) NULL_DIVERGENCE times, about the 0.1% tail of a
# chi-square with 9 degrees of freedom (PSI on deciles) relative to its RMS. Both are
# widened by small_sample_factor: an RMS over a few days is itself a rough estimate.
MIN_DAYS = 3
# An input has drifted when at least this many of its checks fail (of up to seven:
# nulls, mean, stdev, quantiles, KL, PSI, KS). On undrifted next days of simulated logs
# single checks of various inputs fail; real shifts, and a feature stuck at its fill
# value, fail several.
MIN_FAILED_CHECKS = 2
NULL_SIGNED = 4.0
NULL_DIVERGENCE = 3.0
NULL_TAIL = 1e-3


def small_sample_factor(days: int) -> float:
    """How much wider a limit set from the RMS over ``days`` days must be than one set
    from the statistic's true spread to keep the same tail: Student's t quantile with
    ``days - 1`` degrees of freedom over the normal one, at NULL_TAIL (two-sided). 2.1
    for 6 days, 1.3 for 14, 1.0 without days (no spread: the thresholds alone)."""
    if days < 2:
        return 1.0
    level = 1 - NULL_TAIL / 2
    return float(student_t.ppf(level, days - 1) / norm.ppf(level))


def null_multiples(days: int) -> tuple[float, float]:
    """The multiples of a statistic's day-to-day RMS a check allows (signed,
    divergence), for a spread measured over ``days`` days."""
    factor = small_sample_factor(days)
    return NULL_SIGNED * factor, NULL_DIVERGENCE * factor


TIME = "event_timestamp"


def whole_days(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The frame's UTC days holding at least half the rows of its median day (the partial
    first and last days of a log are left out)."""
    if TIME not in frame.columns or frame.empty:
        return []
    day = pd.to_datetime(frame[TIME], utc=True).dt.floor("D")
    sizes = day.value_counts()
    kept = sizes[sizes >= 0.5 * sizes.median()].index
    return [frame[day == d] for d in sorted(kept)]


def day_spread(columns: list[ColumnProfile], days: list[pd.DataFrame]) -> dict[str, dict]:
    """For each profiled input, how far each day sits from a profile of the other days
    (leave one day out), as root mean squares over the days: of its PSI, KS and KL, of
    its mean minus the others' (``mean``), of the log of its stdev over the others'
    (``stdev``) and of each quantile minus the others' (``quantiles``); and the largest
    null fraction of a day (``null``)."""
    spread: dict[str, dict[str, Any]] = {}
    for p in columns:
        seen: dict[str, list] = {k: [] for k in ("psi", "ks", "kl", "null", "mean", "stdev")}
        quantiles: dict[str, list[float]] = {str(q): [] for q in profiles.QUANTILES}
        for i, day in enumerate(days):
            rest = pd.concat([d[p.name] for j, d in enumerate(days) if j != i])
            others = _profile(p.name, p.kind, rest)
            stats = profiles.current_stats(day[[p.name]], [others])[p.name]
            seen["psi"].append(profiles.psi(others, stats))
            seen["ks"].append(profiles.ks(others, stats))
            seen["kl"].append(kl_divergence(others, day[p.name]))
            seen["null"].append(stats.null_fraction)
            if p.kind != NUMERIC or others.mean is None or stats.mean is None:
                continue
            seen["mean"].append(stats.mean - others.mean)
            if stats.std and others.std:
                seen["stdev"].append(np.log(stats.std / others.std))
            present = pd.to_numeric(day[p.name], errors="coerce").dropna().to_numpy()
            if len(present):
                for q in quantiles:
                    value = float(np.quantile(present, float(q), method="inverted_cdf"))
                    quantiles[q].append(value - others.quantiles[q])
        entry: dict[str, Any] = {}
        for k, values in seen.items():
            finite = [float(v) for v in values if v is not None and np.isfinite(v)]
            if finite:
                entry[k] = max(finite) if k == "null" else _rms(finite)
        if all(quantiles.values()):
            entry["quantiles"] = {q: _rms(v) for q, v in quantiles.items()}
        spread[p.name] = entry
    return spread


def _rms(values: list[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def kl_divergence(
    p: ColumnProfile, values: pd.Series, tail: float = Thresholds.kl_tail_weight
) -> float | None:
    """KL divergence of ``values`` from the profile's histogram (numeric) or shares
    (categorical), as the GX expectation computes it: values outside the reference's
    edges or top values are weighed against the tail holdout."""
    if p.kind == CATEGORICAL:
        if not p.weights:
            return None
        text = profiles.labels(values).dropna()
        if text.empty:
            return None
        observed = text.value_counts(normalize=True)
        shares, holdout = _categorical_partition(p, tail)
        expected = pd.Series(shares)
        unseen = observed.index.difference(expected.index)
        qk = pd.concat([expected * (1 - holdout) if len(unseen) else expected,
                        pd.Series(holdout / max(len(unseen), 1), index=unseen)])  # fmt: skip
        pk = observed.reindex(qk.index).fillna(0.0)
        return _kl(pk.to_numpy(dtype=float), qk.to_numpy(dtype=float))
    if len(p.histogram_edges) < 2:
        return None
    present = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if not len(present):
        return None
    edges = np.asarray(p.histogram_edges)
    counts, _ = np.histogram(present, edges)
    below, above = np.sum(present < edges[0]), np.sum(present > edges[-1])
    pk = np.concatenate([[below], counts, [above]]) / len(present)
    qk = np.concatenate([[tail / 2], np.asarray(p.histogram_weights) * (1 - tail), [tail / 2]])
    return _kl(pk, qk)


def _kl(pk: np.ndarray, qk: np.ndarray) -> float:
    """sum p log(p / q) over the bins where p > 0 (q is never 0 there: holdouts)."""
    present = pk > 0
    return float(np.sum(pk[present] * np.log(pk[present] / np.maximum(qk[present], 1e-300))))


def distribution_expectations(
    columns: list[ColumnProfile],
    thresholds: Thresholds,
    spread: dict[str, dict[str, Any]] | None = None,
    days: int = 0,
) -> list[gxe.Expectation]:
    """The checks of each input: its thresholds, widened to what the input's statistics
    do between the reference's own undrifted days (``spread`` over ``days`` days, see
    day_spread and null_multiples)."""
    signed, divergence = null_multiples(days)
    checks: list[gxe.Expectation] = []
    for p in columns:
        name = p.name
        seen = (spread or {}).get(name, {})
        checks.append(
            check(
                gxe.ExpectColumnValuesToNotBeNull(
                    column=name,
                    mostly=max(
                        0.0,
                        round(
                            1
                            - max(p.null_fraction, seen.get("null", 0.0))
                            - thresholds.null_increase,
                            6,
                        ),
                    ),  # fmt: skip
                ),
                "null_fraction",
                name,
            )
        )
        kl = max(thresholds.kl, divergence * seen.get("kl", 0.0))
        if p.kind == CATEGORICAL:
            if p.weights:
                checks.append(_categorical_kl(p, thresholds.kl_tail_weight, kl))
            continue
        if p.mean is None or p.std is None:
            continue
        shift = max(thresholds.mean_shift * p.std, signed * seen.get("mean", 0.0), 1e-9)
        checks.append(
            check(
                gxe.ExpectColumnMeanToBeBetween(
                    column=name, min_value=p.mean - shift, max_value=p.mean + shift
                ),
                "mean",
                name,
            )
        )
        low, high = thresholds.stdev_ratio
        ratio = float(np.exp(signed * seen.get("stdev", 0.0)))
        checks.append(
            check(
                gxe.ExpectColumnStdevToBeBetween(
                    column=name,
                    min_value=p.std * min(low, 1 / ratio),
                    max_value=max(p.std * max(high, ratio), 1e-9),
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
                        "value_ranges": [
                            _band(p, str(q), seen.get("quantiles", {}).get(str(q)), signed)
                            for q in profiles.QUANTILES
                        ],
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
                        threshold=kl,
                        tail_weight_holdout=thresholds.kl_tail_weight,
                    ),
                    "kl_divergence",
                    name,
                )
            )
    return checks


def _band(p: ColumnProfile, q: str, moved: float | None, multiple: float) -> list[float]:
    """The quantile's band, widened to ``multiple`` times how far a day's quantile moves
    from the other days' (``moved``, an RMS) on either side of the reference quantile."""
    low, high = p.bands[q]
    if moved is None:
        return [low, high]
    centre = p.quantiles[q]
    return [min(low, centre - multiple * moved), max(high, centre + multiple * moved)]


def _categorical_partition(p: ColumnProfile, tail: float) -> tuple[dict[str, float], float]:
    """The reference's top values with their shares among them, and the holdout weight
    of every other value: the ``OTHER`` share, at least the tail holdout."""
    known = {k: v for k, v in p.weights.items() if k != profiles.OTHER}
    total = sum(known.values())
    holdout = max(p.weights.get(profiles.OTHER, 0.0), tail)
    return {k: v / total for k, v in known.items()}, holdout


def _categorical_kl(p: ColumnProfile, tail: float, threshold: float) -> gxe.Expectation:
    """Values outside the reference's top values share the ``OTHER`` weight (at least
    the tail holdout), so a rare or new value is not an infinite divergence."""
    shares, holdout = _categorical_partition(p, tail)
    return check(
        gxe.ExpectColumnKLDivergenceToBeLessThan(
            column=p.name,
            partition_object={"values": list(shares), "weights": list(shares.values())},
            threshold=threshold,
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
        return len(self.failed_checks) >= MIN_FAILED_CHECKS


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
    not_judged: dict[str, str] = field(default_factory=dict)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def passed(self) -> bool:
        """No input drifted and no check errored (a single failed check of an input is
        in the suites' results but is not drift: see MIN_FAILED_CHECKS)."""
        errored = any(c.error for s in self.suites for c in s.checks)
        return not self.drifted and not errored

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "passed": self.passed,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "drifted": self.drifted,
            "features": [asdict(f) | {"drifted": f.drifted} for f in self.features],
            "not_judged": dict(self.not_judged),
            "suites": [s.as_dict() for s in self.suites],
        }


STATISTICS = ("psi", "ks")


def statistics_table(
    columns: list[ColumnProfile],
    current: dict[str, profiles.CurrentStats],
    thresholds: Thresholds | None = None,
    spread: dict[str, dict[str, Any]] | None = None,
    days: int = 0,
) -> pd.DataFrame:
    """One row per input: its PSI and KS, each input's limit for them (the threshold, or
    the divergence multiple of null_multiples(days) times the statistic's RMS over the
    reference's days if more) and the statistic as a share of its limit
    (``psi_of_limit``, what the suite checks)."""
    thresholds = thresholds or Thresholds()
    _, divergence = null_multiples(days)
    table = pd.DataFrame(
        {
            "feature": [p.name for p in columns],
            "psi": [profiles.psi(p, current[p.name]) for p in columns],
            "ks": [profiles.ks(p, current[p.name]) for p in columns],
        }
    ).astype({"psi": "float64", "ks": "float64"})
    for statistic in STATISTICS:
        limit = [
            max(getattr(thresholds, statistic),
                divergence * (spread or {}).get(p.name, {}).get(statistic, 0.0))
            for p in columns
        ]  # fmt: skip
        table[f"{statistic}_limit"] = np.asarray(limit, dtype=np.float64)
        table[f"{statistic}_of_limit"] = table[statistic] / table[f"{statistic}_limit"]
    return table


def statistics_expectations() -> list[gxe.Expectation]:
    """Each statistic at most its limit (``<statistic>_of_limit`` of statistics_table)."""
    return [
        check(gxe.ExpectColumnValuesToBeBetween(column=f"{s}_of_limit", max_value=1.0), s)
        for s in STATISTICS
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
    for expectation in distribution_expectations(
        columns, thresholds, reference.spread, reference.days
    ):
        by_check.setdefault((expectation.meta or {})["check"], []).append(expectation)
    distributions = [
        runner.validate(f"{name}_{kind}", expectations, frame)
        for kind, expectations in by_check.items()
    ]
    table = statistics_table(columns, stats, thresholds, reference.spread, reference.days)
    statistics = runner.validate(
        f"{name}_statistics", statistics_expectations(), table, complete=True
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
        {p.name: p for p in columns}, stats, dict(reference.not_judged),
    )  # fmt: skip


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)
