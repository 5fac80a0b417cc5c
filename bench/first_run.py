"""A first run as a new user meets it: a fresh clone, ``make setup``, ``make demo``.

The committed HEAD is cloned into a scratch folder (no ``.venv``, no data, no state),
then ``make setup`` (a virtual environment, ``pip install -e '.[dev]'``, the Java check)
and ``make demo`` run there one after the other, each timed as a whole process. pip's
download cache is whatever this machine has (say which in the results: a first install
from an empty cache adds the downloads, about 1 GB with torch and pyspark); nothing else
is shared with the working copy.

Recorded: the wall time of each step and their sum against the goal (under 10 minutes,
set-up included), the demo's own ``reports/demo/summary.json`` (every validation suite's
outcome, the models' champion status and gate reasons), and the terminal's lines: how
many, and those that look like library noise (warnings, leak dumps, stack traces).

    python -m bench.first_run [--keep DIR]

Results: ``bench/results/first_run.json`` (keys ``wall_seconds``, ``setup_seconds``,
``demo_seconds``, ``goal_seconds``, ``met``, ``suites_passed``, ``champions``) and its
row of BENCHMARKS.md. Run it on a machine with nothing else going on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, record

COMMAND = "python -m bench.first_run"
GOAL_SECONDS = 600.0
# Lines a quiet first run should not print: library warnings, leak dumps, tracebacks.
NOISE = re.compile(r"warn|leaked|traceback|deprecat|exception", re.IGNORECASE)


def run_step(target: str, clone: Path, env: dict[str, str]) -> tuple[float, int, list[str]]:
    """``make <target>`` in the clone: wall seconds, exit code, the terminal's lines."""
    began = time.perf_counter()
    result = subprocess.run(
        ["make", target], cwd=clone, env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - began
    lines = (result.stdout + result.stderr).splitlines()
    return seconds, result.returncode, lines


def pip_cache(env: dict[str, str]) -> str:
    """Whether pip's download cache holds wheels already (then the install downloads
    little) or is empty."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "cache", "dir"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    folder = Path(result.stdout.strip()) if result.returncode == 0 else None
    if folder is None or not folder.exists():
        return "none"
    return "warm" if any(folder.rglob("*.whl")) or any(folder.glob("http*/*")) else "empty"


def first_run(keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-first-run-") as scratch:
        base = keep or Path(scratch)
        clone = base / "adstack"
        shutil.rmtree(clone, ignore_errors=True)
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)], check=True
        )
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=clone,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ADSTACK_", "VIRTUAL_"))}
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p
        )
        cache = pip_cache(env)
        setup_seconds, setup_code, setup_lines = run_step("setup", clone, env)
        if setup_code != 0:
            raise RuntimeError("make setup failed:\n" + "\n".join(setup_lines[-40:]))
        demo_seconds, demo_code, demo_lines = run_step("demo", clone, env)
        summary_path = clone / "reports" / "demo" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        suites = summary.get("validation", {}).get("suites", [])
        models = summary.get("models", {})
        noise = [line for line in demo_lines if NOISE.search(line)]
        wall = setup_seconds + demo_seconds
        return {
            "commit_cloned": head,
            "pip_cache": cache,
            "wall_seconds": wall,
            "setup_seconds": setup_seconds,
            "demo_seconds": demo_seconds,
            "demo_own_seconds": summary.get("seconds"),
            "goal_seconds": GOAL_SECONDS,
            "met": wall < GOAL_SECONDS and demo_code == 0,
            "demo_exit_code": demo_code,
            "suites_passed": bool(suites) and all(s["passed"] for s in suites),
            "suites": suites,
            "champions": {task: bool(m.get("champion")) for task, m in models.items()},
            "gate_reasons": {task: m.get("gate_reasons", []) for task, m in models.items()},
            "terminal_lines": len(demo_lines),
            "noise_lines": noise[:50],
            "noise_line_count": len(noise),
            "step_seconds": summary.get("step_seconds", {}),
        }


def row(figures: dict) -> dict[str, str]:
    failed = [f"{s['suite']} ({s['subject']})" for s in figures["suites"] if not s["passed"]]
    losers = [t for t, champion in figures["champions"].items() if not champion]
    verdict = "met" if figures["met"] else "missed"
    return {
        "result": (
            f"fresh clone, `make setup` {figures['setup_seconds']:.0f} s + `make demo` "
            f"{figures['demo_seconds']:.0f} s = {figures['wall_seconds'] / 60:.1f} min wall "
            f"(pip cache {figures['pip_cache']}); suites "
            + ("all passed" if not failed else "failed: " + ", ".join(failed))
            + "; champions: "
            + ", ".join(f"{t} {'yes' if c else 'no'}" for t, c in figures["champions"].items())
            + (f" ({', '.join(losers)} refused by the gate)" if losers else "")
            + f"; {figures['noise_line_count']} noise lines of {figures['terminal_lines']}"
        ),
        "baseline": f"goal: under {figures['goal_seconds'] / 60:.0f} min including set-up",
        "ratio": f"{figures['wall_seconds'] / figures['goal_seconds']:.2f}x the goal: {verdict}",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into DIR/adstack and keep it")
    args = parser.parse_args(argv)
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    figures = first_run(args.keep)
    path = record("first_run", figures, **row(figures), command=command)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
