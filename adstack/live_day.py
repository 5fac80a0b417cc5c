"""A live day: one day of events replayed onto the event stream while the stream worker
and the scorer run as processes and auctions arrive at the scorer.

The stream worker (``adstack stream``) turns the replayed events into windowed
aggregates and pushes them to Feast; the scorer (``adstack serve``) answers auctions
stamped with the replay's clock, so pacing sees the day's spend as it accrues and the
streamed features the worker has just pushed. Every figure comes from this run: latency
is measured by the client from each request's scheduled send time, stream freshness by
the worker (entry arrival to values online) and the backlog from the consumer group.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pandas as pd
import redis
from rich.progress import Progress, TaskID

from adstack import processes, redis_server
from core import events as canonical
from core import units
from core.event_bus import IMPRESSION, STREAM_KEY, EventProducer, Events
from core.settings import Settings, api_token_file, read_or_create_token
from feature_repo import contract
from pipelines import stream_features
from pipelines.replay import ReplayReport, replay, stream_events
from pipelines.simulator import COUNTRIES, DEVICES, PLACEMENTS

GROUP = "stream-features"
# The pacing input the stream worker pushes: the campaign's spend since UTC midnight.
SPEND_TODAY = contract.feature_name("campaign", "spend", contract.TODAY)


@dataclass
class LiveDayReport:
    day: datetime
    replay: ReplayReport | None = None
    auctions: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0  # no answer (connection error or client timeout)
    degraded: int = 0
    slots: int = 0
    filled: int = 0
    expected_revenue: float = 0.0  # sum over winners of price x predicted billable rate
    excluded_for_budget: int = 0
    candidates: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    backlog_max: int = 0
    stream: dict = field(default_factory=dict)
    drained_seconds: float | None = None
    budget: dict = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def fill_rate(self) -> float:
        return self.filled / self.slots if self.slots else float("nan")

    def latency(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def subprocess_env(settings: Settings, url: str) -> dict[str, str]:
    """The settings in force, passed explicitly to the processes the demo starts; the
    scorer's token is ``ADSTACK_API_TOKEN`` or one generated into the state folder."""
    token = os.environ.get("ADSTACK_API_TOKEN") or read_or_create_token(api_token_file(settings))
    return {
        "ADSTACK_API_TOKEN": token,
        "ADSTACK_DATA": str(settings.data_root.resolve()),
        "ADSTACK_FEATURE_REPO": str(settings.feature_repo.resolve()),
        "ADSTACK_STATE_DIR": str(settings.state_dir.resolve()),
        "ADSTACK_REPORTS_DIR": str(settings.reports_dir.resolve()),
        "REDIS_URL": url,
    }


def run(
    settings: Settings,
    url: str,
    day: datetime,
    progress: Progress,
    task: TaskID,
    alias: str,
    seconds: float = 90.0,
    auctions_per_second: float = 20.0,
    candidates: int = 50,
    slots: int = 2,
    seed: int = 7,
    log: Callable[[str], None] = print,
) -> LiveDayReport:
    """Replay ``day`` in about ``seconds`` while sending auctions; stops what it started.

    ``task`` is the step's bar on ``progress``; the replay and the auctions get theirs."""
    client = redis.Redis.from_url(url)
    # A fresh stream and worker state: an earlier run's entries belong to other days.
    stale = list(client.scan_iter(f"{STREAM_KEY}*"))
    if stale:
        client.delete(*stale)
    events = stream_events(settings.data_root, day, day + timedelta(days=1))
    report = LiveDayReport(day)
    logs = settings.state_dir.resolve() / "logs"
    report.logs = {"stream worker": logs / "stream-worker.log", "scorer": logs / "scorer.log"}
    env = subprocess_env(settings, url)
    port = redis_server.free_port()
    children: list[processes.Child] = []
    try:
        children.append(
            processes.start(
                "stream worker",
                processes.stream_worker_command("--batch-wait", "0.1"),
                env,
                report.logs["stream worker"],
                ready=lambda: _group_exists(client),
            )
        )
        scorer_env = {
            **env,
            "ADSTACK_MODEL_ALIAS": alias,
            # Every winner is logged with its served features (the skew check).
            "ADSTACK_SERVED_LOG_SAMPLE": "1",
        }
        children.append(
            processes.start(
                "scorer",
                processes.scorer_command(port),
                scorer_env,
                report.logs["scorer"],
                ready=processes.http_ok(f"http://127.0.0.1:{port}/readyz"),
            )
        )
        log(
            f"stream worker pid {children[0].pid}, scorer pid {children[1].pid} on "
            f"http://127.0.0.1:{port} (logs in {logs})"
        )
        progress.update(task, description=f"live day {day:%Y-%m-%d}: replay and auctions")
        _replay_and_auction(
            report, client, events, settings.data_root, f"http://127.0.0.1:{port}", progress,
            seconds, auctions_per_second, candidates, slots, seed,
        )  # fmt: skip
        progress.update(task, description="live day: the stream worker drains the stream")
        report.drained_seconds = _wait_drained(client, children[0])
        report.stream = stream_features.status(client, group=GROUP) or {}
        report.budget = budget_use(settings, events, day + timedelta(days=1))
    finally:
        for child in reversed(children):
            code = processes.stop(child)
            log(f"stopped {child.name} pid {child.pid} ({processes.ending(code)})")
        client.close()
    return report


