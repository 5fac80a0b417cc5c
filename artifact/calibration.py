"""Probability calibration fitted on the calibration period, saved as JSON parameters.

Two calibrators, both applied by the one pure function :func:`apply` that training,
evaluation and the scorer call:

- Platt scaling: ``sigmoid(a * logit(p) + b)``, two numbers, safe with little data;
- isotonic regression: a monotone piecewise-linear map through fitted points, used only
  when the calibration period holds at least ``ISOTONIC_MIN_POSITIVES`` positives (with
  fewer, its steps follow noise).

The chosen calibrator is the one with the lower log loss on the calibration period's
second half when fitted on its first half; the final fit then uses the whole period.
"""

from __future__ import annotations

import numpy as np

ISOTONIC_MIN_POSITIVES = 500
EPSILON = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def apply(params: dict, probabilities: np.ndarray) -> np.ndarray:
    """Calibrated probabilities (float64) from raw model probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)
    method = params["method"]
    if method == "identity":
        out = p
    elif method == "platt":
        out = 1.0 / (1.0 + np.exp(-(params["a"] * logit(p) + params["b"])))
    elif method == "isotonic":
        out = np.interp(p, params["x"], params["y"])
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    return np.clip(out, EPSILON, 1 - EPSILON)


def fit_platt(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    # Fitting only: the scorer applies calibrations without loading SciPy.
    from scipy.optimize import minimize

    z, y = logit(probabilities), np.asarray(labels, dtype=np.float64)

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        s = ab[0] * z + ab[1]
        p = 1.0 / (1.0 + np.exp(-s))
        nll = np.logaddexp(0.0, s) - y * s
        grad = p - y
        return float(nll.mean()), np.array([(grad * z).mean(), grad.mean()])

    # The slope is bounded at 0: a calibrator must never reverse the model's ranking. A
    # model that ranks worse than chance on the calibration period gets slope 0, so every
    # row is given the period's rate (isotonic regression is monotone already).
    bounds = [(0.0, None), (None, None)]
    result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=bounds)
    return {"method": "platt", "a": float(result.x[0]), "b": float(result.x[1])}


def fit_isotonic(probabilities: np.ndarray, labels: np.ndarray, max_points: int = 1000) -> dict:
    # Fitting only: the scorer applies calibrations without loading scikit-learn.
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=EPSILON, y_max=1 - EPSILON, out_of_bounds="clip")
    model.fit(np.asarray(probabilities, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    x, y = model.X_thresholds_, model.y_thresholds_
    if len(x) > max_points:
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y = x[keep], y[keep]
    return {"method": "isotonic", "x": x.tolist(), "y": y.tolist()}


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPSILON, 1 - EPSILON)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def fit(probabilities: np.ndarray, labels: np.ndarray, order: np.ndarray | None = None) -> dict:
    """Fit the calibrator for one output. ``order`` sorts rows by time (first half fits,
    second half chooses); by default the rows are taken as already in time order."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if order is not None:
        p, y = p[order], y[order]
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("calibration needs both positive and negative labels")
    platt = fit_platt(p, y)
    if y.sum() < ISOTONIC_MIN_POSITIVES:
        return platt | {"chosen_over": [], "positives": int(y.sum())}
    half = len(p) // 2
    candidates = {
        "platt": fit_platt(p[:half], y[:half]),
        "isotonic": fit_isotonic(p[:half], y[:half]),
    }
    held_out = {name: _log_loss(apply(c, p[half:]), y[half:]) for name, c in candidates.items()}
    best = min(held_out, key=lambda name: held_out[name])
    final = platt if best == "platt" else fit_isotonic(p, y)
    return final | {"held_out_log_loss": held_out, "positives": int(y.sum())}
