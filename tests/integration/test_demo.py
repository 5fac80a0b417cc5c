"""`adstack demo` at a small scale: data lands where it says, and it stops its Redis."""

from typer.testing import CliRunner

from adstack import redis_server
from adstack.cli import app
from adstack.settings import get_settings
from pipelines import events


def test_demo_runs_end_to_end_and_stops_what_it_started(settings_env, monkeypatch):
    monkeypatch.setenv("DEMO_SCALE", "0.02")
    monkeypatch.setenv("ADSTACK_REDIS_PORT", str(redis_server.free_port()))
    monkeypatch.setenv("ADSTACK_SAMPLE_LOGS", str(settings_env / "no-logs-here"))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "online store answers PING: True" in result.output
    assert "stopped redis-server" in result.output
    assert redis_server.status(settings_env / ".adstack" / "redis") is None
    written = events.read_table(events.IMPRESSIONS, settings_env / "data" / "events")
    assert written.num_rows == 7 * 2_000
    assert (settings_env / "reports" / "ingest" / "simulator.json").exists()
