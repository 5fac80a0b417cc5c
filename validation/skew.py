"""Training-serving skew: what the scorer served against what training would have seen.

The scorer logs a sample of its winners to the Redis stream ``adstack:served`` with
every feature value it assembled (``serving.service.Service.log_served``). For each
logged row this module asks Feast's offline store for the same features of the same
entities at the request instant (the point-in-time join training sets are built with)
and recomputes the request-time features through the contract's ``request_features``.
A value mismatches when exactly one side is missing, or when numbers differ by more than
``RTOL`` relative (``ATOL`` absolute), or strings differ. The report gives, per feature,
the mismatch rate and the size of the differences; the suite fails when a feature's
mismatch rate exceeds ``Thresholds.mismatch_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from core import served_log
from core.served_log import SERVED_STREAM
from feature_repo import contract
from validation.gx import Runner, SuiteResult, check

RTOL = 1e-6
ATOL = 1e-9
MAX_MISMATCH_RATE = 0.001
# Request context logged as received: recomputing them would compare a value with itself.
_CONTEXT = {"position", "placement", "device", "country"}


def read_served(client: Any, limit: int = 10_000) -> list[dict[str, Any]]:
    """The newest ``limit`` logged rows, oldest first."""
    return served_log.read(client, limit)


def entity_rows(served: list[dict[str, Any]]) -> pd.DataFrame:
    """Entity keys, instant and logged context of each served row, for the offline join."""
    frame = pd.DataFrame(
        {
            "row": np.arange(len(served)),
            "event_timestamp": pd.to_datetime(
                [s["timestamp_micros"] for s in served], unit="us", utc=True
            ).astype("datetime64[us, UTC]"),
            **{
                key: [s["features"].get(key) for s in served]
                for key in (*contract.MODEL_ENTITY_KEYS, *sorted(_CONTEXT))
            },
        }
    )
    for key in contract.MODEL_ENTITY_KEYS:
        spec = next(e for e in contract.ENTITIES if e.join_key == key)
        if spec.dtype == contract.INT64:
            frame[key] = frame[key].astype("Int64")
    return frame


def offline_features(store: Any, entities: pd.DataFrame, refs: list[str]) -> pd.DataFrame:
    """Feast's point-in-time values of ``refs`` (``view:feature``) plus the recomputed
    request features, in the order of ``entities``."""
    joined = store.get_historical_features(entity_df=entities, features=refs).to_df()
    joined = joined.sort_values("row").reset_index(drop=True)
    micros = joined["event_timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    request = contract.request_features(
        micros,
        joined["position"].fillna(1).to_numpy(),
        joined["placement"].to_numpy(),
        joined["device"].to_numpy(),
        joined["country"].to_numpy(),
    )
    return joined.assign(**{k: v for k, v in request.items() if k not in _CONTEXT})


def compare(served: pd.Series, offline: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(mismatch mask, absolute difference or NaN) of two columns row by row."""
    served_missing = served.isna().to_numpy()
    offline_missing = offline.isna().to_numpy()
    one_missing = served_missing != offline_missing
    both = ~served_missing & ~offline_missing
    s_num = pd.to_numeric(served, errors="coerce").to_numpy(dtype=np.float64)
    o_num = pd.to_numeric(offline, errors="coerce").to_numpy(dtype=np.float64)
    numeric = both & ~np.isnan(s_num) & ~np.isnan(o_num)
    diff = np.where(numeric, np.abs(s_num - o_num), np.nan)
    differs = np.where(
        numeric,
        diff > ATOL + RTOL * np.abs(o_num),
        served.astype(str).to_numpy() != offline.astype(str).to_numpy(),
    )
    return one_missing | (both & differs), diff


@dataclass
class SkewReport:
    rows: int
    table: pd.DataFrame  # one row per feature
    suites: list[SuiteResult]
    examples: dict[str, list[dict[str, Any]]]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.suites)

    @property
    def skewed(self) -> list[str]:
        return self.table.loc[self.table["mismatches"] > 0, "feature"].tolist()

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "features": int(len(self.table)),
            "skewed": self.skewed,
            "per_feature": self.table.to_dict(orient="records"),
            "examples": self.examples,
            "suites": [s.as_dict() for s in self.suites],
        }


def skew_table(served: list[dict[str, Any]], offline: pd.DataFrame, features: list[str]):
    rows, examples = [], {}
    for name in features:
        logged = pd.Series([s["features"].get(name) for s in served], dtype=object)
        recomputed = offline[name].astype(object).where(offline[name].notna(), None)
        mismatched, diff = compare(logged, recomputed)
        count = int(mismatched.sum())
        known = diff[~np.isnan(diff)]
        rows.append(
            {
                "feature": name,
                "compared": len(logged),
                "present": int(logged.notna().sum()),
                "mismatches": count,
                "mismatch_rate": count / len(logged) if len(logged) else 0.0,
                "max_abs_diff": float(known.max()) if known.size else 0.0,
                "mean_abs_diff": float(known.mean()) if known.size else 0.0,
            }
        )
        if count:
            where = np.flatnonzero(mismatched)[:3]
            examples[name] = [
                {
                    "request_id": served[i]["request_id"],
                    "ad_id": served[i]["ad_id"],
                    "served": _plain(logged.iat[i]),
                    "offline": _plain(recomputed.iat[i]),
                }
                for i in where
            ]
    return pd.DataFrame(rows), examples


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def expectations(max_rate: float = MAX_MISMATCH_RATE) -> list[gxe.Expectation]:
    return [
        check(
            gxe.ExpectColumnValuesToBeBetween(column="mismatch_rate", max_value=max_rate),
            "mismatch_rate",
        )
    ]


def run(
    runner: Runner,
    store: Any,
    served: list[dict[str, Any]],
    refs: list[str],
    max_rate: float = MAX_MISMATCH_RATE,
) -> SkewReport:
    """Recompute ``served`` rows' features (``refs`` plus request features) and compare."""
    if not served:
        raise ValueError(f"no served rows in {SERVED_STREAM}: is the scorer logging?")
    offline = offline_features(store, entity_rows(served), refs)
    names = [ref.split(":", 1)[1] for ref in refs]
    names += [f.name for f in contract.REQUEST_FEATURES if f.name not in _CONTEXT]
    table, examples = skew_table(served, offline, names)
    suite = runner.validate("skew", expectations(max_rate), table, complete=True)
    suite.rows = len(served)
    return SkewReport(len(served), table, [suite], examples)
