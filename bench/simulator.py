"""Simulator throughput (impressions/s) and reproducibility of its ground truth.

Baseline: the same click model written as a per-impression Python loop, the way a
simulator is often first written, timed on fewer rows in the same run.

    python -m bench.simulator [--impressions 1000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random

import pyarrow as pa

from bench.harness import median, record, timed, use_quick
from pipelines.simulator import POSITION_BIAS, SimulationConfig, build_world, simulate_chunk


def python_loop_baseline(world, n: int, seed: int) -> int:
    """Per-row version of the core draws: user, ad, slot, click probability, click."""
    rng = random.Random(seed)
    cfg = world.config
    clicks = 0
    for _ in range(n):
        user = rng.randrange(cfg.users)
        ad = rng.randrange(cfg.ads)
        position = rng.randrange(4)
        logit = (
            cfg.base_click_logit
            + 0.9 * float(world.user_affinity[user, world.ad_category[ad]])
            + float(world.ad_quality[ad])
            + math.log(POSITION_BIAS[position])
        )
        clicks += rng.random() < 1.0 / (1.0 + math.exp(-logit))
    return clicks


def ground_truth_digest(world, n: int) -> str:
    truth = simulate_chunk(world, 0, 0, n, 1).ground_truth
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, truth.schema) as writer:
        writer.write_table(truth)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--baseline-impressions", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke check into results/quick")
    args = parser.parse_args()
    if args.quick:
        use_quick()
        args.impressions, args.baseline_impressions, args.repeats = 100_000, 10_000, 2

    config = SimulationConfig(
        days=1, users=100_000, ads=5_000, impressions_per_day=args.impressions
    )
    world = build_world(config)
    simulate_chunk(world, 0, 0, 10_000, 1)  # warm caches (category CDFs)
    seconds = timed(lambda: simulate_chunk(world, 0, 0, args.impressions, 1), args.repeats)
    base = timed(lambda: python_loop_baseline(world, args.baseline_impressions, 1), 3)
    rate = args.impressions / median(seconds)
    base_rate = args.baseline_impressions / median(base)
    digests = {ground_truth_digest(build_world(config), 200_000) for _ in range(2)}
    figures = {
        "impressions": args.impressions,
        "seconds": seconds,
        "impressions_per_s_median": rate,
        "impressions_per_s_best": args.impressions / min(seconds),
        # The loop draws only user, ad, slot and click: less work than the simulator, so
        # the speed-up is a lower bound.
        "baseline": "per-row Python loop of the click draw only (less work: a lower bound)",
        "baseline_impressions_per_s_median": base_rate,
        "speedup_vs_baseline": rate / base_rate,
        "ground_truth_sha256_two_runs_seed_7": sorted(digests),
        "ground_truth_reproducible": len(digests) == 1,
        "target_impressions_per_s": 1_000_000,
    }
    record(
        "simulator",
        figures,
        result=(
            f"{rate / 1e6:.2f}M impressions/s (median of {args.repeats}); "
            f"ground truth reproducible: {len(digests) == 1}"
        ),
        baseline=f"Python loop of the click draw only {base_rate / 1e3:.0f}k/s",
        ratio=f"{rate / base_rate:.0f}x",
        command="python -m bench.simulator",
    )
    print(f"simulator: {rate:,.0f} impressions/s median, {rate / base_rate:.0f}x the Python loop")
    print(f"ground truth reproducible for a seed: {len(digests) == 1}")


if __name__ == "__main__":
    main()