def _replay_and_auction(
    report: LiveDayReport,
    client: redis.Redis,
    events: Events,
    data_root: Path,
    base_url: str,
    progress: Progress,
    seconds: float,
    rate: float,
    candidates: int,
    slots: int,
    seed: int,
) -> None:
    day_start = int(report.day.timestamp() * 1_000_000)
    speed = 86_400 / seconds
    clock = {"ts": day_start, "sent": 0}
    replayed: dict[str, ReplayReport | BaseException] = {}

    def on_sent(sent: int, ts: int) -> None:
        clock["sent"], clock["ts"] = sent, ts

    def replay_thread() -> None:
        try:
            replayed["report"] = replay(EventProducer(client), events, speed, on_sent=on_sent)
        except BaseException as error:  # reported in the main thread
            replayed["error"] = error

    shown = events.kind == IMPRESSION
    rng = np.random.default_rng(seed)
    users = events.user_id[shown]
    # Candidates are the day's ads, each from its launch on (as a candidate generator
    # would return them): an ad created later that day has no profile yet at the
    # request's instant.
    live_ads, launched = _ads_by_launch(data_root, np.unique(events.ad_id[shown]))
    contexts = _contexts(rng)
    thread = threading.Thread(target=replay_thread, name="replay", daemon=True)
    with httpx.Client(base_url=base_url, timeout=5.0) as http:
        events_bar = progress.add_task(
            f"replaying {report.day:%Y-%m-%d} at {speed:,.0f}x", total=len(events)
        )
        auctions_bar = progress.add_task(f"auctions at {rate:g}/s", total=None)
        thread.start()
        started = time.perf_counter()
        next_probe = started
        i = 0
        while thread.is_alive():
            scheduled = started + i / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            instant = datetime.fromtimestamp(clock["ts"] / 1_000_000, UTC)
            eligible = live_ads[: max(1, int(np.searchsorted(launched, clock["ts"], "right")))]
            body = {
                "request_id": f"live-{i}",
                "user_id": int(users[rng.integers(len(users))]),
                "context": {"timestamp": instant.isoformat(), **contexts[i % len(contexts)]},
                "slots": slots,
                "candidates": [
                    {"ad_id": int(a)}
                    for a in rng.choice(eligible, min(candidates, len(eligible)), replace=False)
                ],
            }
            _send(report, http, body, scheduled)
            i += 1
            progress.update(events_bar, completed=clock["sent"])
            progress.update(auctions_bar, completed=i)
            if time.perf_counter() >= next_probe:
                report.backlog_max = max(report.backlog_max, _backlog(client))
                next_probe += 1.0
        progress.update(events_bar, completed=clock["sent"])
    thread.join()
    if "error" in replayed:
        raise RuntimeError("the replay failed") from cast(BaseException, replayed["error"])
    report.replay = cast(ReplayReport, replayed["report"])


