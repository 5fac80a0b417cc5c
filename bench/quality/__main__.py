"""``python -m bench.quality``: arguments, the run, the record."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from bench import quality
from bench.harness import results_dir, use_quick
from bench.quality.parts import real_log, simulator_ctr, simulator_cvr
from bench.quality.plan import COMMAND, FULL, PARTS, QUICK, THREADS, Scale, log
from bench.quality.prepare import REAL, Prepared, Services, prepare
from bench.quality.report import keep_earlier_parts, record
from training.train import TrainConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description=(quality.__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--workdir", type=Path, help="prepare data here and keep it")
    parser.add_argument(
        "--reuse", type=Path, help="a --workdir of an earlier run: data/, ds_ctr/, ds_cvr/, ..."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every part, small (a few minutes); records to bench/results/quick/ only",
    )
    parser.add_argument("--epochs", type=int, help="default: TrainConfig's, 2 with --quick")
    parser.add_argument(
        "--variant-budget",
        type=float,
        help="seconds for DCN hyper-parameter variants (0: none); later variants are skipped "
        "(default 420, 1 with --quick)",
    )
    parser.add_argument(
        "--train-fraction", type=float, default=1.0, help="development only: thin train splits"
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument(
        "--record-only", type=Path, help="write the report from a saved figures file"
    )
    args = parser.parse_args(argv)
    scale = scale_of(args)
    if args.epochs is None:
        args.epochs = scale.epochs or TrainConfig().epochs
    if args.variant_budget is None:
        args.variant_budget = scale.variant_budget
    return args


def scale_of(args: argparse.Namespace) -> Scale:
    return QUICK if args.quick else FULL


def run(args: argparse.Namespace, prepared: Prepared, services: Services) -> dict:
    figures: dict = {"parameters": {k: str(v) for k, v in vars(args).items()}, "not_done": []}
    began = time.perf_counter()
    figures["prepare_seconds"] = prepare(
        args, prepared, services, scale_of(args), figures["not_done"]
    )
    figures["prepare_seconds"]["total"] = time.perf_counter() - began
    sections = {
        "sim_ctr": lambda: simulator_ctr(prepared, args, figures["not_done"]),
        "sim_cvr": lambda: simulator_cvr(prepared, args),
        "talkingdata": lambda: real_log(prepared, "talkingdata", "install", args),
        "open_bandit": lambda: real_log(prepared, "open_bandit", "click", args),
    }
    for part in args.parts:
        if part in REAL and not prepared.real_set(part).exists():
            reason = f"{REAL[part][1]} is absent" if not REAL[part][1].exists() else "see above"
            figures["not_done"].append({"what": part, "reason": reason})
            log(f"skipping {part}: {reason}")
            continue
        began = time.perf_counter()
        try:
            figures[part] = sections[part]()
        except Exception as error:  # one failed part must not lose the others
            figures["not_done"].append({"what": part, "reason": f"{type(error).__name__}: {error}"})
            log(f"{part} failed: {error!r}")
            continue
        figures[part]["seconds"] = time.perf_counter() - began
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scale = scale_of(args)
    if args.quick:
        use_quick()
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    if args.record_only:
        saved = json.loads(args.record_only.read_text())
        recorded = saved["command"].replace(" --no-record", "")
        print(f"wrote {record(saved['figures'], recorded)}")
        return
    torch.set_num_threads(THREADS)
    began = time.perf_counter()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-quality-")))
        root = args.reuse or args.workdir or scratch / "work"
        root.mkdir(parents=True, exist_ok=True)
        services = Services(stack, scratch)
        figures = run(args, Prepared(root), services)
    figures["total_seconds"] = time.perf_counter() - began
    # Kept before the report is written, so a report bug costs no re-run (--record-only).
    raw = Path(tempfile.gettempdir()) / f"bench-quality-{scale.name}-figures.json"
    raw.write_text(json.dumps({"command": command, "figures": figures}, default=float))
    print(f"figures saved to {raw}")
    if not args.no_record:
        carried = keep_earlier_parts(figures, args.parts, results_dir() / "quality.json")
        if carried:
            print(f"parts kept from the last recorded run: {', '.join(carried)}")
        print(f"wrote {record(figures, command)}")
    short = {k: v for k, v in figures.items() if k in ("not_done", "prepare_seconds")}
    print(json.dumps(short, indent=1, default=float))


if __name__ == "__main__":
    main()
