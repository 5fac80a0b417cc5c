"""The README's "By hand" commands, run as a user runs them, on a log adstack has never
seen: a two-day, clicks-only CSV with text ids and free-form categorical fields.

One project folder (a copy of ``feature_repo/``, the data root, the state and report
folders, an embedded redis-server) goes through ingest, the Spark batch job, ``feast
apply``, materialisation, the stream worker and a replay, the training set, the leakage
audit, training, promotion, the scorer (``uvicorn`` and ``adstack serve``) with text
ids, validation, and ``redis stop``. ``adstack simulate`` and ``ingest --source
simulator`` run into a second, throwaway data root. Each command's exit code and output
are checked; the last test checks that every command the README shows ran here or in
the test named for it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from adstack import cli, redis_server
from core.settings import get_settings
from tests.integration.test_feature_repo import PROJECT_ROOT, REPO_SOURCE

BIN = Path(sys.executable).parent
DAY_ONE = datetime(2026, 3, 2, tzinfo=UTC)
TOKEN = "cli-tier-token-0123456789"
README = PROJECT_ROOT / "README.md"
# README commands run by another test (the command as the README writes it -> the test
# file that runs it); the last test checks the file really does.
ELSEWHERE = {
    "spark-submit pipelines/batch_features.py": "tests/reliability/test_spark_kill.py",
    "feast materialize": "tests/integration/test_feature_repo.py",
    "feast materialize-incremental": "tests/integration/test_feature_repo.py",
}
RAN: set[str] = set()

MAPPING = """\
source: shop_ads
format: csv
path: logs/*.csv
columns:
  event_timestamp: ts
  user_id: visitor
  ad_id: creative
  click: clicked
  device: device_type
  country: region
hash_ids: [user_id, ad_id]
constants: {bid_type: CPC, bid: 1.5}
context:
  domain: {column: domain, kind: categorical}
  slot_id: {column: slot_id, kind: categorical}
  floor_price: {column: floor, kind: numeric}
"""


# The log's own aggregates: by domain, and by domain and ad (CTR smoothed towards the ad's).
GROUP_BYS = """\
domain_daily:
  keys: [domain]
  aggregations: [impressions, clicks, ctr]
domain_ad_daily:
  keys: [domain, ad]
  aggregations: [impressions, clicks, {ctr: {prior: [ad]}}]
  services: [ctr_v1]
"""


def write_log(folder: Path, rows: int = 16_000, seed: int = 11) -> pd.DataFrame:
    """Two days of impressions with a click label and free-form fields no canonical
    column holds (domain, slot id, floor price). The click probability depends on the
    creative, the domain, the slot and the device, so a model has something to learn."""
    rng = np.random.default_rng(seed)
    creative = rng.integers(0, 30, rows)
    slot = rng.integers(0, 12, rows)
    domain = rng.integers(0, 3, rows)
    device = rng.choice(["phone", "desktop", "tablet"], rows, p=[0.6, 0.3, 0.1])
    logit = (
        -2.6
        + np.linspace(-1.0, 1.0, 30)[creative]
        + np.array([-0.8, 0.0, 0.8])[domain]
        + np.linspace(-0.6, 0.6, 12)[slot]
        + np.where(device == "phone", 0.4, -0.2)
    )
    clicked = rng.random(rows) < 1 / (1 + np.exp(-logit))
    seconds = np.sort(rng.uniform(0, 2 * 86_400 - 1, rows))
    frame = pd.DataFrame(
        {
            "ts": (pd.Timestamp(DAY_ONE) + pd.to_timedelta(seconds, unit="s")).strftime(
                "%Y-%m-%dT%H:%M:%S+00:00"
            ),
            "visitor": [f"u-{i}" for i in rng.integers(0, 900, rows)],
            "creative": [f"cr-{c}" for c in creative],
            "slot_id": [f"slot-{s}" for s in slot],
            "device_type": device,
            "region": rng.choice(["north", "south", "east"], rows),
            "domain": np.array(["news.example", "games.example", "shop.example"])[domain],
            "floor": np.round(rng.gamma(2.0, 0.2, rows), 3),
            "clicked": clicked.astype(int),
        }
    )
    (folder / "logs").mkdir(parents=True)
    frame.to_csv(folder / "logs" / "shop.csv", index=False)
    (folder / "mapping.yaml").write_text(MAPPING)
    return frame


def label(words: list[str]) -> str:
    """A command's name: the program, with its subcommand for adstack, feast and mlflow
    (``adstack redis start``), with its script for spark-submit."""
    program = Path(words[0]).name
    if program == "adstack" and words[1:2] == ["redis"]:
        return " ".join([program, *words[1:3]])
    if program in ("adstack", "feast", "mlflow", "spark-submit") and len(words) > 1:
        return f"{program} {words[1]}"
    return program


def readme_commands() -> list[str]:
    """The commands of the README's "By hand" block (continuation lines and shell
    built-ins left out)."""
    text = README.read_text()
    block = text.split("## By hand", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.split()[0] in ("cd", "export") or line[0] in "'\"":
            continue
        commands.append(label(line.split()))
    return commands


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.passed_gate = False
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "ADSTACK_DATA": str(root / "data"),
            "ADSTACK_FEATURE_REPO": str(root / "feature_repo"),
            "ADSTACK_STATE_DIR": str(root / ".adstack"),
            "ADSTACK_REPORTS_DIR": str(root / "reports"),
            "ADSTACK_REDIS_PORT": str(redis_server.free_port()),
            "ADSTACK_API_TOKEN": TOKEN,
            "COLUMNS": "200",  # rich's tables unwrapped in captured output
        }
        for name in ("REDIS_URL", "MLFLOW_TRACKING_URI", "ADSTACK_ENVIRONMENT"):
            self.env.pop(name, None)

    def adstack(self, *args: str, code: int | None = 0, process: bool = True) -> str:
        """An ``adstack`` command; returns its output. As a process by default, as a user
        runs it: the feature contract reads this project's group_bys.yaml when it is
        imported. ``process=False`` runs it in this process (commands that read no
        feature declaration: no Python start-up or JVM to wait for)."""
        RAN.add(label(["adstack", *args]))
        if process:
            result = subprocess.run(
                [str(BIN / "adstack"), *args], cwd=self.root, env=self.env,
                capture_output=True, text=True,
            )  # fmt: skip
            output, exit_code = result.stdout + result.stderr, result.returncode
        else:
            invoked = CliRunner().invoke(cli.app, list(args), env=self.env, catch_exceptions=False)
            get_settings.cache_clear()
            output, exit_code = invoked.output, invoked.exit_code
        if code is not None:
            assert exit_code == code, f"adstack {' '.join(args)}: {output}"
        return output

    def run(self, *command: str, cwd: Path | None = None, code: int = 0) -> str:
        """Any other program, as a process from the project folder."""
        RAN.add(label(list(command)))
        result = subprocess.run(
            list(command), cwd=cwd or self.root, env=self.env, capture_output=True, text=True
        )
        assert result.returncode == code, " ".join(command) + result.stdout + result.stderr
        return result.stdout

    def start(self, *command: str) -> subprocess.Popen:
        RAN.add(label(list(command)))
        return subprocess.Popen(
            list(command), cwd=self.root, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, spark) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(
        REPO_SOURCE, root / "feature_repo", ignore=shutil.ignore_patterns(".feast", "__pycache__")
    )
    write_log(root / "shop")
    (root / "feature_repo" / "group_bys.yaml").write_text(GROUP_BYS)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in Project(root).env.items():
            patch.setenv(name, value)
        # Commands run from the project folder, as a user runs them.
        patch.chdir(root)
        project = Project(root)
        project.env = dict(os.environ)
        get_settings.cache_clear()
        out = project.adstack("redis", "start", process=False)
        assert "redis-server pid" in out
        try:
            yield project
        finally:
            redis_server.stop(root / ".adstack" / "redis")
            get_settings.cache_clear()


def test_simulate_and_ingest_the_simulator(project: Project) -> None:
    throwaway = {**project.env, "ADSTACK_DATA": str(project.root / "simulated")}
    runner = CliRunner()
    RAN.update({"adstack simulate", "adstack ingest"})
    out = runner.invoke(
        cli.app,
        ["simulate", "--days", "2", "--users", "200", "--ads", "20",
         "--impressions-per-day", "800", "--seed", "7"],
        env=throwaway,
    )  # fmt: skip
    get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert re.search(r"impressions\s+│\s+1,600", out.output), out.output
    out = runner.invoke(cli.app, ["ingest", "--source", "simulator"], env=throwaway)
    get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert any((project.root / "simulated" / "events" / "impressions").glob("date=*/*.parquet"))


