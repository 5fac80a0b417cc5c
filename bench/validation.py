"""Validation benchmark: drift-suite time at 1M and 10M rows on pandas and Spark, and the
drift suite's false-alarm and detection rates on simulated worlds.

Timing. The table has the shape of a CTR model's inputs: the dense features of the five
daily views (counts, spend, ages as skewed integers; rates with nulls) and six request
features as categories. A reference profile is fitted on 200k rows; the whole drift run
(GX suites plus our PSI and KS) is timed on the current table, on pandas in memory and
on Spark (local[2]) reading the same Parquet. Spark is the baseline of the ratio.

Detection. Worlds are simulated with the same seed with and without the simulator's
drift knob (device mix, then interests, from day 5 of 8); the Spark batch job and a
Feast repo produce the CTR training rows; the drifted world's days after the knob are
compared with the control world's same days. The false-alarm rate comes from
same-distribution splits of the control world's rows over many seeds.

Next day. As a user meets the drift suite: the demo's world at a quarter of its scale
(13 days before the live one), a model's reference written from its training set, then
each of the next two days against it. Undrifted worlds give the false alarms; worlds
drifting from the first live day (device, interest, price) and a feature stuck at its
fill value give the detections.

    python -m bench.validation [--rows 1000000 10000000] [--seeds 50]
        [--parts timing detection next_day] [--knob-seeds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from artifact.feature_map import FeatureMap
from bench.harness import results_dir, save_rows, use_quick, write_section
from feature_repo import contract
from validation import drift
from validation.gx import Runner

CATEGORIES = {
    "device": ["mobile", "desktop", "tablet"],
    "placement": ["feed", "search", "article", "video_pre", "sidebar", "app_banner"],
    "country": ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "IT"],
    "hour_of_day": [str(h) for h in range(24)],
    "day_of_week": [str(d) for d in range(7)],
    "position": ["1", "2", "3", "4"],
}
REFERENCE_ROWS = 200_000
CHUNK = 1_000_000


def dense_features() -> list[contract.Feature]:
    return [f for spec in contract.DAILY_VIEWS for f in spec.features]


def synthetic(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for f in dense_features():
        if f.measure in ("ctr", "cvr", "click_share"):
            values = rng.beta(2.0, 40.0, rows)
            columns[f.name] = np.where(rng.random(rows) < 0.2, np.nan, values)
        else:
            columns[f.name] = rng.negative_binomial(2, 0.1, rows).astype(np.float64)
    for name, values in CATEGORIES.items():
        columns[name] = np.asarray(values, dtype=object)[rng.integers(0, len(values), rows)]
    return pd.DataFrame(columns)


def feature_map_for(frame: pd.DataFrame) -> FeatureMap:
    return FeatureMap.fit(frame, [], list(CATEGORIES), [f.name for f in dense_features()], set())


def write_parquet(path: Path, rows: int) -> None:
    writer = None
    for start in range(0, rows, CHUNK):
        table = pa.Table.from_pandas(synthetic(min(CHUNK, rows - start), seed=1 + start // CHUNK))
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    if writer:
        writer.close()


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timing(
    rows_list: list[int],
    workdir: Path,
    reference_rows: int = REFERENCE_ROWS,
    max_inputs: int | None = None,
) -> dict:
    """Both engines on the same frames; ``max_inputs`` keeps the first inputs only (the
    Spark engine's time is mostly a fixed cost per expectation)."""
    from core.spark import spark_session

    reference_frame = synthetic(reference_rows, seed=0)
    reference = drift.reference_profile(reference_frame, "ctr", feature_map_for(reference_frame))
    if max_inputs is not None:
        reference = dataclasses.replace(reference, columns=reference.columns[:max_inputs])
    inputs = len(reference.columns)
    spark = spark_session("bench-validation", "local[2]")
    results = []
    for rows in rows_list:
        path = workdir / f"current_{rows}.parquet"
        if not path.exists():
            write_parquet(path, rows)
        entry: dict = {"rows": rows, "inputs": inputs}
        # Spark: read the Parquet and run the same suites.
        frame = spark.read.parquet(str(path))
        began = time.perf_counter()
        report = drift.run(Runner(), reference, frame)
        entry["spark_seconds"] = time.perf_counter() - began
        entry["spark_drifted"] = report.drifted
        # pandas: load, then run.
        began = time.perf_counter()
        current = pd.read_parquet(path)
        entry["pandas_load_seconds"] = time.perf_counter() - began
        began = time.perf_counter()
        try:
            report = drift.run(Runner(), reference, current)
            entry["pandas_seconds"] = time.perf_counter() - began
            entry["pandas_drifted"] = report.drifted
        except MemoryError as error:
            entry["pandas_error"] = f"MemoryError: {error}"
        entry["peak_rss_gib"] = round(peak_rss_gib(), 2)
        del current
        gc.collect()
        results.append(entry)
        print(json.dumps(entry), flush=True)
    spark.stop()
    return {"reference_rows": reference_rows, "inputs": inputs, "runs": results}


# ----------------------------------------------------------------- detection


def simulated_set(root: Path, spark, redis_url: str, config, cutoff_after=timedelta(0)):
    """``config``'s simulated log through the batch job, a Feast repo and the CTR training
    set (calibration and test a day each), the log read ``cutoff_after`` past its end."""
    from feast import FeatureStore

    from pipelines import batch_features
    from pipelines.simulator import write_simulation
    from tests.integration.test_training import applied_repo
    from training import dataset

    data = root / "data"
    write_simulation(config, data / "events", data / "ground_truth")
    end = config.start + timedelta(days=config.days)
    batch_features.run(spark, data, config.start.date() + timedelta(days=1), end.date())
    repo = applied_repo(root, data, redis_url)
    store = FeatureStore(repo_path=str(repo))
    return dataset.build(
        store, data, "ctr", config.start, end, cutoff=end + cutoff_after,
        split=dataset.SplitRequest(calibration_days=1, test_days=1),
    )  # fmt: skip


def world(root: Path, spark, redis_url: str, drift_day: int | None, kind: str):
    from pipelines.simulator import SimulationConfig

    start = datetime(2026, 3, 2, tzinfo=UTC)
    config = SimulationConfig(
        days=8, users=3_000, ads=150, impressions_per_day=20_000, seed=11, start=start,
        drift_day=drift_day, drift_kind=kind,  # type: ignore[arg-type]
    )  # fmt: skip
    return simulated_set(root, spark, redis_url, config), start


def detection(seeds: int, workdir: Path) -> dict:
    from adstack import redis_server
    from core.spark import spark_session
    from training.train import fit_feature_map

    spark = spark_session("bench-validation", "local[2]")
    server = redis_server.start(workdir / "redis", redis_server.free_port(), persist=False)
    try:
        sets = {}
        for name, day, kind in (
            ("control", None, "device"), ("device", 5, "device"), ("interest", 5, "interest"),
        ):  # fmt: skip
            root = workdir / name
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            sets[name], start = world(root, spark, server.url, day, kind)
    finally:
        redis_server.stop(workdir / "redis")
        spark.stop()
    feature_map = fit_feature_map(sets["control"])

    def after(name: str, day: int) -> pd.DataFrame:
        frame = sets[name].frame
        return frame[frame["event_timestamp"] >= start + timedelta(days=day)]

    runner = Runner()
    reference = drift.reference_profile(after("control", 5), "ctr", feature_map)
    detected = {}
    for kind in ("device", "interest"):
        report = drift.run(runner, reference, after(kind, 5))
        detected[kind] = {
            "drifted": report.drifted,
            "inputs": len(report.features),
            "psi": {f.feature: f.psi for f in report.features if f.drifted},
        }
        print(kind, report.drifted, flush=True)
    pool = after("control", 2).reset_index(drop=True)
    alarms, seconds = [], []
    for seed in range(seeds):
        order = np.random.default_rng(seed).permutation(len(pool))
        half = len(order) // 2
        reference = drift.reference_profile(pool.iloc[order[:half]], "ctr", feature_map)
        began = time.perf_counter()
        report = drift.run(runner, reference, pool.iloc[order[half:]])
        seconds.append(time.perf_counter() - began)
        alarms.append(report.drifted)
    rate = sum(bool(a) for a in alarms) / seeds
    flagged: dict[str, int] = {}
    for a in alarms:
        for name in a:
            flagged[name] = flagged.get(name, 0) + 1
    return {
        "detected": detected,
        "false_alarm": {
            "seeds": seeds,
            "rows_per_half": len(pool) // 2,
            "rate": rate,
            "features_flagged": flagged,
            "median_run_seconds": float(np.median(seconds)),
        },
        "thresholds": drift.Thresholds().__dict__,
    }


# --------------------------------------------------------------- next day

# The demo's world at a quarter of its scale (DEMO_SCALE=0.25): as many days before the
# live one (13: days 0-12 train the model, 13 and 14 are the live days), its users, ads
# and impressions in proportion, so the reference holds the same 6 days.
NEXT_DAY_TRAIN_DAYS = 13
NEXT_DAY_SCALE = 0.25
NEXT_DAY_KNOBS = ("device", "interest", "price")
BROKEN_FEATURE = "ad_ctr_7d"  # stuck at its fill value on the live days


def next_day_world(root: Path, spark, redis_url: str, seed: int, knob: str | None):
    """A simulated log of NEXT_DAY_TRAIN_DAYS + 2 days (``knob`` drifting it from the
    first live day), through the batch job and Feast: the labelled rows of every day."""
    from adstack.demo import simulation_config
    from pipelines.simulator import SimulationConfig
    from training.labels import label_window

    start = datetime(2026, 3, 2, tzinfo=UTC)
    demo = simulation_config(NEXT_DAY_SCALE)
    config = SimulationConfig(
        days=NEXT_DAY_TRAIN_DAYS + 2, users=demo.users, ads=demo.ads,
        impressions_per_day=demo.impressions_per_day, seed=seed, start=start,
        drift_day=NEXT_DAY_TRAIN_DAYS if knob else None,
        drift_kind=knob or "device",  # type: ignore[arg-type]
    )  # fmt: skip
    # Read after the last click window closed: every live day is whole, as the
    # validation's recent traffic is.
    return simulated_set(root, spark, redis_url, config, label_window("ctr")), start


def pooled_reference(train: pd.DataFrame, feature_map) -> drift.Reference:
    """The reference as it was before: every model input profiled on the whole train
    split, no input set apart, no spread measured between days (judged with any failed
    check counting as drift)."""
    return drift.Reference("ctr", len(train), drift.profile_columns(train, feature_map))


def next_day(seeds: int, knob_seeds: int, workdir: Path) -> dict:
    """The drift suite as a user meets it: a model's reference written from its training
    set (days 0-10), then each of the next two days against it. Undrifted worlds give
    the false alarms; worlds drifting from day 11 (device, interest) and a broken feature
    (``BROKEN_FEATURE`` stuck at its fill value on the live days of the undrifted
    worlds) give the detections."""
    from adstack import redis_server
    from adstack.flows import reference_rows
    from core.spark import spark_session
    from training.train import fit_feature_map

    spark = spark_session("bench-validation-next-day", "local[2]")
    server = redis_server.start(workdir / "redis", redis_server.free_port(), persist=False)
    runner = Runner()
    days: dict[str, list[dict]] = {
        "control": [],
        "broken_feature": [],
        **{k: [] for k in NEXT_DAY_KNOBS},
    }
    try:
        plan = [(seed, None) for seed in range(seeds)]
        plan += [(seed, knob) for knob in NEXT_DAY_KNOBS for seed in range(knob_seeds)]
        for seed, knob in plan:
            root = workdir / f"next-day-{knob or 'control'}-{seed}"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            began = time.perf_counter()
            built, start = next_day_world(root, spark, server.url, 100 + seed, knob)
            frame = built.frame
            live_from = start + timedelta(days=NEXT_DAY_TRAIN_DAYS)
            before = dataclasses.replace(built, frame=frame[frame["event_timestamp"] < live_from])
            feature_map = fit_feature_map(before)
            rows, history = reference_rows(before, feature_map)
            reference = drift.reference_profile(rows, "ctr", feature_map, history=history)
            pooled = pooled_reference(before.part("train"), feature_map)
            fill = {d.name: d.fill for d in feature_map.dense}
            for offset in (0, 1):
                day = frame[
                    (frame["event_timestamp"] >= live_from + timedelta(days=offset))
                    & (frame["event_timestamp"] < live_from + timedelta(days=offset + 1))
                ]
                cases = [(knob or "control", day)]
                if knob is None and BROKEN_FEATURE in fill:
                    cases.append(
                        ("broken_feature", day.assign(**{BROKEN_FEATURE: fill[BROKEN_FEATURE]}))
                    )
                for case, current in cases:
                    report = drift.run(runner, reference, current)
                    before_report = drift.run(runner, pooled, current)
                    ranked = sorted(
                        (f for f in report.features if f.drifted),
                        key=lambda f: -(f.psi or 0.0),
                    )
                    days[case].append({
                        "seed": seed, "live_day": offset + 1, "rows": len(current),
                        "reference_rows": reference.rows, "reference_days": reference.days,
                        "drifted": [f.feature for f in ranked],
                        "checks": {f.feature: f.failed_checks for f in ranked},
                        "pooled_any_check": [
                            f.feature for f in before_report.features if f.failed_checks
                        ],
                        "not_judged": sorted(reference.not_judged),
                    })  # fmt: skip
                    print(case, seed, offset + 1, [f.feature for f in ranked][:5], flush=True)
            shutil.rmtree(root / "data", ignore_errors=True)
            print(
                f"world {knob or 'control'} {seed}: {time.perf_counter() - began:.0f} s", flush=True
            )
    finally:
        redis_server.stop(workdir / "redis")
        spark.stop()
    # The input each case drifts (a prefix: the price knob moves every spend window).
    expected = {
        "device": "device",
        "broken_feature": BROKEN_FEATURE,
        "price": "advertiser_spend_",
        "interest": None,
    }

    def rate(case: str, day: int | None = None, key: str = "drifted") -> float | None:
        judged = [d for d in days[case] if day is None or d["live_day"] == day]
        return sum(bool(d[key]) for d in judged) / len(judged) if judged else None

    def detections(key: str = "drifted") -> dict[str, dict[str, float | None]]:
        return {
            case: {"first_live_day": rate(case, 1, key), "second_live_day": rate(case, 2, key)}
            for case in (*NEXT_DAY_KNOBS, "broken_feature")
        }

    def ranked_first(case: str, name: str) -> float | None:
        """Of the days ``case`` was flagged on, the share with ``name`` ranked first."""
        flagged_days = [d["drifted"] for d in days[case] if d["drifted"]]
        if not flagged_days:
            return None
        return sum(drifted[0].startswith(name) for drifted in flagged_days) / len(flagged_days)

    flagged: dict[str, int] = {}
    for d in days["control"]:
        for name in d["drifted"]:
            flagged[name] = flagged.get(name, 0) + 1
    return {
        "pooled_reference": {
            "next_day_false_alarm_rate": rate("control", 1, "pooled_any_check"),
            "detection_rate": detections("pooled_any_check"),
        },
        "next_day_false_alarm_rate": rate("control", 1),
        "second_day_false_alarm_rate": rate("control", 2),
        "detection_rate": detections(),
        "ranked_first_rate": {
            case: ranked_first(case, name)
            for case, name in expected.items()
            if name is not None and case in days
        },
        "control_inputs_flagged": flagged,
        "seeds": seeds,
        "knob_seeds": knob_seeds,
        "days": days,
        "world": {"train_days": NEXT_DAY_TRAIN_DAYS, "demo_scale": NEXT_DAY_SCALE},
        "thresholds": drift.Thresholds().__dict__,
        "null_multiples": {
            "signed": drift.NULL_SIGNED,
            "divergence": drift.NULL_DIVERGENCE,
            "tail": drift.NULL_TAIL,
            "by_reference_days": {
                str(k): drift.null_multiples(k)
                for k in sorted({d["reference_days"] for d in days["control"]})
            },
        },
    }


def section(figures: dict, command: str) -> list[str]:
    lines = ["## Validation", ""]
    timing_runs = figures.get("timing", {}).get("runs", [])
    if timing_runs:
        lines += [
            f"Drift suite over {figures['timing']['inputs']} model inputs (reference profile "
            f"of {REFERENCE_ROWS:,} rows), whole run (GX suites + PSI/KS) on 2 cores"
            + (f" ({figures['timing']['note']})" if figures["timing"].get("note") else "")
            + ":",
            "",
            "| rows | pandas (s) | pandas load (s) | Spark local[2] (s) | pandas/Spark "
            "| peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        for run in timing_runs:
            pandas_s = run.get("pandas_seconds")
            ratio = f"{pandas_s / run['spark_seconds']:.2f}" if pandas_s else "n/a"
            shown = f"{pandas_s:.1f}" if pandas_s else run.get("pandas_error", "n/a")
            lines.append(
                f"| {run['rows']:,} | {shown} | {run['pandas_load_seconds']:.1f} | "
                f"{run['spark_seconds']:.1f} | {ratio} | {run['peak_rss_gib']} GiB |"
            )
        lines.append("")
    det = figures.get("detection")
    if det:
        fa = det["false_alarm"]
        lines += [
            f"False alarms: {fa['rate']:.1%} of {fa['seeds']} same-distribution splits "
            f"({fa['rows_per_half']:,} rows each side) flagged any input "
            f"(flagged: {fa['features_flagged'] or 'none'}); median run "
            f"{fa['median_run_seconds']:.1f} s.",
            "",
        ]
        for kind, found in det["detected"].items():
            psi = ", ".join(f"{k} {v:.2f}" for k, v in found["psi"].items() if v is not None)
            lines.append(
                f"- {kind} drift knob: {len(found['drifted'])} of {found['inputs']} inputs "
                f"flagged: {', '.join(found['drifted']) or 'none'} (PSI: {psi or 'n/a'})"
            )
        lines.append("")
    carried = figures.get("carried", {}).get("validation")
    if carried and (timing_runs or det):
        by, on, commit = carried
        lines += [f"Command: `{by}` (run of {on}, commit {commit})", ""]
    nd = figures.get("next_day")
    if nd:

        def pct(value):
            return "n/a" if value is None else f"{value:.0%}"

        met = (nd["next_day_false_alarm_rate"] or 0.0) <= 0.05
        lines += [
            f"Next day, as a user meets it (model reference from days 0-"
            f"{nd.get('world', {}).get('train_days', 11) - 1} of a simulated log, each of the "
            f"next two days against it): false alarms on "
            f"{pct(nd['next_day_false_alarm_rate'])} of {nd['seeds']} undrifted next days "
            f"(goal at most 5%: {'met' if met else 'missed'}), "
            f"{pct(nd['second_day_false_alarm_rate'])} of the days after (inputs flagged, "
            f"with the undrifted days they were flagged on: "
            + (", ".join(f"{k} {v}" for k, v in sorted(nd["control_inputs_flagged"].items(),
                                                        key=lambda kv: -kv[1]))
               or "none")
            + ").",
            "",
        ]  # fmt: skip
        for case, found in nd["detection_rate"].items():
            lines.append(
                f"- {case}: flagged on {pct(found['first_live_day'])} of first drifted days, "
                f"{pct(found['second_live_day'])} of second ones"
                + (f"; the drifted input ranked first on {pct(nd['ranked_first_rate'][case])} of "
                   "the days flagged"
                   if case in nd["ranked_first_rate"] and any(found.values()) else "")
            )  # fmt: skip
        pooled = nd["pooled_reference"]
        if not met:
            lines += [
                "",
                "While undrifted days are flagged this often, the detection rates above say "
                "little about the knobs.",
            ]
        lines += [
            "",
            f"The same days against the reference as it was (the whole train split, every "
            f"input judged, any failed check counting as drift): false alarms on "
            f"{pct(pooled['next_day_false_alarm_rate'])} of next days; "
            + "; ".join(
                f"{case}: {pct(r['first_live_day'])} / {pct(r['second_live_day'])}"
                for case, r in pooled["detection_rate"].items()
            )
            + ".",
            "",
        ]
        if nd.get("not_done"):
            lines += [f"Not done: {nd['not_done']}", ""]
    lines += [f"Command: `{command}`", ""]
    return lines


KEPT = ("timing", "detection", "next_day")


def rows(figures: dict) -> dict[str, tuple[str, ...]]:
    """The BENCHMARKS.md rows, from the recorded figures alone; a row carried from an
    earlier run names that run (``carried``)."""
    found: dict[str, tuple[str, ...]] = {}
    runs = figures.get("timing", {}).get("runs", [])
    largest = runs[-1] if runs else None
    fa = figures.get("detection", {}).get("false_alarm", {})
    if largest:
        pandas_s = largest.get("pandas_seconds")
        found["validation"] = (
            f"drift suite {largest['rows']:,} rows: pandas "
            f"{pandas_s if pandas_s is not None else float('nan'):.0f} s; "
            f"false alarms {fa.get('rate', float('nan')):.1%} of {fa.get('seeds', 0)} splits",
            f"Spark local[2] {largest['spark_seconds']:.0f} s",
            f"{pandas_s / largest['spark_seconds']:.2f}x" if pandas_s else "n/a",
        )
    nd = figures.get("next_day")
    if nd:

        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.0%}"

        def detections(rates: dict) -> str:
            return ", ".join(
                f"{case.replace('_', ' ')} {pct(r['first_live_day'])}/{pct(r['second_live_day'])}"
                for case, r in rates.items()
            )

        fa_rate = nd["next_day_false_alarm_rate"]
        missed = [
            case for case, r in nd["detection_rate"].items()
            if min(r["first_live_day"] or 0.0, r["second_live_day"] or 0.0) < 0.95
        ]  # fmt: skip
        pooled = nd["pooled_reference"]
        found["validation_next_day"] = (
            f"next-day false alarms {pct(fa_rate)} of {nd['seeds']} undrifted simulated days "
            f"(goal <= 5%: {'met' if (fa_rate or 0.0) <= 0.05 else 'missed'}); flagged on "
            f"first/second drifted days: {detections(nd['detection_rate'])} (goal >= 95%: "
            + (f"missed for {', '.join(missed)}" if missed else "met")
            + f"; {nd['knob_seeds']} worlds per knob)",
            f"train-split reference, any failed check: false alarms "
            f"{pct(pooled['next_day_false_alarm_rate'])}; {detections(pooled['detection_rate'])}",
            f"false alarms {pct(fa_rate)} vs {pct(pooled['next_day_false_alarm_rate'])}",
        )
    for row, origin in figures.get("carried", {}).items():
        if row in found:
            found[row] = (*found[row], *origin)
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--parts", nargs="+", default=["timing", "detection", "next_day"])
    parser.add_argument(
        "--knob-seeds", type=int, default=5, help="drifted worlds per knob (next_day)"
    )
    parser.add_argument("--note", default="", help="What else ran on the machine, for the record.")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench-validation"
    )
    parser.add_argument("--quick", action="store_true", help="smoke check into results/quick")
    args = parser.parse_args(argv)
    if args.quick:  # the suites on small frames; detection's worlds are the tests' job
        use_quick()
        args.rows, args.seeds, args.parts = [50_000], 3, ["timing"]
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = results_dir() / "validation.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    figures = {k: v for k, v in previous.items() if k in KEPT}
    command = (
        "python -m bench.validation "
        + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in (("rows", args.rows), ("seeds", args.seeds), ("parts", args.parts))
        )
        + (f" --knob-seeds {args.knob_seeds}" if "next_day" in args.parts else "")
    )
    if "timing" in args.parts:
        reference_rows, max_inputs = (20_000, 12) if args.quick else (REFERENCE_ROWS, None)
        figures["timing"] = timing(args.rows, args.workdir, reference_rows, max_inputs) | {
            "note": args.note
        }
    if "detection" in args.parts:
        figures["detection"] = detection(args.seeds, args.workdir)
    if "next_day" in args.parts:
        figures["next_day"] = next_day(args.seeds, args.knob_seeds, args.workdir)
    figures = {k: v for k, v in figures.items() if k in KEPT}
    if "next_day" in figures:  # the keys, at the top level
        figures["next_day_false_alarm_rate"] = figures["next_day"]["next_day_false_alarm_rate"]
        figures["detection_rate"] = figures["next_day"]["detection_rate"]
    # Rows showing an earlier run's figures keep that run's command, date and commit.
    carried = dict(previous.get("carried", {}))
    if "timing" not in args.parts and "validation" in previous.get("markdown_rows", {}):
        row = previous["markdown_rows"]["validation"]
        carried["validation"] = [
            row["command"],
            row["date"],
            row.get("commit", previous.get("commit")),
        ]
    for part, row in (("timing", "validation"), ("next_day", "validation_next_day")):
        if part in args.parts:
            carried.pop(row, None)
    figures["carried"] = carried
    save_rows("validation", figures, rows(figures), command=command)
    write_section("validation", section(figures, command))
    os.sync()


if __name__ == "__main__":
    main()
