"""Reference profiles and the drift statistics computed from them.

A model's reference profile is a compact summary of the training rows it learned from,
as Feast returned them: per numeric input its null fraction, mean, stdev, the quantiles
the drift suite bounds, the cumulative distribution on a grid of its own 2% quantiles and
a histogram on its deciles; per categorical input the share of each value (the most
common ``TOP_CATEGORIES``, the rest as ``OTHER``). It is written next to the model and
travels with it through the registry, so a drift check needs no access to the training
set.

The current side is summarised on the reference's own grid, by pandas or by Spark
(:func:`current_stats`), and the two statistics we compute ourselves follow:

- population stability index over the reference deciles (values ``<=`` an edge fall in
  its bin; empty bins count as ``PSI_FLOOR``);
- the Kolmogorov-Smirnov distance ``max |F_ref(x) - F_cur(x)|`` on the reference grid
  (exact at the grid points, so at most the continuous statistic).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

GRID_LEVELS = np.linspace(0.0, 1.0, 51)
DECILE_LEVELS = np.linspace(0.1, 0.9, 9)
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# A current quantile passes when it lies between the reference's quantiles at q -/+ this
# much probability mass: a tolerance in mass, so it means the same for counts and rates.
QUANTILE_BAND = 0.05
TOP_CATEGORIES = 50
OTHER = "(other)"
PSI_FLOOR = 1e-4
NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass
class ColumnProfile:
    name: str
    kind: str  # NUMERIC or CATEGORICAL
    rows: int
    null_fraction: float
    # numeric
    mean: float | None = None
    std: float | None = None
    grid: list[float] = field(default_factory=list)
    cdf: list[float] = field(default_factory=list)
    quantiles: dict[str, float] = field(default_factory=dict)
    bands: dict[str, list[float]] = field(default_factory=dict)
    levels_grid: list[float] = field(default_factory=list)  # the value at each grid level
    histogram_edges: list[float] = field(default_factory=list)
    histogram_weights: list[float] = field(default_factory=list)
    # categorical
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def deciles(self) -> np.ndarray:
        """The reference's 10%, 20%, ..., 90% quantiles (grid levels are 2% apart)."""
        return np.asarray(self.levels_grid, dtype=np.float64)[5:50:5]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnProfile:
        return cls(**data)


def numbers(values: Any) -> np.ndarray:
    """float64 with NaN for missing, from a pandas Series or an array."""
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(values, dtype=np.float64)


def labels(values: Any) -> pd.Series:
    """Categorical values as strings (ints included), missing as None."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    text = series.astype("string")
    return text.where(text.notna(), None).astype(object)


def numeric_profile(name: str, values: Any) -> ColumnProfile:
    x = numbers(values)
    present = x[~np.isnan(x)]
    rows = len(x)
    profile = ColumnProfile(name, NUMERIC, rows, _fraction(rows - len(present), rows))
    if len(present) == 0:
        return profile
    levels_grid = np.quantile(present, GRID_LEVELS, method="inverted_cdf")
    grid = np.unique(levels_grid)
    ordered = np.sort(present)
    profile.mean = float(present.mean())
    profile.std = float(present.std(ddof=1)) if len(present) > 1 else 0.0
    profile.levels_grid = levels_grid.tolist()
    profile.grid = grid.tolist()
    profile.cdf = (np.searchsorted(ordered, grid, side="right") / len(present)).tolist()
    profile.quantiles = {
        str(q): float(np.quantile(present, q, method="inverted_cdf")) for q in QUANTILES
    }
    profile.bands = {
        str(q): [
            float(np.quantile(present, max(0.0, q - QUANTILE_BAND), method="inverted_cdf")),
            float(np.quantile(present, min(1.0, q + QUANTILE_BAND), method="inverted_cdf")),
        ]
        for q in QUANTILES
    }
    edges = np.unique(np.concatenate([[present.min()], profile.deciles, [present.max()]]))
    if len(edges) >= 2:
        counts, _ = np.histogram(present, edges)
        profile.histogram_edges = edges.tolist()
        profile.histogram_weights = (counts / counts.sum()).tolist()
    return profile


def categorical_profile(name: str, values: Any) -> ColumnProfile:
    text = labels(values)
    counts = text.value_counts(dropna=True)
    rows = len(text)
    present = int(counts.sum())
    profile = ColumnProfile(name, CATEGORICAL, rows, _fraction(rows - present, rows))
    if present:
        top = counts.iloc[:TOP_CATEGORIES]
        weights = {str(k): float(v) / present for k, v in top.items()}
        rest = present - int(top.sum())
        if rest:
            weights[OTHER] = rest / present
        profile.weights = weights
    return profile


def _fraction(part: int, whole: int) -> float:
    return float(part) / whole if whole else 0.0


@dataclass
class CurrentStats:
    """One current column summarised on its reference's grid."""

    rows: int
    nulls: int
    mean: float | None = None
    std: float | None = None
    cdf: list[float] = field(default_factory=list)  # on the reference grid
    weights: dict[str, float] = field(default_factory=dict)  # categorical shares

    @property
    def null_fraction(self) -> float:
        return _fraction(self.nulls, self.rows)


