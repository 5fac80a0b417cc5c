"""Children (the scorer, the stream worker) do not inherit the Prometheus multi-process
folder that importing Feast sets in this process's environment."""

from __future__ import annotations

import pytest

from adstack.processes import child_environment


def test_feasts_prometheus_folder_stays_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import feast.metrics  # noqa: F401  (sets the variables, as any Feast import does)

    assert os.environ["PROMETHEUS_MULTIPROC_DIR"]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/feast_metrics_abc")
    monkeypatch.setenv("PROMETHEUS_MULTIPROCESS_DIR", "/tmp/feast_metrics_abc")
    env = child_environment({"ADSTACK_X": "1"})
    assert "PROMETHEUS_MULTIPROC_DIR" not in env and "PROMETHEUS_MULTIPROCESS_DIR" not in env
    assert env["ADSTACK_X"] == "1"
    # A folder the user chose (a multi-process deployment) is passed on.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/var/run/prometheus")
    assert child_environment({})["PROMETHEUS_MULTIPROC_DIR"] == "/var/run/prometheus"