def test_a_clicks_only_csv_is_ingested_and_its_features_computed(project: Project) -> None:
    out = project.adstack("ingest", "--source", "generic", "--path", "shop/mapping.yaml")
    assert "16,000" in out, out
    out = project.adstack("batch", "--start", "2026-03-03", "--end", "2026-03-04")
    assert re.search(r"user_daily\s+│\s+[1-9]", out), out
    # The declared group-bys: 3 domains, and each domain with each of the 30 ads.
    assert re.search(r"domain_daily\s+│\s+[1-9]", out), out
    assert re.search(r"domain_ad_daily\s+│\s+[1-9]", out), out
    out = project.run(str(BIN / "feast"), "apply", cwd=project.root / "feature_repo")
    assert "user_daily" in out and "domain_ad_daily" in out, out
    out = project.adstack("materialize", "--start", "2026-03-01", "--end", "2026-03-04")
    assert re.search(r"ad_profile\s+│\s+30\b", out), out


def test_the_stream_worker_counts_a_replayed_log(project: Project) -> None:
    worker = project.start(str(BIN / "adstack"), "stream", "--metrics-port", "0")
    try:
        out = project.adstack("replay", "--speed", "0", process=False)
        replayed = int(re.search(r"replayed ([\d,]+) events", out).group(1).replace(",", ""))
        assert replayed >= 16_000
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            out = project.adstack("stream-status", code=None, process=False)
            status = json.loads(out) if out.startswith("{") else {}
            if status.get("events", 0) >= replayed:
                break
            time.sleep(2)
        assert status.get("events") == replayed, out
    finally:
        worker.send_signal(signal.SIGINT)
        worker.wait(30)
    assert worker.returncode == 0, worker.stdout.read() if worker.stdout else ""


