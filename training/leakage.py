"""The leakage audit: every joined feature recomputed from the raw events.

For sampled training rows, each batch feature is recomputed here with numpy straight
from the canonical events, sharing no code with the Spark job or Feast, and must equal
what ``get_historical_features`` returned. The recomputation follows the contract's
time semantics and the views' refresh cadence:

- a daily row for window end ``E`` (UTC midnight) counts attributed events with
  ``E - window <= t < E``; the row the join should pick is the newest ``E`` at or before
  the row's instant, within the view's TTL, among the window ends the batch job wrote,
  for which the entity had activity in the 31 days before ``E`` (the job keeps no rows
  after that); no such ``E`` means every feature of the view is missing;
- clicks count within ``CLICK_WINDOW`` of their impression and conversions within
  ``ATTRIBUTION_WINDOW`` of their click, at their own time; spend is billed at the click
  (CPC) or the conversion (CPA);
- profiles hold the newest catalog row stamped at or before the instant.

A feature that saw the row's own outcome, or any event at or after the row's instant,
differs from this recomputation. :func:`leaky_features` builds the counterfactual: the
same features over the whole log, the row's own outcome included, to measure how much
such a leak would flatter offline AUC.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core import events, units
from core.context import PREFIX, declared, impressions_table
from feature_repo import contract
from training.dataset import TrainingSet
from training.train import train_and_evaluate

if TYPE_CHECKING:
    from training.train import TrainConfig

DAY = units.MICROS_PER_DAY
ACTIVITY_DAYS = contract.LONGEST_BATCH_WINDOW.days + 1
COUNT_MEASURES = ("impressions", "clicks", "conversions")


def _span(window: timedelta) -> int:
    return window // timedelta(microseconds=1)


def attributed_events(data_root: Path) -> pd.DataFrame:
    """One row per impression, attributed click and attributed conversion, at its own
    time: ts, user_id, ad_id, campaign_id, advertiser_id, category, the context fields
    some group-by keys on (``ctx_<name>``), the three counts, spend."""

    def read(table: events.Table, columns: list[str]) -> pd.DataFrame:
        return events.read_table(table, events.events_root(data_root), columns).to_pandas()

    ads = read(events.ADS, ["ad_id", "campaign_id", "advertiser_id", "category", "bid_type"])
    ads = ads.drop_duplicates("ad_id", keep="last")
    context_keys = list(
        dict.fromkeys(k for g in contract.GROUP_BYS for k in g.keys if k.startswith(PREFIX))
    )
    shown = (
        events.read_table(
            impressions_table(declared(data_root)),
            events.events_root(data_root),
            ["impression_id", "event_timestamp", "user_id", "ad_id", "price_paid", *context_keys],
        )
        .to_pandas()
        .merge(ads, on="ad_id")
    )
    shown["shown_at"] = units.series_micros(shown.pop("event_timestamp"))
    shown["price"] = shown.pop("price_paid").fillna(0.0)
    clicks = read(events.CLICKS, ["impression_id", "event_timestamp"])
    clicks["ts"] = units.series_micros(clicks.pop("event_timestamp"))
    clicked = clicks.merge(shown, on="impression_id")
    gap = clicked["ts"] - clicked["shown_at"]
    clicked = clicked[(gap >= 0) & (gap <= _span(contract.CLICK_WINDOW))]
    conversions = read(events.CONVERSIONS, ["impression_id", "event_timestamp"])
    conversions["ts"] = units.series_micros(conversions.pop("event_timestamp"))
    converted = conversions.merge(
        clicked[["impression_id", "ts"]].rename(columns={"ts": "clicked_at"}), on="impression_id"
    ).merge(shown, on="impression_id")
    gap = converted["ts"] - converted["clicked_at"]
    converted = converted[(gap >= 0) & (gap <= _span(contract.ATTRIBUTION_WINDOW))]
    keys = ["user_id", "ad_id", "campaign_id", "advertiser_id", "category", *context_keys]
    parts = []
    for frame, at, kind, billed in (
        (shown, "shown_at", "impressions", None),
        (clicked, "ts", "clicks", "CPC"),
        (converted, "ts", "conversions", "CPA"),
    ):
        part = frame[keys].copy()
        part["ts"] = frame[at].to_numpy()
        for measure in COUNT_MEASURES:
            part[measure] = np.int64(measure == kind)
        part["spend"] = np.where(frame["bid_type"] == billed, frame["price"], 0.0)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


class WindowSums:
    """Sums of measures per entity over ``[lo, hi)``, answered for many queries at once.

    Events are sorted by (entity code, time); a query is two binary searches into the
    packed key and a difference of cumulative sums.
    """

    def __init__(self, frame: pd.DataFrame, keys: list[str], measures: list[str]) -> None:
        self.keys = keys
        self.codes = frame[keys].drop_duplicates().reset_index(drop=True)
        self.codes["_code"] = np.arange(len(self.codes), dtype=np.int64)
        code = frame[keys].merge(self.codes, on=keys, how="left")["_code"].to_numpy()
        ts = frame["ts"].to_numpy(dtype=np.int64)
        # Times are replaced by their rank among the distinct event times, so the
        # composite (code, time rank) fits in 63 bits for any realistic log.
        self.times = np.unique(ts)
        self.shift = int(len(self.times) + 1).bit_length()
        if int(len(self.codes)).bit_length() + self.shift > 62:
            raise ValueError("too many entities and event times for the audit's packed keys")
        composite = (code << self.shift) + np.searchsorted(self.times, ts)
        order = np.argsort(composite, kind="stable")
        self.composite = composite[order]
        self.sums = {
            m: np.r_[0.0, np.cumsum(frame[m].to_numpy(dtype=np.float64)[order])] for m in measures
        }
        self.order = order

    def query_codes(self, queries: pd.DataFrame) -> np.ndarray:
        """Entity code per query row; -1 for entities without events."""
        merged = queries[self.keys].merge(self.codes, on=self.keys, how="left")["_code"]
        return merged.fillna(-1).to_numpy(dtype=np.int64)

    def bounds(self, codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
        """Index range of each entity's events with ``lo <= t < hi``."""
        base = codes << self.shift
        start = np.searchsorted(self.composite, base + np.searchsorted(self.times, lo), "left")
        end = np.searchsorted(self.composite, base + np.searchsorted(self.times, hi), "left")
        end = np.maximum(start, end)
        missing = codes < 0
        start[missing], end[missing] = 0, 0
        return start, end

    def sum(self, measure: str, codes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        start, end = self.bounds(codes, lo, hi)
        totals = self.sums[measure]
        return totals[end] - totals[start]


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, np.minimum(numerator / denominator, 1.0), np.nan)


