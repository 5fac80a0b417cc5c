"""Calibrate on the calibration split, then judge on the test split: metrics, gaps to the
ceiling, paired AUC differences."""

from __future__ import annotations

import numpy as np

from artifact import calibration
from artifact.metrics import auc, evaluate


def scored(
    y_cal: np.ndarray,
    p_cal: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    advertiser: np.ndarray | None = None,
) -> dict:
    """Calibrate on the calibration split, then test metrics (and the raw ones)."""
    fitted = calibration.fit(p_cal, y_cal)
    calibrated = calibration.apply(fitted, p_test)
    return {
        "test": evaluate(y_test, calibrated, advertiser).as_dict(),
        "test_uncalibrated": evaluate(y_test, p_test, advertiser).as_dict(),
        "calibration_split": evaluate(y_cal, p_cal).as_dict(),
        "calibrator": {k: v for k, v in fitted.items() if k not in ("x", "y")},
    }


def gaps(metrics: dict, ceiling: dict) -> dict:
    return {
        "auc": ceiling["auc"] - metrics["auc"],
        "ne_relative": metrics["normalized_entropy"] / ceiling["normalized_entropy"] - 1,
    }


def paired_auc_difference(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, rounds: int = 200, seed: int = 0
) -> dict:
    """AUC(a) - AUC(b) with a 95% bootstrap interval over the same resampled rows."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        if 0 < y[pick].sum() < len(pick):
            values.append(auc(y[pick], a[pick]) - auc(y[pick], b[pick]))
    low, high = np.quantile(values, [0.025, 0.975])
    return {"difference": auc(y, a) - auc(y, b), "ci95": [float(low), float(high)]}


def public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def summary(m: dict) -> str:
    return (
        f"AUC {m['auc']:.4f}, NE {m['normalized_entropy']:.4f}, ECE {m['ece']:.4f}, "
        f"qECE {m['ece_quantile']:.4f}"
    )