def test_a_two_day_log_gets_a_training_set_and_a_ctr_model(project: Project) -> None:
    out = project.adstack("dataset", "--task", "ctr")
    assert "split by fractions" in out, out
    for split in ("train", "calibration", "test"):
        assert re.search(rf"{split}\s+│", out), out
    out = project.adstack("audit-leakage", "--task", "ctr", "--rows", "300")
    assert "no leakage" in out, out
    out = project.adstack("train", "--model", "ctr", "--epochs", "2", code=None)
    assert "registered ctr version 1" in out, out
    assert "left out of the model:" in out and "user_age_bucket" in out, out
    manifest = json.loads(
        next((project.root / ".adstack" / "models" / "ctr").glob("*/manifest.json")).read_text()
    )
    assert [f["name"] for f in manifest["context"]] == ["domain", "slot_id", "floor_price"]
    sparse = set(manifest["inputs"]["sparse_ids"]["fields"])
    assert {"ctx_domain", "ctx_slot_id"} <= sparse, manifest["inputs"]
    dense = set(manifest["inputs"]["dense_features"]["fields"])
    assert {"domain_ctr_1d", "domain_ad_ctr_1d"} <= dense, manifest["inputs"]
    report = json.loads((project.root / "reports" / "training" / "ctr" / "report.json").read_text())
    assert report["metrics"]["test"]["auc"] > 0.6, report["metrics"]
    project.passed_gate = report["registration"]["gate_passed"]


def test_cvr_training_on_a_clicks_only_log_is_refused_with_the_reason(project: Project) -> None:
    out = project.adstack("train", "--model", "cvr", code=2)
    assert "no conversions" in out and "CPC" in out, out


def test_promote_and_the_registry_ui(project: Project) -> None:
    out = project.adstack("promote", "--model", "ctr", "--version", "1", code=None)
    if project.passed_gate:
        assert "ctr@champion -> version 1" in out, out
    else:
        assert "refused" in out, out
        # Serve what was trained: the alias is set by hand, as an operator would.
        from artifact import registry

        registry.client(get_settings()).set_registered_model_alias("ctr", "champion", "1")
    port = redis_server.free_port()
    ui = project.start(
        str(BIN / "mlflow"), "ui", "--backend-store-uri",
        f"sqlite:///{project.root / '.adstack' / 'mlflow.db'}", "--port", str(port),
    )  # fmt: skip
    try:
        assert wait_http(f"http://127.0.0.1:{port}/", 90).status_code == 200
    finally:
        ui.terminate()
        ui.wait(30)


