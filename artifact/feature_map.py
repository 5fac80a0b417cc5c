"""The fitted feature map: how raw feature values become model tensors.

Fitted on the training split only and saved as JSON in the model manifest; training,
evaluation and the scorer all call :meth:`FeatureMap.transform`, so the numbers a model
sees in production are computed by the code it was trained with.

- Entity ids and id-valued features are hashed into a fixed number of buckets
  (splitmix64 of the id, bucket 0 reserved for missing and out-of-vocabulary). No
  vocabulary of ids is stored, so a new user or ad needs no refit; after training the
  rows of buckets no training id reached are set to the out-of-vocabulary row, so an
  unseen id scores exactly like a missing one rather than like an arbitrary trained id.
- Strings and small integer features (hour, day of week, position) use a vocabulary of
  the values seen at least ``min_count`` times (2 by default: a value seen once has no
  second example to tell it from noise, so it shares index 0, as a one-hot baseline
  pools its singletons into one "rare" column); everything else maps to index 0.
- Dense features: ``log1p`` when the training values are non-negative and reach above
  1 (counts, spend, ages), identity otherwise (rates); missing values are filled (0 for
  counts, whose absence means nothing happened; the training mean for rates, whose
  absence means no denominator), then standardised with the training mean and stdev
  and clipped to +-8. Capped inputs (ages) are read at most at their training maximum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

HASH = "hash"
VOCAB = "vocab"
MISSING_INDEX = 0
# Standardised values are clipped: a feature nearly constant in the training days (a 30-day
# window early in a log) would otherwise reach thousands of deviations later on.
Z_LIMIT = 8.0
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(values: np.ndarray, seed: int) -> np.ndarray:
    """A stable 64-bit mix of int64 ids (the same on every platform and in any language)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.int64).view(np.uint64) + np.uint64(seed) * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class Masked:
    """Exact int64 ids with a presence mask (serving's online values): no object arrays,
    no float round trip."""

    values: np.ndarray  # int64
    present: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class SparseField:
    name: str
    kind: str  # HASH or VOCAB
    buckets: int = 0  # HASH: embedding rows, bucket 0 included
    seed: int = 0
    vocabulary: list[str] = field(default_factory=list)  # VOCAB: index = position + 1

    @property
    def cardinality(self) -> int:
        return self.buckets if self.kind == HASH else len(self.vocabulary) + 1

    @cached_property
    def lookup(self) -> dict[str, int]:
        return {value: index for index, value in enumerate(self.vocabulary, 1)}

    def indices(self, values: Any, rows: int) -> tuple[np.ndarray, int]:
        """Embedding row per value (int64) and how many values were missing. A scalar
        value is broadcast to ``rows``."""
        if np.ndim(values) == 0 and not isinstance(values, Masked):
            return self._broadcast(values, rows)
        if self.kind == HASH:
            numbers, present = _ids(values)
            hashed = (splitmix64(numbers, self.seed) % np.uint64(self.buckets - 1)).astype(np.int64)
            return np.where(present, hashed + 1, MISSING_INDEX), int((~present).sum())
        if isinstance(values, Masked):
            text = values.values.astype(str).astype(object)
            text[~values.present] = None
            values = text
        values = np.asarray(values)
        if values.dtype == object:
            items = values.tolist()
            if all(type(v) is str or v is None for v in items):
                lookup = self.lookup
                codes = [
                    lookup.get(v, MISSING_INDEX) if v is not None else MISSING_INDEX for v in items
                ]
                return np.array(codes, dtype=np.int64), items.count(None)
        as_text = _text(values)
        codes = pd.Categorical(as_text, categories=self.vocabulary).codes.astype(np.int64) + 1
        return codes, int(pd.isna(as_text).sum())

    def _broadcast(self, value: Any, rows: int) -> tuple[np.ndarray, int]:
        """One value for every row (a request's user and context features)."""
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return np.full(rows, MISSING_INDEX, dtype=np.int64), rows
        if self.kind == VOCAB and isinstance(value, str | int | np.integer):
            text = value if isinstance(value, str) else str(int(value))
            return np.full(rows, self.lookup.get(text, MISSING_INDEX), dtype=np.int64), 0
        if self.kind == HASH and isinstance(value, int | np.integer):
            index, _ = self.indices(np.array([value], dtype=np.int64), 1)
            return np.full(rows, index[0], dtype=np.int64), 0
        index, missing = self.indices(np.array([value], dtype=object), 1)
        return np.full(rows, index[0], dtype=np.int64), missing * rows