def _smoothed(num: np.ndarray, den: np.ndarray, prior: np.ndarray, strength: float) -> np.ndarray:
    posterior = np.minimum((num + prior * strength) / (den + strength), 1.0)
    return np.where(np.isnan(prior), _rate(num, den), posterior)


@dataclass
class ViewAudit:
    view: str
    features: int
    compared: int
    mismatches: int
    examples: list[dict]


class Recomputer:
    """Recomputes every batch view's features for query rows (keys and ``ts`` µs), from
    the view's declaration (``contract.GROUP_BY``) and the raw events."""

    def __init__(self, data_root: Path, window_ends: dict[str, set[int]]) -> None:
        self.data_root = data_root
        self.events = attributed_events(data_root)
        self.window_ends = window_ends  # view -> window-end days the batch job wrote
        self.shown = self.events[self.events["impressions"] > 0]
        self._sums: dict[tuple[str, ...], WindowSums] = {}
        self._distinct: dict[tuple[tuple[str, ...], str], tuple[WindowSums, np.ndarray]] = {}

    def sums(self, keys: tuple[str, ...]) -> WindowSums:
        """Every measure's running sums per entity of ``keys`` (built once per keys)."""
        if keys not in self._sums:
            # An event without a value for a key (a context field) has no entity here.
            known = self.events.dropna(subset=list(keys))
            self._sums[keys] = WindowSums(known, list(keys), [*COUNT_MEASURES, "spend"])
        return self._sums[keys]

    def _window_end(
        self,
        view: str,
        sums: WindowSums,
        codes: np.ndarray,
        ts: np.ndarray,
        measures: tuple[str, ...],
        ttl: timedelta,
        activity_days: int,
    ) -> np.ndarray:
        """The window end (µs) of the row the join should pick, or -1."""
        chosen = np.full(len(ts), -1, dtype=np.int64)
        ends = self.window_ends.get(view, set())
        floor = ts // DAY * DAY
        for back in range(ttl // timedelta(days=1) + 1):
            candidate = floor - back * DAY
            ok = (chosen < 0) & (candidate >= ts - _span(ttl))
            ok &= np.isin(candidate // DAY, list(ends))
            active = sum(
                sums.sum(m, codes, candidate - activity_days * DAY, candidate) for m in measures
            )
            chosen = np.where(ok & (active > 0), candidate, chosen)
        return chosen

    def daily(
        self,
        spec: contract.ViewSpec,
        rows: pd.DataFrame,
        windows: tuple[contract.Window, ...] = contract.BATCH_WINDOWS,
        activity_days: int = ACTIVITY_DAYS,
    ) -> pd.DataFrame:
        group = contract.GROUP_BY[spec.name]
        sums = self.sums(group.keys)
        codes = sums.query_codes(rows)
        ts = rows["ts"].to_numpy(dtype=np.int64)
        end = self._window_end(spec.name, sums, codes, ts, group.sums, spec.ttl, activity_days)
        out: dict[str, np.ndarray] = {}
        for w in windows:
            lo = end - w.days * DAY
            got = {m: sums.sum(m, codes, lo, end) for m in (*COUNT_MEASURES, "spend")}
            for a in group.aggregations:
                name = contract.feature_name(group.prefix, a.measure, w)
                if isinstance(a, contract.Sum):
                    out[name] = got[a.measure]
                elif isinstance(a, contract.Rate):
                    out[name] = self._rate(a, got, rows, lo, end, activity_days)
                elif isinstance(a, contract.Distinct):
                    out[name] = self._distinct_count(group.keys, a.column, rows, lo, end)
                else:
                    parent = self.sums(a.of)
                    total = parent.sum(a.numerator, parent.query_codes(rows), lo, end)
                    out[name] = _rate(got[a.numerator], total)
        if group.age is not None:
            first = self.shown.groupby(list(group.keys))["ts"].min().rename("_first")
            at = rows[list(group.keys)].join(first, on=list(group.keys))["_first"]
            age = (end - at.to_numpy(dtype=np.float64)) / DAY
            out[group.age.name] = np.where(age > 0, age, np.nan)
        frame = pd.DataFrame({name: out[name] for name in spec.feature_names}, index=rows.index)
        frame.loc[end < 0] = np.nan
        return frame

    def _rate(
        self,
        rate: contract.Rate,
        got: dict[str, np.ndarray],
        rows: pd.DataFrame,
        lo: np.ndarray,
        end: np.ndarray,
        activity_days: int,
    ) -> np.ndarray:
        """A raw rate, or smoothed towards the prior group's rate; the prior group has a
        row at ``end`` only with activity (in the measures its rates read) in the 31
        days before it."""
        if not rate.prior:
            return _rate(got[rate.numerator], got[rate.denominator])
        prior = self.sums(rate.prior)
        codes = prior.query_codes(rows) if set(rate.prior) <= set(rows) else np.full(len(rows), -1)
        read = {
            m
            for g in contract.GROUP_BYS
            for a in g.aggregations
            if isinstance(a, contract.Rate) and a.prior == rate.prior
            for m in (a.numerator, a.denominator)
        }
        active = np.add.reduce(
            [prior.sum(m, codes, end - activity_days * DAY, end) for m in sorted(read)]
        )
        mean = np.where(
            active > 0,
            _rate(
                prior.sum(rate.numerator, codes, lo, end),
                prior.sum(rate.denominator, codes, lo, end),
            ),
            np.nan,
        )
        return _smoothed(got[rate.numerator], got[rate.denominator], mean, rate.strength)

    def _distinct_count(
        self, keys: tuple[str, ...], column: str, rows: pd.DataFrame, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        """Distinct ``column`` values among the key's impressions in ``[lo, hi)``; each
        distinct index range is counted once (a leaky set asks the same range for every
        row)."""
        if (keys, column) not in self._distinct:
            by_key = WindowSums(self.shown.assign(one=1.0), list(keys), ["one"])
            self._distinct[(keys, column)] = (by_key, self.shown[column].to_numpy()[by_key.order])
        by_key, values = self._distinct[(keys, column)]
        start, end = by_key.bounds(by_key.query_codes(rows), lo, hi)
        ranges, inverse = np.unique(np.stack([start, end], axis=1), axis=0, return_inverse=True)
        counts = np.array([len(np.unique(values[a:b])) for a, b in ranges], dtype=np.float64)
        return counts[inverse.reshape(-1)]

    def profile(self, spec: contract.ViewSpec, rows: pd.DataFrame) -> pd.DataFrame:
        table = events.ADS if spec is contract.AD_PROFILE else events.USERS
        catalog = events.read_table(table, events.events_root(self.data_root)).to_pandas()
        catalog["_at"] = units.series_micros(catalog[table.time_column])
        key = spec.join_keys[0]
        catalog = catalog.sort_values("_at", kind="stable")
        query = rows[[key, "ts"]].reset_index().sort_values("ts", kind="stable")
        joined = (
            pd.merge_asof(
                query, catalog, left_on="ts", right_on="_at", by=key, direction="backward"
            )
            .set_index("index")
            .reindex(rows.index)
        )
        return pd.DataFrame({f.name: joined[f.source] for f in spec.features}, index=rows.index)


def batch_window_ends(data_root: Path) -> dict[str, set[int]]:
    """Window-end days (days since 1970-01-01) of every daily view's partitions."""
    ends = {}
    for spec in contract.DAILY_VIEWS:
        directory = contract.table_dir(data_root, spec.name)
        days = {
            (pd.Timestamp(p.name.removeprefix("date=")) - pd.Timestamp("1970-01-01")).days
            for p in directory.glob("date=*")
        }
        ends[spec.name] = days
    return ends


def _equal(expected: pd.Series, got: pd.Series) -> np.ndarray:
    a = pd.to_numeric(expected, errors="coerce") if expected.dtype != object else expected
    b = pd.to_numeric(got, errors="coerce") if got.dtype != object else got
    both_missing = a.isna().to_numpy() & b.isna().to_numpy()
    if a.dtype == object or b.dtype == object:
        same = (a.astype("string") == b.astype("string")).fillna(False).to_numpy()
    else:
        x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            same = np.isclose(x, y, rtol=1e-9, atol=1e-12)
    return both_missing | same


@dataclass
class AuditReport:
    rows: int
    features: int
    compared: int
    mismatches: int
    views: list[ViewAudit]

    @property
    def passed(self) -> bool:
        return self.mismatches == 0 and self.rows > 0

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "features": self.features,
            "compared": self.compared,
            "mismatches": self.mismatches,
            "passed": self.passed,
            "views": [v.__dict__ for v in self.views],
        }


def audit(
    data_root: Path, frame: pd.DataFrame, views: list[str], sample: int = 1000, seed: int = 0
) -> AuditReport:
    """Compare ``sample`` rows of a training set with the recomputation, view by view."""
    rows = (
        frame.sample(min(sample, len(frame)), random_state=seed) if len(frame) > sample else frame
    )
    rows = rows.assign(ts=units.series_micros(rows["event_timestamp"]))
    recompute = Recomputer(data_root, batch_window_ends(data_root))
    reports, compared, mismatches, total_features = [], 0, 0, 0
    for name in views:
        spec = contract.ALL_VIEWS[name]
        if spec in contract.DAILY_VIEWS:
            expected = recompute.daily(spec, rows)
        elif spec in contract.PROFILE_VIEWS:
            expected = recompute.profile(spec, rows)
        else:
            raise ValueError(f"the audit does not cover streamed view {name!r}")
        bad = 0
        examples: list[dict] = []
        for feature in spec.feature_names:
            equal = _equal(expected[feature], rows[feature])
            bad += int((~equal).sum())
            for index in np.flatnonzero(~equal)[:2]:
                if len(examples) < 10:
                    examples.append(
                        {
                            "feature": feature,
                            "impression_id": int(rows["impression_id"].iloc[index]),
                            "joined": str(rows[feature].iloc[index]),
                            "recomputed": str(expected[feature].iloc[index]),
                        }
                    )
        total_features += len(spec.feature_names)
        compared += len(rows) * len(spec.feature_names)
        mismatches += bad
        reports.append(
            ViewAudit(
                name, len(spec.feature_names), len(rows) * len(spec.feature_names), bad, examples
            )
        )
    return AuditReport(len(rows), total_features, compared, mismatches, reports)


def leaky_features(data_root: Path, frame: pd.DataFrame, views: list[str]) -> pd.DataFrame:
    """The same columns, every window of every daily view widened to the whole log and
    read after its last event, so each row sees its own outcome and the future."""
    recompute = Recomputer(data_root, {})
    first, last = int(recompute.events["ts"].min()), int(recompute.events["ts"].max())
    end = last // DAY * DAY + DAY
    recompute.window_ends = {spec.name: {end // DAY} for spec in contract.DAILY_VIEWS}
    span = (end - first) // DAY + 1
    whole = tuple(contract.Window(w.label, timedelta(days=span)) for w in contract.BATCH_WINDOWS)
    rows = frame.assign(ts=end)
    leaky = frame.copy()
    for name in views:
        spec = contract.ALL_VIEWS[name]
        if spec in contract.DAILY_VIEWS:
            values = recompute.daily(spec, rows, windows=whole, activity_days=span + 1)
            for column in spec.feature_names:
                leaky[column] = values[column].to_numpy()
    return leaky


@dataclass(frozen=True)
class LeakageGap:
    honest_auc: float
    leaky_auc: float
    model_kind: str
    test_rows: int

    @property
    def gap(self) -> float:
        return self.leaky_auc - self.honest_auc

    def as_dict(self) -> dict:
        return {**self.__dict__, "gap": self.gap}


def auc_gap(data_root: Path, training_set: TrainingSet, config: TrainConfig) -> LeakageGap:
    """Train the same model on the honest set and on its leaky twin and compare test AUC.

    The leaky twin keeps labels, splits and entity rows and replaces every daily
    aggregate with its whole-log value: what a join without time semantics would give.
    """
    views = list(dict.fromkeys(f.view for f in training_set.features))
    leaky = replace(training_set, frame=leaky_features(data_root, training_set.frame, views))
    honest_auc = train_and_evaluate(training_set, config).metrics["test"]["auc"]
    leaky_auc = train_and_evaluate(leaky, config).metrics["test"]["auc"]
    return LeakageGap(honest_auc, leaky_auc, config.model.kind, len(training_set.part("test")))