def current_stats(frame: Any, profiles: list[ColumnProfile]) -> dict[str, CurrentStats]:
    """Summaries of ``frame``'s columns (pandas or Spark) on the profiles' grids."""
    if isinstance(frame, pd.DataFrame):
        return {p.name: _pandas_stats(frame[p.name], p) for p in profiles}
    return _spark_stats(frame, profiles)


def _pandas_stats(column: pd.Series, profile: ColumnProfile) -> CurrentStats:
    if profile.kind == CATEGORICAL:
        text = labels(column)
        counts = text.value_counts(dropna=True)
        present = int(counts.sum())
        stats = CurrentStats(len(text), len(text) - present)
        stats.weights = _fold(counts, profile, present)
        return stats
    x = numbers(column)
    present = x[~np.isnan(x)]
    stats = CurrentStats(len(x), len(x) - len(present))
    if len(present):
        stats.mean = float(present.mean())
        stats.std = float(present.std(ddof=1)) if len(present) > 1 else 0.0
        ordered = np.sort(present)
        stats.cdf = (
            np.searchsorted(ordered, np.asarray(profile.grid), side="right") / len(present)
        ).tolist()
    return stats


def _fold(counts: pd.Series, profile: ColumnProfile, present: int) -> dict[str, float]:
    """Shares of the reference's values; every other value counts as ``OTHER``."""
    if not present:
        return {}
    known = {k for k in profile.weights if k != OTHER}
    weights: dict[str, float] = {}
    other = 0
    for value, count in counts.items():
        if str(value) in known:
            weights[str(value)] = int(count) / present
        else:
            other += int(count)
    if other:
        weights[OTHER] = other / present
    return weights


def _spark_stats(frame: Any, profiles: list[ColumnProfile]) -> dict[str, CurrentStats]:
    """One pass for every numeric column (counts, moments and the CDF on the grid), one
    grouped count per categorical column."""
    from pyspark.sql import functions as F

    numeric = [p for p in profiles if p.kind == NUMERIC]
    aggregates = [F.count(F.lit(1)).alias("__rows")]
    for i, p in enumerate(numeric):
        column = F.col(p.name).cast("double")
        aggregates += [
            F.count(column).alias(f"n{i}"),
            F.mean(column).alias(f"m{i}"),
            F.stddev_samp(column).alias(f"s{i}"),
        ]
        aggregates += [
            F.sum(F.when(column <= float(g), 1).otherwise(0)).alias(f"c{i}_{j}")
            for j, g in enumerate(p.grid)
        ]
    row = frame.agg(*aggregates).first().asDict()
    rows = int(row["__rows"])
    out: dict[str, CurrentStats] = {}
    for i, p in enumerate(numeric):
        present = int(row[f"n{i}"])
        stats = CurrentStats(rows, rows - present)
        if present:
            stats.mean = float(row[f"m{i}"])
            stats.std = float(row[f"s{i}"] or 0.0)
            stats.cdf = [int(row[f"c{i}_{j}"]) / present for j in range(len(p.grid))]
        out[p.name] = stats
    for p in profiles:
        if p.kind != CATEGORICAL:
            continue
        counted = (
            frame.select(F.col(p.name).cast("string").alias("v")).groupBy("v").count().toPandas()
        )
        missing = int(counted.loc[counted["v"].isna(), "count"].sum())
        counts = counted.dropna().set_index("v")["count"]
        stats = CurrentStats(rows, missing)
        stats.weights = _fold(counts, p, rows - missing)
        out[p.name] = stats
    return out


def psi(profile: ColumnProfile, current: CurrentStats) -> float | None:
    """Population stability index, sum over bins of ``(c - r) * ln(c / r)``."""
    if profile.kind == CATEGORICAL:
        keys = sorted(set(profile.weights) | set(current.weights))
        ref = np.array([profile.weights.get(k, 0.0) for k in keys])
        cur = np.array([current.weights.get(k, 0.0) for k in keys])
    else:
        if not profile.grid or not current.cdf:
            return None
        grid = np.asarray(profile.grid)
        edges = np.unique(profile.deciles)
        ref_cdf = np.interp(edges, grid, profile.cdf)
        cur_cdf = np.interp(edges, grid, current.cdf)
        # Edges are grid points, so the interpolation only picks exact grid values.
        ref = np.diff(np.concatenate([[0.0], ref_cdf, [1.0]]))
        cur = np.diff(np.concatenate([[0.0], cur_cdf, [1.0]]))
    if len(ref) == 0 or len(cur) == 0 or not cur.sum():
        return None
    ref, cur = np.maximum(ref, PSI_FLOOR), np.maximum(cur, PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks(profile: ColumnProfile, current: CurrentStats) -> float | None:
    """Kolmogorov-Smirnov distance on the reference grid (numeric columns only)."""
    if profile.kind != NUMERIC or not profile.cdf or not current.cdf:
        return None
    return float(np.max(np.abs(np.asarray(profile.cdf) - np.asarray(current.cdf))))
