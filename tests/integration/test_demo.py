"""`adstack demo` at a small scale: data lands where it says, and it stops its Redis."""

import json
import re
import shutil

from typer.testing import CliRunner

from adstack import redis_server
from adstack.cli import app
from adstack.settings import get_settings
from feature_repo import contract
from pipelines import events


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
    result = CliRunner().invoke(app, ["demo"])
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
        r"stream worker counted ([\d,]+) events .* pushed ([\d,]+) rows", result.output
    )
    assert streamed, result.output
    assert int(streamed.group(1).replace(",", "")) >= 2_000
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
    assert "scorer answered 300 of 300 auctions" in result.output