def test_the_scorer_serves_a_ctr_only_model_and_takes_text_ids(project: Project) -> None:
    for command in (
        [str(BIN / "uvicorn"), "serving.app:app", "--workers", "2", "--loop", "uvloop",
         "--http", "httptools", "--port"],
        [str(BIN / "adstack"), "serve", "--workers", "2", "--port"],
    ):  # fmt: skip
        port = redis_server.free_port()
        server = project.start(*command, str(port))
        try:
            base = f"http://127.0.0.1:{port}"
            ready = wait_http(f"{base}/readyz", 120)
            assert ready.status_code == 200, ready.text
            assert ready.json()["models"] == {"ctr": "1"}
            assert set(ready.json()["context"]) == {"domain", "slot_id", "floor_price"}
            body = {
                "request_id": "r1", "user_id": "u-7", "slots": 2,
                "context": {"device": "phone", "domain": "shop.example", "slot_id": "slot-3",
                            "floor_price": 0.3, "timestamp": "2026-03-03T20:00:00Z"},
                "candidates": [{"ad_id": "cr-1"}, {"ad_id": "cr-29"},
                               {"ad_id": "cr-5", "bid": 0.8, "bid_type": "CPC"},
                               {"ad_id": "cr-6", "bid": 3.0, "bid_type": "CPA"}],
            }  # fmt: skip
            answer = httpx.post(f"{base}/v1/auction", json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert [w["ad_id"] for w in result["winners"]][:1] and all(
                w["ad_id"] in ("cr-1", "cr-29", "cr-5") for w in result["winners"]
            ), result
            assert all(w["pcvr"] is None for w in result["winners"]), result
            assert result["candidates"]["cpa_without_cvr_model"] == 1, result
            assert result["missing_features"] < 100, result
            winner = result["winners"][0]
            event = {"events": [{
                "kind": "click", "timestamp": "2026-03-03T20:00:05Z", "user_id": "u-7",
                "ad_id": winner["ad_id"], "campaign_id": winner["ad_id"],
                "impression_id": winner["impression_id"],
            }]}  # fmt: skip
            headers = {"authorization": f"Bearer {TOKEN}"}
            sent = httpx.post(f"{base}/v1/events", json=event, headers=headers, timeout=10)
            assert sent.status_code == 200 and sent.json() == {"accepted": 1}, sent.text
            assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
            # The domain's aggregates are read by the request's domain: without it they
            # are missing.
            scores = {"request_id": "s1", "user_id": "u-7", "ad_ids": ["cr-1", "cr-29"]}
            ctx = {"domain": "shop.example", "timestamp": "2026-03-03T20:00:00Z"}
            known = httpx.post(f"{base}/v1/score", json={**scores, "context": ctx}, timeout=10)
            ctx.pop("domain")
            unknown_domain = httpx.post(
                f"{base}/v1/score", json={**scores, "context": ctx}, timeout=10
            )
            assert known.status_code == unknown_domain.status_code == 200, known.text
            with_domain = known.json()["missing_features"]
            assert with_domain < unknown_domain.json()["missing_features"], known.text
            unknown = {**body, "context": {"city": "Oslo"}}
            refused = httpx.post(f"{base}/v1/auction", json=unknown, timeout=10)
            assert refused.status_code == 422 and "city" in refused.text, refused.text
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
    RAN.update({"curl", "open"})


def test_validate_exits_with_the_verdict_of_its_suites(project: Project) -> None:
    out = project.adstack("validate", "--suite", "quality", code=None)
    summary = json.loads((project.root / "reports" / "validation" / "summary.json").read_text())
    failed = [v["view"] for v in summary["quality"] if not v["passed"]]
    assert ("quality" in out) and (summary["passed"] == (not failed)), out
    out = project.adstack("redis", "stop", process=False)
    assert "stopped redis-server" in out


def test_every_readme_command_ran(project: Project) -> None:
    shown = readme_commands()
    assert len(shown) >= 20, shown
    for command, test_file in ELSEWHERE.items():
        source = (PROJECT_ROOT / test_file).read_text()
        program, argument = command.split()
        assert program in source and argument in source, (command, test_file)
    missing = [c for c in shown if c not in RAN | set(ELSEWHERE)]
    assert missing == [], missing


def wait_http(url: str, seconds: float) -> httpx.Response:
    deadline = time.monotonic() + seconds
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code < 500 or time.monotonic() > deadline:
                return response
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
