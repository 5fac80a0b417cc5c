"""What a perfectly calibrated CVR model scores on the promotion gate's test rows.

The simulator knows each clicked row's true conversion probability (the ceiling). Drawing
the labels again from those probabilities, many times (consistency resampling, Broecker
and Smith 2007), gives the gate's metrics for a model that is calibrated by construction
on exactly the test rows a CVR model is judged on: how often it passes the gate (ECE and
quantile ECE at most 0.02, calibration ratio within [0.95, 1.05]) and how often it meets
the tighter goal of a calibration ratio within [0.97, 1.03] and a quantile ECE at most
0.01. The same is measured with the test rows repeated 2, 4 and 8 times (the rows a
longer test period would hold, at the same rates), to say how much test data each goal
needs.

    python -m bench.calibration_noise --reuse DIR [--draws 1000] [--quick]

``--reuse`` takes a ``bench.quality`` work folder that holds the CVR set (``ds_cvr``) and
the simulator's ground truth (``data/ground_truth``). Results:
``bench/results/calibration_noise.json`` and its row of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from artifact import metrics
from bench.harness import save_rows, use_quick
from bench.quality.prepare import Prepared, ground_truth
from training import dataset

COMMAND = "python -m bench.calibration_noise"
GOAL_RATIO = (0.97, 1.03)
GOAL_ECE_QUANTILE = 0.01
REPEATS = (1, 2, 4, 8)


def test_rows(prepared: Prepared) -> tuple[np.ndarray, np.ndarray, dict]:
    """The CVR set's clicked test rows: (observed conversions, true probabilities)."""
    training_set = dataset.load(prepared.sim_set("cvr"))
    test = training_set.part("test").merge(
        ground_truth(prepared.sim_data, ["p_conversion_given_click"]),
        on="impression_id",
        how="left",
    )
    test = test[test["click"] == 1]
    if test["p_conversion_given_click"].isna().any():
        raise SystemExit("some test rows have no ground truth: reuse the folder it came from")
    splits = {k: str(v) for k, v in training_set.splits.__dict__.items()}
    return (
        test["conversion"].to_numpy(dtype=np.float64),
        test["p_conversion_given_click"].to_numpy(dtype=np.float64),
        splits,
    )


def resampled(p: np.ndarray, draws: int, seed: int) -> dict:
    """The gate's metrics over ``draws`` label sets drawn from ``p`` itself."""
    rng = np.random.default_rng(seed)
    ece, ece_q, ratio = [], [], []
    for _ in range(draws):
        y = (rng.random(len(p)) < p).astype(np.float64)
        ece.append(metrics.ece_equal_width(y, p))
        ece_q.append(metrics.ece_quantile(y, p))
        ratio.append(metrics.calibration_ratio(y, p))
    gate = np.array([
        metrics.gate({"ece": e, "ece_quantile": q, "calibration_ratio": r}).passed
        for e, q, r in zip(ece, ece_q, ratio, strict=True)
    ])  # fmt: skip
    ece, ece_q, ratio = (np.asarray(v) for v in (ece, ece_q, ratio))
    low, high = metrics.GATE_CALIBRATION_RATIO
    goal = (ece_q <= GOAL_ECE_QUANTILE) & (ratio >= GOAL_RATIO[0]) & (ratio <= GOAL_RATIO[1])

    def spread(values: np.ndarray) -> dict:
        q = np.quantile(values, [0.025, 0.5, 0.975])
        return {"p2.5": float(q[0]), "median": float(q[1]), "p97.5": float(q[2])}

    return {
        "rows": len(p),
        "expected_conversions": float(p.sum()),
        "ece_quantile": spread(ece_q),
        "ece": spread(ece),
        "calibration_ratio": spread(ratio),
        "passes_gate_rate": float(gate.mean()),
        "ece_quantile_within_gate_rate": float((ece_q <= metrics.GATE_MAX_ECE).mean()),
        "ratio_within_gate_rate": float(((ratio >= low) & (ratio <= high)).mean()),
        "meets_goal_rate": float(goal.mean()),
        "ece_quantile_within_goal_rate": float((ece_q <= GOAL_ECE_QUANTILE).mean()),
        "ratio_within_goal_rate": float(
            ((ratio >= GOAL_RATIO[0]) & (ratio <= GOAL_RATIO[1])).mean()
        ),
    }


def measure(prepared: Prepared, draws: int) -> dict:
    y, p, splits = test_rows(prepared)
    by_repeats = {str(k): resampled(np.tile(p, k), draws, seed=k) for k in REPEATS}
    return {
        "splits": splits,
        "draws": draws,
        "ceiling_observed": metrics.evaluate(y, p).as_dict(),
        "calibrated_model": by_repeats["1"],
        "calibrated_model_by_test_repeats": by_repeats,
        "gate": {
            "max_ece": metrics.GATE_MAX_ECE,
            "calibration_ratio": list(metrics.GATE_CALIBRATION_RATIO),
        },
        "goal": {"calibration_ratio": list(GOAL_RATIO), "max_ece_quantile": GOAL_ECE_QUANTILE},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=Path, required=True, help="a bench.quality work folder")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="smoke check into results/quick")
    args = parser.parse_args(argv)
    if args.quick:
        use_quick()
        args.draws = 50
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    figures = measure(Prepared(args.reuse), args.draws)
    one = figures["calibrated_model"]
    needed = next(
        (k for k, v in figures["calibrated_model_by_test_repeats"].items()
         if v["meets_goal_rate"] >= 0.95),
        None,
    )  # fmt: skip
    row = (
        f"the simulator's true pCVR, labels redrawn {args.draws} times on the "
        f"{one['rows']:,} clicked test rows of the simulated CVR set: passes the gate "
        f"{one['passes_gate_rate']:.0%} of draws, meets the goal (ratio in [0.97, 1.03], "
        f"quantile ECE <= 0.01) {one['meets_goal_rate']:.0%}",
        f"quantile ECE median {one['ece_quantile']['median']:.4f} "
        f"(95%: {one['ece_quantile']['p2.5']:.4f}-{one['ece_quantile']['p97.5']:.4f}); "
        f"calibration ratio 95%: {one['calibration_ratio']['p2.5']:.3f}-"
        f"{one['calibration_ratio']['p97.5']:.3f}",
        "goal met on 95% of draws with "
        + (f"{needed}x these test rows" if needed else f"more than {REPEATS[-1]}x these rows"),
    )
    path = save_rows(
        "calibration_noise",
        {"command": command, **figures},
        {"calibration_noise": row},
        command=command,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
