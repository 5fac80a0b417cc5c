"""The offline AUC a leaky join would fake: point-in-time features against whole-log ones.

On the simulator's default 14-day log (``bench.quality``'s preparation: Spark batch
features, ``feast apply``, the CTR training set from Feast's point-in-time join), the
same logistic regression (2 epochs, same rows and splits) is trained twice: on the
honest set and on its leaky twin, whose daily aggregates are replaced with their
whole-log values (each row's own outcome included), as a join without time semantics
would give. Before that, the leakage audit recomputes every joined feature of sampled
rows from the raw events and must find no mismatch.

    python -m bench.leakage [--workdir DIR | --reuse DIR] [--rows 1000] [--quick]

``--reuse`` takes a ``bench.quality`` work folder that already holds the CTR set.
Results: ``bench/results/leakage.json`` and the ``leakage_gap`` row of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.harness import save_rows, use_quick
from bench.quality.plan import FULL, QUICK
from bench.quality.prepare import Prepared, Services, prepare_simulator
from training import dataset, leakage
from training.models import ModelConfig
from training.train import TrainConfig

COMMAND = "python -m bench.leakage"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="prepare the data here (kept)")
    parser.add_argument("--reuse", type=Path, help="a bench.quality work folder")
    parser.add_argument("--rows", type=int, default=1000, help="rows the audit recomputes")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke check into results/quick")
    return parser.parse_args(argv)


def measure(prepared: Prepared, rows: int, epochs: int) -> dict:
    training_set = dataset.load(prepared.sim_set("ctr"))
    views = list(dict.fromkeys(f.view for f in training_set.features))
    began = time.perf_counter()
    audit = leakage.audit(prepared.sim_data, training_set.frame, views, rows, seed=0)
    audit_seconds = time.perf_counter() - began
    config = TrainConfig(model=ModelConfig(kind="lr"), epochs=epochs)
    began = time.perf_counter()
    gap = leakage.auc_gap(prepared.sim_data, training_set, config)
    return {
        "audit": audit.as_dict(),
        "audit_seconds": audit_seconds,
        "auc_gap": gap.as_dict(),
        "gap_seconds": time.perf_counter() - began,
        "epochs": epochs,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        use_quick()
        args.rows, args.epochs = 200, 1
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-leak-")))
        root = args.reuse or args.workdir or scratch / "work"
        prepared, services = Prepared(root), Services(stack, scratch)
        timings = {}
        if not prepared.sim_set("ctr").exists():
            if args.reuse:
                raise SystemExit(f"{args.reuse} holds no CTR set: run bench.quality there first")
            timings = prepare_simulator(prepared, services, QUICK if args.quick else FULL)
        figures = measure(prepared, args.rows, args.epochs) | {"prepare_seconds": timings}
    audit, gap = figures["audit"], figures["auc_gap"]
    row = (
        "test-day AUC with whole-log aggregates (the row's own outcome included) "
        f"{gap['leaky_auc']:.4f}",
        f"honest point-in-time features {gap['honest_auc']:.4f} (same LR, {args.epochs} "
        f"epochs, same rows and splits; {audit['rows']:,}-row leakage audit: "
        f"{audit['compared']:,} values, {audit['mismatches']:,} mismatches)",
        f"{gap['gap']:+.4f} AUC of offline flattery",
    )
    path = save_rows(
        "leakage", {"command": command, **figures}, {"leakage_gap": row}, command=command
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
