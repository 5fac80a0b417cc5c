"""`adstack demo --drift-day/--drift-kind`: refused with the flag named before any work,
and passed to the simulated world."""

import pytest
from typer.testing import CliRunner

from adstack import cli, demo


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--drift-day", "14"], "--drift-day"),
        (["--drift-day", "0"], "--drift-day"),
        (["--drift-day", "13", "--drift-kind", "weather"], "--drift-kind"),
    ],
)
def test_bad_drift_options_are_refused_naming_the_flag(argv, flag, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("the demo started")

    monkeypatch.setattr(demo, "run", started)
    result = CliRunner().invoke(cli.app, ["demo", *argv])
    assert result.exit_code == 2
    assert flag in result.output


def test_drift_options_reach_the_simulation(monkeypatch):
    seen = {}

    def run(settings, console, drift_day, drift_kind):
        seen.update(day=drift_day, kind=drift_kind)
        return []

    monkeypatch.setattr(demo, "run", run)
    result = CliRunner().invoke(cli.app, ["demo", "--drift-day", "13", "--drift-kind", "price"])
    assert result.exit_code == 0, result.output
    assert seen == {"day": 13, "kind": "price"}
    config = demo.simulation_config(0.02, seen["day"], seen["kind"])
    assert (config.drift_day, config.drift_kind, config.days) == (13, "price", demo.DAYS)
    assert demo.simulation_config(0.02).drift_day is None
