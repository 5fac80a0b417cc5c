"""Reference-versus-current histograms of drifted features (PNG).

Numeric features are drawn on the reference's decile bins (the bins PSI uses), so both
bars of a bin hold comparable mass whatever the feature's scale; categorical features
show each value's share.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from validation.profile import CATEGORICAL, ColumnProfile, CurrentStats  # noqa: E402


def _masses(
    profile: ColumnProfile, current: CurrentStats
) -> tuple[list[str], np.ndarray, np.ndarray]:
    if profile.kind == CATEGORICAL:
        keys = sorted(
            set(profile.weights) | set(current.weights), key=lambda k: -profile.weights.get(k, 0)
        )
        return (
            keys[:20],
            np.array([profile.weights.get(k, 0.0) for k in keys[:20]]),
            np.array([current.weights.get(k, 0.0) for k in keys[:20]]),
        )  # fmt: skip
    grid = np.asarray(profile.grid)
    edges = np.asarray(profile.bins)
    if not len(edges):  # a constant reference
        return ["all"], np.array([1.0]), np.array([1.0])
    ref = np.diff(np.concatenate([[0.0], np.interp(edges, grid, profile.cdf), [1.0]]))
    cur = np.diff(np.concatenate([[0.0], np.interp(edges, grid, current.cdf), [1.0]]))
    labels = [f"<= {edges[0]:.3g}"] + [
        f"({a:.3g}, {b:.3g}]" for a, b in zip(edges[:-1], edges[1:], strict=True)
    ] + [f"> {edges[-1]:.3g}"]  # fmt: skip
    return labels, ref, cur


def plot_drift(
    profile: ColumnProfile, current: CurrentStats, psi: float | None, path: Path
) -> Path:
    labels, ref, cur = _masses(profile, current)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(x - 0.2, ref, 0.4, label="reference (training)")
    ax.bar(x + 0.2, cur, 0.4, label="current")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    title = profile.name + (f"  (PSI {psi:.3f})" if psi is not None else "")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
