"""What a run measures, on which data, and against which goals."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.harness import ROOT

COMMAND = "python -m bench.quality"
START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 14
SHARED = ROOT.parent / "shared" / "data"
TALKINGDATA = SHARED / "talkingdata_sample"
OPEN_BANDIT = SHARED / "open_bandit"
PARTS = ("sim_ctr", "sim_cvr", "talkingdata", "open_bandit")
THREADS = 2
# Goals from the issue.
GOAL_AUC_GAP = 0.01
GOAL_NE_GAP = 0.03
GOAL_ECE = 0.005
GOAL_SPEEDUP = 3.0


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)
