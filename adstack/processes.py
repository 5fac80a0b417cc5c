"""Child processes the platform starts (the scorer, the stream worker): started in their
own session with their output in a log file, waited for until ready, and stopped by
their own process group only, SIGTERM first and SIGKILL after a grace period."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# Importing Feast (feast/metrics.py) points these at a temporary folder of its own in
# os.environ, which switches prometheus_client into multi-process mode in every child
# started afterwards: the scorer's metrics would live in that folder's files and its
# label reset warns on every model change. A child gets them only if they were set
# before Feast was imported (the value Feast leaves alone).
FEAST_PROMETHEUS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment and ``extra``, less the Prometheus multi-process
    folder Feast's import created."""
    env = {**os.environ, **extra}
    for name in FEAST_PROMETHEUS_VARIABLES:
        if name not in extra and Path(env.get(name, "/")).name.startswith("feast_metrics_"):
            env.pop(name)
    return env


def start(
    name: str,
    command: list[str],
    env: dict[str, str],
    log: Path,
    ready: Callable[[], bool] = lambda: True,
    timeout: float = 180.0,
) -> Child:
    """Start ``command`` and wait until ``ready()`` holds; stop it and raise if it exits
    or is not ready within ``timeout`` seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=child_environment(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    child = Child(name, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(
                f"{name} exited with {process.returncode} while starting; log {log}:\n"
                + child.tail()
            )
        if ready():
            return child
        time.sleep(0.2)
    stop(child)
    raise RuntimeError(f"{name} was not ready within {timeout:.0f} s; log {log}:\n" + child.tail())


def stop(child: Child, grace: float = 30.0) -> int | None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds; returns
    the exit code (None when it had to be killed). A negative code is the signal that
    ended it: uvicorn re-raises SIGTERM after its graceful shutdown."""
    if child.alive():
        _signal_group(child, signal.SIGTERM)
        try:
            return child.process.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.process.wait()
            return None
    return child.process.returncode


def _signal_group(child: Child, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.process.pid, signum)


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return probe


def scorer_command(port: int, workers: int = 1, app: str = "serving.app:app") -> list[str]:
    """The scorer as ``adstack serve`` runs it: uvicorn with uvloop and httptools."""
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
        "--port", str(port), "--workers", str(workers), "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning",
        "--timeout-graceful-shutdown", "10",
    ]  # fmt: skip


def stream_worker_command(*options: str) -> list[str]:
    """The stream worker as ``adstack stream`` runs it."""
    return [sys.executable, "-m", "pipelines.stream_features", *options]


def ending(code: int | None) -> str:
    """How a stopped child ended, for humans."""
    if code is None:
        return "killed after its grace period"
    if code < 0:
        return f"ended by {signal.Signals(-code).name}"
    return f"exit {code}"
