"""The embedded redis-server: real process, real persistence, REDIS_URL override."""

import redis
from typer.testing import CliRunner

from adstack import redis_server
from adstack.cli import app
from core.settings import get_settings

runner = CliRunner()


def test_session_fixture_is_a_real_redis_server(redis_client):
    redis_client.set("k", "v")
    assert redis_client.get("k") == b"v"
    assert redis_client.info("server")["redis_version"].startswith("6.")


def test_cli_start_persists_and_stop_ends_exactly_that_process(settings_env, monkeypatch):
    port = redis_server.free_port()
    monkeypatch.setenv("ADSTACK_REDIS_PORT", str(port))
    get_settings.cache_clear()
    result = runner.invoke(app, ["redis", "start"])
    assert result.exit_code == 0, result.output
    server = redis_server.read_pid_file(settings_env / ".adstack" / "redis")
    assert server is not None and server.port == port
    client = redis.Redis(port=port)
    client.set("survives", "restart")
    client.close()

    assert runner.invoke(app, ["redis", "start"]).exit_code == 1  # already running
    assert runner.invoke(app, ["redis", "stop"]).exit_code == 0
    assert redis_server.status(settings_env / ".adstack" / "redis") is None
    assert not redis_server._is_our_redis(server.pid)
    assert (settings_env / ".adstack" / "redis" / "appendonly.aof").exists()

    assert runner.invoke(app, ["redis", "start"]).exit_code == 0
    client = redis.Redis(port=port)
    assert client.get("survives") == b"restart"
    client.close()
    assert runner.invoke(app, ["redis", "stop"]).exit_code == 0
    assert runner.invoke(app, ["redis", "status"]).exit_code == 1


def test_start_reports_a_port_already_taken(tmp_path, redis_url):
    taken = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    try:
        redis_server.start(tmp_path, taken, persist=False, timeout_s=5)
    except redis_server.RedisServerError as error:
        assert str(taken) in str(error)
    else:
        raise AssertionError("a second server on a taken port must fail")


def test_redis_url_overrides_the_embedded_server(settings_env, monkeypatch, redis_url):
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    settings = get_settings()
    assert not settings.embedded_redis and settings.effective_redis_url == redis_url
    result = runner.invoke(app, ["redis", "start"])
    assert result.exit_code == 0 and "using that server" in result.output
    assert not (settings_env / ".adstack" / "redis" / "redis.pid").exists()