@dataclass
class DenseField:
    name: str
    transform: str  # "log1p" or "identity"
    fill: float
    mean: float
    std: float
    # Raw values above this are read as it (None: no cap). Ages are capped at the
    # training rows' largest: an age counts from the log's first day, so a key there
    # since then shows the log's length, which only grows after training.
    upper: float | None = None


def _numbers(raw: Any, rows: int) -> np.ndarray:
    """float64 values (NaN for missing or non-numeric); a scalar is broadcast."""
    if isinstance(raw, Masked):
        return np.where(raw.present, raw.values.astype(np.float64), np.nan)
    if np.ndim(raw) == 0:
        if raw is None:
            return np.full(rows, np.nan)
        if isinstance(raw, int | float | np.integer | np.floating) and not isinstance(raw, bool):
            return np.full(rows, float(raw))
        value = pd.to_numeric(pd.Series([raw]), errors="coerce").to_numpy(dtype=np.float64)[0]
        return np.full(rows, value)
    values = np.asarray(raw)
    if values.dtype.kind in "fiub":
        return values.astype(np.float64)
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)


@dataclass
class Encoded:
    sparse: np.ndarray  # (N, S) int64 embedding rows
    dense: np.ndarray  # (N, D) float32
    missing: dict[str, int]  # missing values per field, filled from the map


