"""The training report's plots: reliability diagram and ROC curves (PNG, logged with the
MLflow run)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from artifact.metrics import auc  # noqa: E402


def _save(fig, ax, path: Path) -> Path:
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Reliability diagram (quantile bins): mean label against mean prediction per bin."""
    fig, ax = plt.subplots(figsize=(5, 5))
    top = 0.0
    for name, (y, p) in curves.items():
        ranks = np.argsort(np.argsort(p, kind="mergesort"), kind="mergesort")
        ids = ranks * 20 // len(p)
        counts = np.bincount(ids)
        mean_p = np.bincount(ids, weights=p) / counts
        mean_y = np.bincount(ids, weights=y) / counts
        ax.plot(mean_p, mean_y, marker="o", ms=3, label=name)
        top = max(top, float(mean_p.max()), float(mean_y.max()))
    ax.plot([0, top], [0, top], color="grey", ls="--", lw=1, label="perfect")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title("reliability (20 quantile bins)")
    return _save(fig, ax, path)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, p) in curves.items():
        order = np.argsort(-p, kind="mergesort")
        hits = np.asarray(y)[order]
        tpr = np.r_[0, np.cumsum(hits) / max(hits.sum(), 1)]
        fpr = np.r_[0, np.cumsum(1 - hits) / max((1 - hits).sum(), 1)]
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(y, p):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    return _save(fig, ax, path)
