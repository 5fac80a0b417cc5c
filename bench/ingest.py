"""Validated ingest throughput (rows/s) of the simulator's canonical tables.

Baseline: copying the same Parquet tables with pandas and no validation, timed in the
same run; the ratio is what validation and quarantine bookkeeping cost on top of I/O.

    python -m bench.ingest [--impressions-per-day 500000] [--days 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from adstack.flows import ingest
from bench.harness import median, record, timed, use_quick
from pipelines.simulator import SimulationConfig, write_simulation


def copy_without_validation(landing: Path, target: Path) -> int:
    rows = 0
    for file in sorted(landing.rglob("*.parquet")):
        frame = pd.read_parquet(file)
        out = target / file.relative_to(landing)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(out, index=False)
        rows += len(frame)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impressions-per-day", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke check into results/quick")
    args = parser.parse_args()
    if args.quick:
        use_quick()
        args.impressions_per_day, args.days, args.repeats = 50_000, 1, 1

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        config = SimulationConfig(days=args.days, impressions_per_day=args.impressions_per_day)
        write_simulation(config, root / "landing", root / "ground_truth")
        rows = sum(len(pd.read_parquet(f)) for f in (root / "landing").rglob("*.parquet"))

        def validated() -> None:
            report = ingest("simulator", root / "landing", root / "data", root / "reports")
            assert report.rows_in == rows and report.rows_quarantined == 0

        def plain_copy() -> None:
            shutil.rmtree(root / "copy", ignore_errors=True)
            copy_without_validation(root / "landing", root / "copy")

        seconds = timed(validated, args.repeats)
        base = timed(plain_copy, args.repeats)
    rate, base_rate = rows / median(seconds), rows / median(base)
    figures = {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s_median": rate,
        "baseline": "pandas Parquet copy, no validation",
        "baseline_seconds": base,
        "baseline_rows_per_s_median": base_rate,
        "validation_cost_ratio": median(seconds) / median(base),
    }
    record(
        "ingest",
        figures,
        result=f"{rate / 1e3:.0f}k rows/s validated (median of {args.repeats}, {rows:,} rows)",
        baseline=f"unvalidated copy {base_rate / 1e3:.0f}k rows/s",
        ratio=f"{median(seconds) / median(base):.1f}x the copy's time",
        command="python -m bench.ingest",
    )
    print(f"ingest: {rate:,.0f} rows/s validated; unvalidated copy {base_rate:,.0f} rows/s")


if __name__ == "__main__":
    main()
