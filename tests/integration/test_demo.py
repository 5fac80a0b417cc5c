"""`adstack demo` at a small scale: data lands where it says, the live day runs the stream
worker and the scorer as processes, and it stops every process it started. The run
drifts the live day's device mix (`--drift-day 13 --drift-kind device`): the drift suite
fails and names `device`."""

import json
import os
import re
import shutil

from typer.testing import CliRunner

from adstack import cli, redis_server
from core import events
from core.settings import get_settings
from feature_repo import contract


def test_demo_runs_end_to_end_and_stops_what_it_started(settings_env, monkeypatch):
    monkeypatch.setenv("DEMO_SCALE", "0.02")
    port = redis_server.free_port()
    monkeypatch.setenv("ADSTACK_REDIS_PORT", str(port))
    monkeypatch.setenv("ADSTACK_SAMPLE_LOGS", str(settings_env / "no-logs-here"))
    repo = shutil.copytree(
        get_settings().feature_repo,
        settings_env / "feature_repo",
        ignore=shutil.ignore_patterns(".feast", "__pycache__"),
    )
    monkeypatch.setenv("ADSTACK_FEATURE_REPO", str(repo))
    get_settings.cache_clear()
    # Wide enough that the summary table's cells are not wrapped.
    monkeypatch.setattr(cli.console, "width", 220)
    result = CliRunner().invoke(cli.app, ["demo", "--drift-day", "13", "--drift-kind", "device"])
    assert result.exit_code == 0, result.output
    assert "online store answers PING: True" in result.output
    assert "stopped redis-server" in result.output
    assert redis_server.status(settings_env / ".adstack" / "redis") is None
    written = events.read_table(events.IMPRESSIONS, settings_env / "data" / "events")
    assert written.num_rows == 14 * 2_000
    keys = re.search(r"online store holds ([\d,]+) entity keys", result.output)
    assert keys and int(keys.group(1).replace(",", "")) > 100, result.output
    assert (settings_env / "reports" / "ingest" / "simulator.json").exists()
    assert f"feast apply: {len(contract.ALL_VIEWS)} feature views registered" in result.output
    assert (repo / ".feast" / "registry.db").exists()
    for view in ("user_daily", "ad_daily", "ad_profile"):
        assert any((settings_env / "data" / "features" / view).glob("date=*/*.parquet"))
    streamed = re.search(
        r"replayed ([\d,]+) events .* the stream worker counted ([\d,]+) events "
        r"\(0 late, 0 invalid\) and pushed ([\d,]+) rows",
        result.output,
    )
    assert streamed, result.output
    replayed, counted = (int(streamed.group(i).replace(",", "")) for i in (1, 2))
    assert counted == replayed >= 2_000
    # Both children were started as processes and stopped by the demo.
    pids = {
        name: int(pid)
        for name, pid in re.findall(r"(stream worker|scorer) pid (\d+)", result.output)
    }
    assert set(pids) == {"stream worker", "scorer"}, result.output
    for name, pid in pids.items():
        assert f"stopped {name} pid {pid}" in result.output
        assert not alive(pid), name
    pushed = settings_env / "data" / "features" / "user_stream_push_log"
    assert len(list(pushed.glob("date=*/*.parquet"))) > 1
    # Both models are trained from audited Feast training sets and registered.
    assert result.output.count("0 mismatches") == 2, result.output
    for task in ("ctr", "cvr"):
        assert f"registered {task} version 1" in result.output
        assert (settings_env / "reports" / "training" / task / "report.json").exists()
    assert (settings_env / ".adstack" / "mlflow.db").exists()
    # The validation report: every suite ran on the demo's data, and its HTML exists.
    summary = json.loads((settings_env / "reports" / "validation" / "summary.json").read_text())
    assert (settings_env / "reports" / "validation" / "data_docs" / "index.html").exists()
    assert f"validation Data Docs (HTML): {summary['data_docs']}" in result.output
    assert {v["view"] for v in summary["quality"]} >= set(contract.VIEWS)
    failed_quality = [v["view"] for v in summary["quality"] if not v["passed"]]
    assert failed_quality == [], summary["failures"]
    assert set(summary["drift"]) == set(summary["calibration"]) == {"ctr", "cvr"}
    assert summary["drift"]["ctr"]["current_rows"] > 100
    assert summary["skew"]["rows"] > 100 and summary["skew"]["skewed"] == [], summary["skew"]
    answered = re.search(
        r"scorer answered ([\d,]+) of ([\d,]+) auctions \(0 5xx, 0 unanswered", result.output
    )
    assert answered and answered.group(1) == answered.group(2), result.output
    assert int(answered.group(2).replace(",", "")) >= 300
    # The summary's figures come from this run.
    assert "adstack demo summary" in result.output
    assert "pushed spend equals billed events" in result.output
    for figure in ("AUC (simulator ceiling)", "fill rate", "latency p50 / p99", "event to online"):
        assert figure in result.output
    figures = json.loads((settings_env / "reports" / "demo" / "summary.json").read_text())
    live = figures["live_day"]
    assert live["statuses"] == {"200": live["auctions"]}
    assert live["stream"]["events"] == live["events_replayed"] == replayed
    assert 0 < live["fill_rate"] <= 1 and live["latency_ms"]["p99"] >= live["latency_ms"]["p50"]
    assert live["budget"]["matches_events"] is True
    for task in ("ctr", "cvr"):
        model = figures["models"][task]
        assert model["test"]["rows"] == model["ceiling"]["rows"] > 0, model
    # The simulator's true click probabilities rank better than the model (the CVR test
    # set of this tiny demo has too few conversions to order them reliably).
    ctr = figures["models"]["ctr"]
    assert ctr["ceiling"]["auc"] > ctr["test"]["auc"] > 0.5, ctr
    # Every validation suite's outcome, with its reasons when it failed; the day of week
    # is reported apart from drift, not judged.
    outcomes = figures["validation"]["suites"]
    assert {o["suite"] for o in outcomes} == {"quality", "drift", "calibration", "skew"}
    # Every failure of the validation run is the reason of exactly one suite's outcome.
    assert [r for o in outcomes for r in o["reasons"]] == summary["failures"], outcomes
    assert [o["passed"] for o in outcomes] == [not o["reasons"] for o in outcomes]
    assert figures["validation"]["passed"] == all(o["passed"] for o in outcomes)
    assert "day_of_week" in figures["validation"]["drift_not_judged"]["ctr"]
    # The live day's device mix moved: the drift suite fails and names the input.
    assert figures["drift"] == {"day": 13, "kind": "device"}
    drift_outcomes = [o for o in outcomes if o["suite"] == "drift"]
    assert drift_outcomes and not all(o["passed"] for o in drift_outcomes), drift_outcomes
    assert "device" in figures["validation"]["drifted"]["ctr"], figures["validation"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent's wait is missing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"