def _ads_by_launch(data_root: Path, ads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ads`` sorted by creation time, with those times in epoch microseconds."""
    catalog = canonical.read_table(
        canonical.ADS, canonical.events_root(data_root), ["ad_id", "created_at"]
    ).to_pandas()
    catalog = catalog[catalog.ad_id.isin(ads)]
    created = catalog.created_at.astype("datetime64[us, UTC]").astype("int64").to_numpy()
    order = np.argsort(created, kind="stable")
    return catalog.ad_id.to_numpy()[order], created[order]


def _contexts(rng: np.random.Generator) -> list[dict]:
    return [
        {
            "device": str(rng.choice(DEVICES)),
            "placement": str(rng.choice(PLACEMENTS)),
            "country": str(rng.choice(COUNTRIES)),
        }
        for _ in range(64)
    ]


def _send(report: LiveDayReport, http: httpx.Client, body: dict, scheduled: float) -> None:
    report.auctions += 1
    report.slots += body["slots"]
    report.candidates += len(body["candidates"])
    try:
        response = http.post("/v1/auction", json=body)
    except httpx.HTTPError:
        report.failures += 1
        return
    report.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
    report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
    if response.status_code != 200:
        return
    answer = response.json()
    report.degraded += bool(answer["degraded"])
    report.filled += len(answer["winners"])
    report.excluded_for_budget += answer["candidates"]["budget_exhausted"]
    report.server_ms.append(sum(answer["timings_ms"].values()))
    for winner in answer["winners"]:
        billable = winner["pctr"] * (winner["pcvr"] if winner["bid_type"] == "CPA" else 1.0)
        report.expected_revenue += winner["price"] * billable


def _group_exists(client: redis.Redis) -> bool:
    try:
        return any(g["name"].decode() == GROUP for g in client.xinfo_groups(STREAM_KEY))
    except redis.ResponseError:  # no stream yet
        return False


def _backlog(client: redis.Redis, cap: int = 100_000) -> int:
    """Entries on the stream the worker has not acknowledged: those not yet delivered to
    its group (counted up to ``cap``) plus those delivered and pending. Counted from the
    last delivered id, which every Redis version reports (``lag`` needs Redis 7)."""
    try:
        group = next(g for g in client.xinfo_groups(STREAM_KEY) if g["name"].decode() == GROUP)
    except (redis.ResponseError, StopIteration):
        return 0
    last = group["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else str(last)
    undelivered = len(cast(list, client.xrange(STREAM_KEY, f"({last}", "+", count=cap)))
    return undelivered + int(group["pending"])


def _wait_drained(client: redis.Redis, worker: processes.Child, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not worker.alive():
            raise RuntimeError(f"the stream worker exited; log {worker.log}:\n{worker.tail()}")
        if _backlog(client) == 0:
            # The status hash is written with the commit that acknowledged the last entries.
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError(f"the stream worker still had a backlog after {timeout:.0f} s")


def budget_use(settings: Settings, events: Events, end: datetime) -> dict:
    """The replayed day's spend against the campaigns' daily budgets.

    Spend is the spend today the stream worker pushes (the pacing input), its last
    row per campaign before ``end`` in the push log, and is checked against the cost the
    replayed events billed."""
    import pyarrow.dataset as ds

    log = contract.table_dir(
        settings.data_root, contract.push_log_name(contract.push_source_name("campaign_stream"))
    )
    pushed = (
        ds.dataset(log, format="parquet", partitioning="hive")
        .to_table(columns=["campaign_id", "event_timestamp", SPEND_TODAY])
        .to_pandas()
    )
    pushed = pushed[pushed.event_timestamp < end].sort_values("event_timestamp")
    spend = pushed.groupby("campaign_id")[SPEND_TODAY].last()
    billed = pd.Series(events.cost_micros / units.MONEY_MICROS).groupby(events.campaign_id).sum()
    campaigns = canonical.read_table(
        canonical.CAMPAIGNS, canonical.events_root(settings.data_root),
        ["campaign_id", "daily_budget"],
    ).to_pandas().set_index("campaign_id")["daily_budget"]  # fmt: skip
    active = campaigns[campaigns.index.isin(billed.index) & (campaigns > 0)]
    spent = spend.reindex(active.index).fillna(0.0)
    return {
        "campaigns": len(active),
        "spend": float(spent.sum()),
        "budget": float(active.sum()),
        "use": float(spent.sum() / active.sum()) if len(active) else float("nan"),
        "exhausted": int((spent >= active).sum()),
        # The pushed spend equals the replayed events' billed cost, campaign by campaign.
        "matches_events": bool(
            np.allclose(spent.to_numpy(), billed.reindex(active.index).fillna(0).to_numpy())
        ),
    }
