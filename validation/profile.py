"""Reference profiles and the drift statistics computed from them.

A model's reference profile is a compact summary of the training rows it learned from,
as Feast returned them: per numeric input its null fraction, mean, stdev, the quantiles
the drift suite bounds, the cumulative distribution on a grid cut at its own 2% quantiles
and a histogram cut at its deciles; per categorical input the share of each value (the most
common ``TOP_CATEGORIES``, the rest as ``OTHER``). It is written next to the model and
travels with it through the registry, so a drift check needs no access to the training
set.

The current side is summarised on the reference's own grid, by pandas or by Spark
(:func:`current_stats`), and the two statistics we compute ourselves follow:

- population stability index over the bins cut at the reference deciles (empty bins
  count as ``PSI_FLOOR``);
- the Kolmogorov-Smirnov distance ``max |F_ref(x) - F_cur(x)|`` at the grid's cuts (exact
  there, so at most the continuous statistic).

Cuts sit halfway between a quantile and the next distinct reference value, not on the
quantile itself. Many inputs are point masses: an advertiser's daily clicks repeat on
every row of its impressions, a smoothed rate sits at its category prior without
history. Cut on the value, a 1% change of one advertiser's clicks would move its whole
mass to the next bin (a PSI of 3 measured on a world whose clicks rose 1.5%); cut in
the gap, the mass stays in its bin until it moves halfway to its neighbour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

GRID_LEVELS = np.arange(51) / 50  # exact fractions: 35 / 50, not 0.7000000000000001
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# A current quantile passes when it lies between the reference's quantiles at q -/+ this
# much probability mass: a tolerance in mass, so it means the same for counts and rates.
QUANTILE_BAND = 0.10
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
    grid: list[float] = field(default_factory=list)  # cuts for the CDF (KS)
    cdf: list[float] = field(default_factory=list)
    bins: list[float] = field(default_factory=list)  # cuts of the decile bins (PSI, plots)
    quantiles: dict[str, float] = field(default_factory=dict)
    bands: dict[str, list[float]] = field(default_factory=dict)
    levels_grid: list[float] = field(default_factory=list)  # the value at each grid level
    histogram_edges: list[float] = field(default_factory=list)
    histogram_weights: list[float] = field(default_factory=list)
    # categorical
    weights: dict[str, float] = field(default_factory=dict)

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
    ordered = np.sort(present)
    distinct = np.unique(ordered)
    levels_grid = np.quantile(ordered, GRID_LEVELS, method="inverted_cdf")
    grid = _cuts(distinct, np.unique(levels_grid))
    # Grid levels are 2% apart: every fifth is a decile.
    bins = _cuts(distinct, np.unique(levels_grid[5:50:5]))
    profile.mean = float(present.mean())
    profile.std = float(present.std(ddof=1)) if len(present) > 1 else 0.0
    profile.levels_grid = levels_grid.tolist()
    profile.grid = grid.tolist()
    profile.bins = bins.tolist()
    profile.cdf = (np.searchsorted(ordered, grid, side="right") / len(present)).tolist()
    profile.quantiles = {
        str(q): float(np.quantile(present, q, method="inverted_cdf")) for q in QUANTILES
    }

    # Bands reach halfway to the neighbouring distinct values, like the cuts.
    def quantile(level: float) -> float:
        return float(np.quantile(ordered, min(1.0, max(0.0, level)), method="inverted_cdf"))

    profile.bands = {
        str(q): [
            _halfway(distinct, quantile(q - QUANTILE_BAND), -1),
            _halfway(distinct, quantile(q + QUANTILE_BAND), +1),
        ]
        for q in QUANTILES
    }
    # The histogram's outer edges mirror its outer cuts, so the top advertiser's clicks
    # rising 1% does not land in the tail (whose weight is only the holdout).
    if len(bins):
        low = distinct[0] - (bins[0] - distinct[0])
        high = distinct[-1] + (distinct[-1] - bins[-1])
        # GX's histogram bins are closed on the left; the cuts' bins are closed on the
        # right (a value equal to a cut belongs below it). The next float up agrees.
        edges = np.unique(np.concatenate([[low], np.nextafter(bins, np.inf), [high]]))
        counts, _ = np.histogram(present, edges)
        profile.histogram_edges = edges.tolist()
        profile.histogram_weights = (counts / counts.sum()).tolist()
    return profile


def _halfway(distinct: np.ndarray, value: float, direction: int) -> float:
    """Halfway from ``value`` to its neighbouring distinct value below (-1) or above
    (+1); past the extremes, as far again as the neighbour on the other side."""
    at = int(np.searchsorted(distinct, value))
    neighbour = at + direction
    if 0 <= neighbour < len(distinct):
        return float((value + distinct[neighbour]) / 2)
    other = at - direction
    if 0 <= other < len(distinct):
        return float(value + (value - distinct[other]) / 2)
    return float(value)


def _cuts(distinct: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Halfway from each value to the next distinct reference value (the largest value
    has no cut: nothing lies above it)."""
    following = np.searchsorted(distinct, values, side="right")
    keep = following < len(distinct)
    return (values[keep] + distinct[following[keep]]) / 2


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
    """Counts and moments of every numeric column in one aggregation; the CDF at the
    cuts from one bucketing pass (Bucketizer, then a grouped count of (column, bucket)
    pairs); one grouped count per categorical column."""
    # The Spark engine only: pandas runs never load pyspark.
    from pyspark.ml.feature import Bucketizer
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
    row = frame.agg(*aggregates).first().asDict()
    rows = int(row["__rows"])
    cut = [i for i, p in enumerate(numeric) if p.grid]
    buckets: dict[tuple[int, int], int] = {}
    if cut:
        # Bucket j holds (cut[j-1], cut[j]]: splits just above each cut. Nulls become NaN,
        # which Bucketizer keeps in a bucket of its own (ignored below).
        values = frame.select(
            *[F.coalesce(F.col(numeric[i].name).cast("double"), F.lit(float("nan"))).alias(f"v{i}")
              for i in cut]
        )  # fmt: skip
        bucketizer = Bucketizer(
            splitsArray=[
                [-np.inf, *np.nextafter(np.asarray(numeric[i].grid), np.inf).tolist(), np.inf]
                for i in cut
            ],
            inputCols=[f"v{i}" for i in cut],
            outputCols=[f"b{i}" for i in cut],
            handleInvalid="keep",
        )
        pairs = bucketizer.transform(values).select(
            F.posexplode(F.array(*[F.col(f"b{i}").cast("int") for i in cut]))
        )
        for counted in pairs.groupBy("pos", "col").count().collect():
            buckets[(cut[counted["pos"]], counted["col"])] = int(counted["count"])
    out: dict[str, CurrentStats] = {}
    for i, p in enumerate(numeric):
        present = int(row[f"n{i}"])
        stats = CurrentStats(rows, rows - present)
        if present:
            stats.mean = float(row[f"m{i}"])
            stats.std = float(row[f"s{i}"] or 0.0)
            counts = np.array([buckets.get((i, j), 0) for j in range(len(p.grid))])
            stats.cdf = (np.cumsum(counts) / present).tolist()
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
        if not current.cdf:
            return None
        grid = np.asarray(profile.grid)
        edges = np.asarray(profile.bins)
        # Decile cuts are grid cuts, so the interpolation only picks exact grid values.
        ref_cdf = np.interp(edges, grid, profile.cdf)
        cur_cdf = np.interp(edges, grid, current.cdf)
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