@dataclass
class FeatureMap:
    sparse: list[SparseField]
    dense: list[DenseField]
    # Columns the training rows offered that carry no information (all missing or
    # constant), with the reason: not model inputs, listed for the training report.
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    @property
    def cardinalities(self) -> list[int]:
        return [f.cardinality for f in self.sparse]

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        hashed: list[str],
        categorical: list[str],
        dense: list[str],
        count_like: set[str],
        min_count: int = 2,
        max_vocabulary: int = 10_000,
        buckets_per_id: int = 4,
        max_buckets: int = 1 << 20,
        left_out: dict[str, str] | None = None,
        capped: set[str] | None = None,
    ) -> FeatureMap:
        """Fit on training rows. ``count_like`` dense features are filled with 0;
        ``capped`` ones are read at most at their largest training value."""
        sparse = []
        for index, name in enumerate(hashed):
            distinct = int(pd.Series(frame[name]).nunique(dropna=True))
            buckets = 1 << max(10, int(np.ceil(np.log2(max(distinct, 1) * buckets_per_id))))
            sparse.append(SparseField(name, HASH, buckets=min(buckets, max_buckets), seed=index))
        for name in categorical:
            counts = pd.Series(_text(frame[name].to_numpy())).value_counts()
            kept = counts[counts >= min_count].index[:max_vocabulary]
            sparse.append(SparseField(name, VOCAB, vocabulary=sorted(str(v) for v in kept)))
        dense_fields = []
        for name in dense:
            raw = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
            known = raw[~np.isnan(raw)]
            upper = float(known.max()) if name in (capped or set()) and known.size else None
            log = bool(known.size and known.min() >= 0 and np.quantile(known, 0.99) > 1.0)
            fill = 0.0 if name in count_like or not known.size else float(known.mean())
            values = np.where(np.isnan(raw), fill, raw)
            values = np.log1p(np.maximum(values, 0.0)) if log else values
            std = float(values.std())
            dense_fields.append(
                DenseField(
                    name,
                    "log1p" if log else "identity",
                    fill,
                    float(values.mean()),
                    std if std > 1e-9 else 1.0,
                    upper,
                )
            )
        return cls(sparse, dense_fields, dict(left_out or {}))

    @cached_property
    def _dense_params(self) -> tuple[np.ndarray, ...]:
        fill = np.array([d.fill for d in self.dense], dtype=np.float64)
        log = np.array([d.transform == "log1p" for d in self.dense])
        mean = np.array([d.mean for d in self.dense], dtype=np.float64)
        std = np.array([d.std for d in self.dense], dtype=np.float64)
        upper = np.array(
            [np.inf if d.upper is None else d.upper for d in self.dense], dtype=np.float64
        )
        return fill, log, mean, std, upper

    def transform(self, columns: Mapping[str, Any], rows: int | None = None) -> Encoded:
        """Encode columns into model inputs. ``columns`` is a DataFrame or a mapping of
        arrays, :class:`Masked` ids or scalars (broadcast to ``rows``, which defaults to
        the length of the first array)."""
        n = rows if rows is not None else _rows(columns)
        missing: dict[str, int] = {}
        sparse = np.zeros((n, len(self.sparse)), dtype=np.int64)
        for j, f in enumerate(self.sparse):
            sparse[:, j], missing[f.name] = f.indices(_column(columns, f.name), n)
        raw = np.empty((n, len(self.dense)), dtype=np.float64)
        for j, d in enumerate(self.dense):
            raw[:, j] = _numbers(_column(columns, d.name), n)
        absent = np.isnan(raw)
        missing.update(zip(self.dense_names, absent.sum(axis=0).tolist(), strict=True))
        fill, log, mean, std, upper = self._dense_params
        values = np.where(absent, fill, np.minimum(raw, upper))
        values = np.where(log, np.log1p(np.maximum(values, 0.0)), values)
        dense = np.clip((values - mean) / std, -Z_LIMIT, Z_LIMIT).astype(np.float32)
        return Encoded(sparse, np.ascontiguousarray(dense), missing)

    def to_dict(self) -> dict:
        return {
            "sparse": [asdict(f) for f in self.sparse],
            "dense": [asdict(f) for f in self.dense],
            "left_out": dict(self.left_out),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FeatureMap:
        return cls(
            [SparseField(**f) for f in data["sparse"]],
            [DenseField(**f) for f in data["dense"]],
            dict(data.get("left_out", {})),
        )


def _column(columns: Mapping[str, Any], name: str) -> Any:
    value = columns[name]
    if not isinstance(value, pd.Series):
        return value
    if pd.api.types.is_integer_dtype(value.dtype) and value.hasnans:
        # numpy turns a nullable integer column with NA into float64, which loses ids
        # above 2**53: keep the integers exact.
        return Masked(value.fillna(0).to_numpy(np.int64), value.notna().to_numpy())
    return np.asarray(value)


def _rows(columns: Mapping[str, Any]) -> int:
    if isinstance(columns, pd.DataFrame):
        return len(columns)
    for value in columns.values():
        if isinstance(value, Masked) or np.ndim(value) > 0:
            return len(value)
    raise ValueError("every column is a scalar: pass rows")


def _ids(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """int64 ids and a presence mask from int, nullable-int, object or masked arrays."""
    if isinstance(values, Masked):
        return values.values.astype(np.int64), values.present.astype(bool)
    values = np.asarray(values)
    if values.dtype.kind in "iu":
        return values.astype(np.int64), np.ones(len(values), dtype=bool)
    series = pd.Series(values)
    present = series.notna().to_numpy()
    # 53-bit floats cannot hold 63-bit ids exactly: refuse instead of hashing garbage.
    if values.dtype.kind == "f" and np.any(np.abs(values[present]) > 2**53):
        raise ValueError("id values arrived as floats beyond 2**53; pass them as int64")
    numbers = np.zeros(len(values), dtype=np.int64)
    numbers[present] = series[present].astype(np.int64).to_numpy()
    return numbers, present


def _text(values: np.ndarray) -> np.ndarray:
    """Values as strings (ints without a decimal point); missing stays None."""
    series = pd.Series(values)
    if series.dtype.kind == "f":
        series = series.astype("Int64")
    text = series.astype("string").to_numpy(dtype=object, na_value=None)
    return text
