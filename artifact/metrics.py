"""Offline metrics for probability models and the promotion gate.

- AUC: ranking quality (ties count half), with a bootstrap interval when positives are
  few.
- Log loss and normalised entropy: log loss over the entropy of the base rate, so 1.0 is
  "no better than predicting the average" (He et al., 2014).
- Calibration ratio: sum of predictions over sum of labels (1.0 is unbiased in total).
- ECE with equal-width bins and with equal-count (quantile) bins: the count-weighted mean
  of |mean prediction - mean label| per bin. With CTRs of a few percent nearly every
  prediction falls in the first equal-width bin, so the quantile version is the sharper
  one; the gate requires both.
- Field-level ECE: the same weighted gap with one bin per value of a field (advertiser),
  the miscalibration an advertiser sees in its own bill.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

EPSILON = 1e-7
GATE_MAX_ECE = 0.02
GATE_CALIBRATION_RATIO = (0.95, 1.05)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U), ties counting half."""
    y = np.asarray(labels, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = np.asarray(scores)[order]
    ranks = np.empty(len(y), dtype=np.float64)
    # Average ranks over ties.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(y)]
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auc_interval(
    labels: np.ndarray, scores: np.ndarray, rounds: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of the AUC (rows resampled with replacement)."""
    rng = np.random.default_rng(seed)
    y, s = np.asarray(labels), np.asarray(scores)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        value = auc(y[pick], s[pick])
        if not np.isnan(value):
            values.append(value)
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def log_loss(labels: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def normalized_entropy(labels: np.ndarray, p: np.ndarray) -> float:
    base = float(np.clip(np.mean(labels), EPSILON, 1 - EPSILON))
    entropy = -(base * np.log(base) + (1 - base) * np.log1p(-base))
    return log_loss(labels, p) / entropy


def calibration_ratio(labels: np.ndarray, p: np.ndarray) -> float:
    positives = float(np.sum(labels))
    return float(np.sum(p)) / positives if positives else float("inf")


def _binned_gap(labels: np.ndarray, p: np.ndarray, bins: np.ndarray) -> float:
    """Count-weighted mean |mean p - mean y| over the bin ids in ``bins``."""
    counts = np.bincount(bins)
    used = counts > 0
    mean_p = np.bincount(bins, weights=p)[used] / counts[used]
    mean_y = np.bincount(bins, weights=labels)[used] / counts[used]
    return float(np.sum(counts[used] * np.abs(mean_p - mean_y)) / len(p))


def ece_equal_width(labels: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    p = np.asarray(p, dtype=np.float64)
    ids = np.minimum((p * bins).astype(np.int64), bins - 1)
    return _binned_gap(np.asarray(labels, dtype=np.float64), p, ids)


def ece_quantile(labels: np.ndarray, p: np.ndarray, bins: int = 20) -> float:
    p = np.asarray(p, dtype=np.float64)
    ranks = np.argsort(np.argsort(p, kind="mergesort"), kind="mergesort")
    ids = (ranks * bins // len(p)).astype(np.int64)
    return _binned_gap(np.asarray(labels, dtype=np.float64), p, ids)


def field_ece(labels: np.ndarray, p: np.ndarray, field: np.ndarray) -> float:
    _, ids = np.unique(np.asarray(field), return_inverse=True)
    return _binned_gap(np.asarray(labels, dtype=np.float64), np.asarray(p, np.float64), ids)


@dataclass(frozen=True)
class Metrics:
    rows: int
    positives: int
    auc: float
    log_loss: float
    normalized_entropy: float
    calibration_ratio: float
    ece: float
    ece_quantile: float
    field_ece_advertiser: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate(labels: np.ndarray, p: np.ndarray, advertiser: np.ndarray | None = None) -> Metrics:
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return Metrics(
        rows=len(y),
        positives=int(y.sum()),
        auc=auc(y, p),
        log_loss=log_loss(y, p),
        normalized_entropy=normalized_entropy(y, p),
        calibration_ratio=calibration_ratio(y, p),
        ece=ece_equal_width(y, p),
        ece_quantile=ece_quantile(y, p),
        field_ece_advertiser=None if advertiser is None else field_ece(y, p, advertiser),
    )


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reasons: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


# A label rate that moved between the calibration and the test period by more than this
# many standard errors is a shift between periods.
SHIFT_Z = 3.0


@dataclass(frozen=True)
class PeriodShift:
    """The label rate of the calibration period against the test period's.

    Calibration is fitted on the earlier period, so a model that is right there predicts
    about its rate later too: if the rate itself moved, the test calibration ratio moves
    by ``calibration_rate / test_rate`` whatever the model does."""

    calibration_rate: float
    calibration_rows: int
    test_rate: float
    test_rows: int

    @property
    def expected_ratio(self) -> float:
        """The test calibration ratio the shift alone gives."""
        return self.calibration_rate / self.test_rate if self.test_rate > 0 else float("inf")

    @property
    def z(self) -> float:
        """Two-proportion z statistic of the difference in rates."""
        n1, n2 = self.calibration_rows, self.test_rows
        pooled = (self.calibration_rate * n1 + self.test_rate * n2) / max(n1 + n2, 1)
        se = np.sqrt(pooled * (1 - pooled) * (1 / max(n1, 1) + 1 / max(n2, 1)))
        return float((self.calibration_rate - self.test_rate) / se) if se > 0 else 0.0

    def explains(self, calibration_ratio: float) -> bool:
        """The rates differ significantly and the shift accounts for the test
        calibration ratio within the gate's tolerance."""
        low, high = GATE_CALIBRATION_RATIO
        within = low <= calibration_ratio / self.expected_ratio <= high
        return abs(self.z) > SHIFT_Z and within

    def as_dict(self) -> dict:
        return asdict(self)


def period_shift(metrics: dict) -> PeriodShift | None:
    """The shift a model's recorded metrics hold (none for models trained before it was
    recorded)."""
    recorded = metrics.get("period_shift")
    return PeriodShift(**recorded) if recorded else None


def gate(metrics: Metrics | dict, shift: PeriodShift | None = None) -> GateResult:
    """Refuse a model whose ECE (either binning) exceeds 0.02 or whose calibration ratio
    lies outside [0.95, 1.05] on the test period. With the ``shift`` of the label rate
    between the calibration and test periods, a failing ratio that the shift accounts
    for says so: the model is refused either way, and the reason names the cause."""
    m = metrics.as_dict() if isinstance(metrics, Metrics) else metrics
    reasons = []
    for key in ("ece", "ece_quantile"):
        if not m[key] <= GATE_MAX_ECE:
            reasons.append(f"{key} {m[key]:.4f} > {GATE_MAX_ECE}")
    low, high = GATE_CALIBRATION_RATIO
    ratio = m["calibration_ratio"]
    if not low <= ratio <= high:
        reason = f"calibration ratio {ratio:.3f} outside [{low}, {high}]"
        if shift is not None and shift.explains(ratio):
            reason += (
                f": the label rate moved from {shift.calibration_rate:.4%} in the calibration "
                f"period to {shift.test_rate:.4%} in the test period (z {shift.z:+.1f}), which "
                f"alone gives a ratio of {shift.expected_ratio:.3f}: a shift between periods, "
                "not the model (recalibrate on recent data, or choose the split with "
                "--calibration-from/--test-from)"
            )
        reasons.append(reason)
    return GateResult(not reasons, reasons)
