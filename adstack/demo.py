"""The demo: the platform's main job end to end, as a new user first runs it.

Starts the embedded Redis (unless ``REDIS_URL`` is set), simulates two weeks of a
marketplace ending at today's UTC midnight, ingests and validates it and any real
sample logs present, computes the windowed feature tables of the first 13 days with
Spark, runs `feast apply` and materialises them into Redis, builds CTR and CVR training
sets from Feast, audits them for leakage, trains, calibrates, exports and registers both
models. Then the last day goes live: the stream worker and the scorer start as
processes, the day's events are replayed onto the stream while auctions stamped with the
replay's clock go to the scorer. Last, everything is validated (feature quality, drift,
calibration, training-serving skew) and a summary table gives the figures of this run.
Every process it started is stopped, even when a step fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import redis
from feast import FeatureStore
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from adstack import flows, live_day, redis_server
from adstack.feature_store import feast_cli
from adstack.flows import build_dataset, train
from adstack.validate import validate
from artifact import registry
from artifact.metrics import evaluate
from core.settings import Settings, api_token_file
from core.spark import spark_job
from pipelines import batch_features, ingest
from pipelines.materialize import materialize
from pipelines.simulator import SimulationConfig, write_simulation
from training import leakage
from training.train import metric_summary

# The registry alias of the models the demo trained (the scorer and validation use it).
DEMO_ALIAS = "demo"
REAL_LOGS = {
    "talkingdata": "talkingdata_sample",
    "open_bandit": "open_bandit",
    "avazu": "avazu_sample",
    "criteo": "criteo_sample",
}
DAYS = 14
MATERIALIZE_FROM = datetime(1970, 1, 1, tzinfo=UTC)
AUCTIONS_PER_SECOND = 20.0


def live_seconds(scale: float) -> float:
    """Wall time of the live day's replay: 90 s at scale 1 and above, down to 20 s."""
    return min(90.0, max(20.0, 90.0 * scale))


class Steps:
    """One live progress display for the whole demo: a bar per step (with its count
    when the step has one), the elapsed time of each, and messages printed above."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console,
        )  # fmt: skip
        self.console = self.progress.console
        self.seconds: dict[str, float] = {}  # per finished step

    def print(self, *args, **kwargs) -> None:
        # Unwrapped: paths and figures stay on one line for copying and grepping.
        self.progress.console.print(*args, **{"soft_wrap": True, **kwargs})

    @contextmanager
    def step(self, description: str, total: float | None = None) -> Iterator[TaskID]:
        task = self.progress.add_task(description, total=total)
        began = time.monotonic()
        yield task
        done = self.progress.tasks[task].total or self.progress.tasks[task].completed or 1
        self.progress.update(task, total=done, completed=done)
        self.seconds[description] = time.monotonic() - began

    def update(self, task: TaskID, **fields) -> None:
        self.progress.update(task, **fields)


@contextmanager
def online_store(settings: Settings, steps: Steps) -> Iterator[str]:
    """The Redis the demo uses: REDIS_URL, or an embedded server stopped on exit."""
    if not settings.embedded_redis:
        yield settings.effective_redis_url
        return
    running = redis_server.status(settings.redis_dir)
    if running is not None:
        steps.print(f"using the embedded redis-server already running (pid {running.pid})")
        yield running.url
        return
    server = redis_server.start(settings.redis_dir, settings.redis_port)
    steps.print(f"started redis-server pid {server.pid} on {server.url}")
    try:
        yield server.url
    finally:
        redis_server.stop(settings.redis_dir)
        steps.print(f"stopped redis-server pid {server.pid}")


def simulation_config(
    scale: float, drift_day: int | None = None, drift_kind: str = "device"
) -> SimulationConfig:
    # Two weeks: the conversion model's labels need the 7-day attribution window to close.
    # The log ends at today's UTC midnight, so the newest feature rows are inside their
    # views' TTL now, as with live data.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return SimulationConfig(
        days=DAYS,
        users=max(100, int(20_000 * scale)),
        ads=max(20, int(1_000 * scale)),
        impressions_per_day=max(1_000, int(100_000 * scale)),
        start=today - timedelta(days=DAYS),
        drift_day=drift_day,
        drift_kind=drift_kind,  # type: ignore[arg-type]
    )


def run(
    settings: Settings,
    console: Console,
    drift_day: int | None = None,
    drift_kind: str = "device",
) -> list[ingest.IngestReport]:
    """The demo; with ``drift_day`` the simulated world drifts (``drift_kind``) from that
    day (0-based; the last, live day is ``DAYS - 1``)."""
    began = time.monotonic()
    config = simulation_config(settings.demo_scale, drift_day, drift_kind)
    # The last simulated day is the live one: batch features, training sets and models
    # see the days before it; it reaches the platform through the stream only.
    live = config.start + timedelta(days=config.days - 1)
    landing = settings.data_root / "landing" / "simulator"
    reports_dir = settings.reports_dir / "ingest"
    steps = Steps(console)
    with steps.progress, online_store(settings, steps) as url:
        client = redis.Redis.from_url(url)
        steps.print(f"online store answers PING: {client.ping()} ({url})")
        client.close()
        with steps.step(
            f"simulating {config.days} days x {config.impressions_per_day:,} impressions",
            total=config.days,
        ) as task:
            counts = write_simulation(
                config, landing, settings.data_root / "ground_truth",
                on_day=lambda day: steps.update(task, completed=day + 1),
            )  # fmt: skip
        steps.print(f"simulated {counts['impressions']:,} impressions into {landing}")
        reports = ingest_all(settings, landing, reports_dir, steps)
        features = build_features(settings, config, live, steps)
        runs = train_models(settings, steps, config.start, live)
        with steps.step("live day: starting the stream worker and the scorer") as task:
            day = live_day.run(
                settings, url, live, steps.progress, task, alias=DEMO_ALIAS,
                seconds=live_seconds(settings.demo_scale), auctions_per_second=AUCTIONS_PER_SECOND,
                seed=config.seed, log=steps.print,
            )  # fmt: skip
        steps.print(live_day_lines(day))
        validation = validate_demo(settings, steps)
    console.print(ingest_table(reports))
    console.print(validation_table(validation.summary))
    for failure in validation.failures()[:20]:
        console.print(f"  [yellow]finding[/yellow] {escape(failure)}", soft_wrap=True)
    if len(validation.failures()) > 20:
        console.print(
            f"  ... {len(validation.failures()) - 20} more in {validation.out_dir / 'summary.json'}"
        )
    seconds = time.monotonic() - began
    console.print(summary_table(runs, day, seconds))
    figures = write_summary(settings, runs, day, seconds, steps.seconds, validation.summary, config)
    console.print(
        f"events: {settings.data_root / 'events'} (sample logs: "
        f"{settings.data_root / 'sample_logs'})\n"
        f"quarantine: {settings.data_root / 'quarantine'}\n"
        f"ground truth: {settings.data_root / 'ground_truth'}\n"
        f"ingest reports: {reports_dir}\n"
        f"feature tables: {settings.data_root / 'features'} "
        f"({sum(features.values()):,} rows; feast repo {settings.feature_repo})\n"
        f"training reports: {settings.reports_dir / 'training'}\n"
        f"validation report: {validation.out_dir / 'summary.json'}\n"
        f"validation Data Docs (HTML): {validation.docs}\n"
        f"this summary as JSON: {figures}\n"
        f"process logs: {settings.state_dir / 'logs'}\n"
        f"MLflow UI: mlflow ui --backend-store-uri sqlite:///"
        f"{(settings.state_dir / 'mlflow.db').resolve()}\n"
        f"scorer API docs: adstack redis start && ADSTACK_MODEL_ALIAS={DEMO_ALIAS} adstack serve, "
        "then http://127.0.0.1:8000/docs (the demo stopped its own scorer and Redis)\n"
        f"scorer API token (/v1/events, /admin/*): {api_token_file(settings)}"
    )
    return reports


def ingest_all(settings: Settings, landing, reports_dir, steps: Steps) -> list:
    sources = [("simulator", landing, settings.data_root)]
    for source, folder in REAL_LOGS.items():
        path = settings.sample_logs / folder
        if not path.exists():
            steps.print(f"[yellow]skipping {source}: {path} is absent[/yellow]")
            continue
        # Each real log gets its own data root: numeric ids of different sources
        # (an app id, a simulated ad id) must never share one catalog.
        sources.append((source, path, settings.data_root / "sample_logs" / source))
    reports = []
    with steps.step("ingesting and validating (GX)", total=len(sources)) as task:
        for i, (source, path, root) in enumerate(sources):
            steps.update(task, description=f"ingesting and validating {source} (GX)")
            reports.append(flows.ingest(source, path, root, reports_dir))
            steps.update(task, completed=i + 1)
    return reports


def ingest_table(reports: list) -> Table:
    table = Table("source", "rows in", "quarantined", "bad fraction", "passed", title="ingest")
    for report in reports:
        table.add_row(
            report.name,
            f"{report.rows_in:,}",
            f"{report.rows_quarantined:,}",
            f"{report.bad_fraction:.3%}",
            "yes" if report.passed else "[red]no[/red]",
        )
    return table


def build_features(
    settings: Settings, config: SimulationConfig, live: datetime, steps: Steps
) -> dict[str, int]:
    """Spark batch features for the days before the live one, `feast apply`, materialise."""
    first_end = config.start.date() + timedelta(days=1)
    last_end = live.date()
    with (
        steps.step(f"Spark: windowed features for window ends {first_end}..{last_end}"),
        spark_job("adstack-demo-batch") as spark,
    ):
        written = batch_features.run(spark, settings.data_root, first_end, last_end)
    steps.print(f"Spark wrote {sum(written.values()):,} feature rows in {len(written)} tables")
    with steps.step("feast apply"):
        feast_cli(settings, "apply")
    registered = FeatureStore(repo_path=str(settings.feature_repo)).list_feature_views()
    steps.print(f"feast apply: {len(registered)} feature views registered")
    now = datetime.now(UTC)
    # Every run simulates a new log over the same days: materialise all of it, from the
    # earliest row (profiles are stamped when the user or campaign was created, before
    # the log). An incremental run would start where an earlier run's registry left off
    # (after these rows) and load nothing into a fresh Redis.
    with steps.step("feast materialize: every feature row into Redis"):
        loaded = materialize(settings.feature_repo, MATERIALIZE_FROM, now)
    steps.print(f"materialised up to {now:%Y-%m-%d %H:%M} UTC: {loaded}")
    client = redis.Redis.from_url(settings.effective_redis_url)
    steps.print(f"online store holds {client.dbsize():,} entity keys")
    client.close()
    return written


def train_models(settings: Settings, steps: Steps, start: datetime, end: datetime) -> dict:
    """Build both training sets from Feast, audit them for leakage, then train, calibrate,
    export and register the CTR and CVR models (champion when they pass the gate).
    Returns per task the run and the simulator's ceiling on the same test rows."""
    runs = {}
    for task in ("ctr", "cvr"):
        with steps.step(f"{task}: labelling impressions and joining features with Feast"):
            training_set = build_dataset(settings, task, start, end)
        rows = training_set.summary()["rows_by_split"]
        steps.print(
            f"{task} training set: " + ", ".join(f"{k} {v['rows']:,}" for k, v in rows.items())
        )
        views = list(dict.fromkeys(f.view for f in training_set.features))
        with steps.step(f"{task}: leakage audit on 1,000 rows"):
            audit = leakage.audit(settings.data_root, training_set.frame, views, 1000)
        steps.print(
            f"leakage audit: {audit.compared:,} values recomputed from raw events, "
            f"{audit.mismatches} mismatches"
        )
        # One epoch: models with per-id embeddings overfit from the second pass over the
        # same impressions (the holdout loss rose in epoch 2 for both models here, and
        # early stopping kept epoch 1's weights), so a second epoch only costs time.
        with steps.step(f"{task}: gate, train, calibrate, export to ONNX, register"):
            run = train(
                settings, task, epochs=1, progress=epoch_bars(steps.progress, task),
                training_set=training_set,
            )  # fmt: skip
        reg = run.registration
        status = "champion" if reg.champion else "not promoted: " + "; ".join(reg.gate_reasons)
        test = metric_summary(run.manifest.metrics["test"])
        steps.print(
            f"{task} ({run.manifest.model_kind}): {test}"
            f"\n  registered {reg.name} version {reg.version} ({status}); report {run.report_dir}"
        )
        # The demo serves and validates what it just trained, champion or not.
        registry.client(settings).set_registered_model_alias(reg.name, DEMO_ALIAS, reg.version)
        runs[task] = {"run": run, "ceiling": ceiling(settings, task, training_set)}
    return runs


def ceiling(settings: Settings, task: str, training_set) -> dict:
    """The simulator's true probabilities scored like the model, on its test rows: pCTR
    on every impression, pCVR on the clicked ones."""
    import pyarrow.dataset as pads

    test = training_set.part("test")
    truth = (
        pads.dataset(settings.data_root / "ground_truth", format="parquet", partitioning="hive")
        .to_table(columns=["impression_id", "p_click", "p_conversion_given_click"])
        .to_pandas()
    )
    test = test[["impression_id", "click", "conversion"]].merge(
        truth, on="impression_id", how="left", validate="one_to_one"
    )
    if task == "ctr":
        return evaluate(test["click"].to_numpy(), test["p_click"].to_numpy()).as_dict()
    clicked = test[test["click"] == 1]
    return evaluate(
        clicked["conversion"].to_numpy(), clicked["p_conversion_given_click"].to_numpy()
    ).as_dict()


def epoch_bars(progress: Progress, task: str):
    """A training progress callback drawing one bar per epoch on ``progress`` (the
    demo's display or the CLI's)."""
    bars: dict[int, TaskID] = {}

    def step(epoch: int, batch: int, batches: int, loss: float) -> None:
        if epoch not in bars:
            bars[epoch] = progress.add_task(f"{task} epoch {epoch + 1}", total=batches)
        progress.update(
            bars[epoch], completed=batch, description=f"{task} epoch {epoch + 1} loss {loss:.4f}"
        )

    return step


def live_day_lines(day: live_day.LiveDayReport) -> str:
    stream, replayed = day.stream, day.replay
    if replayed is None:
        return f"the replay of {day.day:%Y-%m-%d} did not report"
    return (
        f"replayed {replayed.events:,} events of {day.day:%Y-%m-%d} in {replayed.seconds:.0f} s; "
        f"the stream worker counted {stream.get('events', 0):,} events "
        f"({stream.get('late', 0)} late, {stream.get('invalid', 0)} invalid) and pushed "
        f"{stream.get('rows', 0):,} rows\n"
        f"scorer answered {day.answered:,} of {day.auctions:,} auctions "
        f"({day.server_errors} 5xx, {day.failures} unanswered, {day.degraded} degraded; "
        f"winners logged)"
    )


def summary_table(runs: dict, day: live_day.LiveDayReport, seconds: float) -> Table:
    """The run's headline figures: models against the simulator's ceiling, the live
    day's auctions, budgets, scorer latency and stream freshness."""
    table = Table("", "figure", "value", title=f"adstack demo summary ({seconds / 60:.1f} min)")
    for task, entry in runs.items():
        test, best = entry["run"].manifest.metrics["test"], entry["ceiling"]
        version = entry["run"].registration.version
        rows = f"{test['rows']:,} test rows" + (" (clicked)" if task == "cvr" else "")
        table.add_row(
            f"{task} model v{version}", "AUC (simulator ceiling)",
            f"{test['auc']:.4f} ({best['auc']:.4f}); {rows}",
        )  # fmt: skip
        table.add_row(
            "", "normalised entropy (ceiling)",
            f"{test['normalized_entropy']:.4f} ({best['normalized_entropy']:.4f})",
        )  # fmt: skip
        table.add_row("", "ECE (ceiling)", f"{test['ece']:.4f} ({best['ece']:.4f})")
    budget = day.budget
    table.add_row(
        "auctions", "answered / sent",
        f"{day.answered:,} / {day.auctions:,} ({day.server_errors} 5xx, {day.degraded} degraded)",
    )  # fmt: skip
    table.add_row("", "fill rate", f"{day.fill_rate:.1%} of {day.slots:,} slots")
    table.add_row(
        "", "expected revenue",
        f"{day.expected_revenue:,.2f} (sum of price x predicted billable rate); "
        f"{1000 * day.expected_revenue / max(day.auctions, 1):,.2f} per 1,000 auctions",
    )  # fmt: skip
    table.add_row(
        "", "excluded for budget",
        f"{day.excluded_for_budget:,} of {day.candidates:,} candidates",
    )  # fmt: skip
    if budget:
        table.add_row(
            "budgets", "spend / daily budget",
            f"{budget['use']:.1%} ({budget['spend']:,.0f} of {budget['budget']:,.0f} over "
            f"{budget['campaigns']} campaigns; {budget['exhausted']} exhausted; pushed spend "
            f"{'equals' if budget['matches_events'] else '[red]differs from[/red]'} billed events)",
        )  # fmt: skip
    table.add_row(
        "scorer", "latency p50 / p99",
        f"{day.latency(50):.1f} / {day.latency(99):.1f} ms at {AUCTIONS_PER_SECOND:g} auctions/s "
        f"(client, from scheduled send; 50 candidates)",
    )  # fmt: skip
    stream = day.stream
    if stream:
        table.add_row(
            "stream", "lag: event to online p50 / p99",
            f"{_ms(stream.get('event_to_online_p50'))} / {_ms(stream.get('event_to_online_p99'))}",
        )  # fmt: skip
        table.add_row(
            "", "backlog (max) / drain",
            f"{day.backlog_max:,} entries; drained {day.drained_seconds or 0:.1f} s after the "
            "replay ended",
        )  # fmt: skip
    return table


def write_summary(
    settings: Settings,
    runs: dict,
    day: live_day.LiveDayReport,
    seconds: float,
    step_seconds: dict[str, float],
    validation: dict | None = None,
    config: SimulationConfig | None = None,
):
    """The summary's figures as JSON: ``<reports>/demo/summary.json``, with the outcome of
    each validation suite (passed, or the reasons it failed)."""
    path = settings.reports_dir / "demo" / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    figures = {
        "seconds": round(seconds, 1),
        "scale": settings.demo_scale,
        "drift": {"day": config.drift_day, "kind": config.drift_kind}
        if config is not None and config.drift_day is not None
        else None,
        "step_seconds": {k: round(v, 1) for k, v in step_seconds.items()},
        "models": {
            task: {
                "version": entry["run"].registration.version,
                "champion": entry["run"].registration.champion,
                "gate_reasons": list(entry["run"].registration.gate_reasons),
                "test": entry["run"].manifest.metrics["test"],
                "ceiling": entry["ceiling"],
            }
            for task, entry in runs.items()
        },
        "live_day": {
            "day": f"{day.day:%Y-%m-%d}",
            "events_replayed": day.replay.events if day.replay else 0,
            "replay_seconds": day.replay.seconds if day.replay else None,
            "auctions": day.auctions,
            "statuses": {str(k): v for k, v in sorted(day.statuses.items())},
            "unanswered": day.failures,
            "degraded": day.degraded,
            "fill_rate": day.fill_rate,
            "expected_revenue": day.expected_revenue,
            "excluded_for_budget": day.excluded_for_budget,
            "candidates": day.candidates,
            "latency_ms": {"p50": day.latency(50), "p99": day.latency(99)},
            "budget": day.budget,
            "stream": day.stream,
            "backlog_max": day.backlog_max,
            "drained_seconds": day.drained_seconds,
        },
    }
    if validation is not None:
        figures["validation"] = {
            "passed": validation["passed"],
            "suites": validation.get("suites", []),
            "drifted": {
                task: report.get("drifted", [])
                for task, report in validation.get("drift", {}).items()
            },
            "drift_not_judged": {
                task: report.get("not_judged", {})
                for task, report in validation.get("drift", {}).items()
            },
        }
    path.write_text(json.dumps(figures, indent=2, default=str))
    return path


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def validation_table(summary: dict) -> Table:
    """One row per suite and subject: passed or not, and the headline figures."""
    table = Table("suite", "subject", "passed", "details", title="validation")

    def mark(passed: bool) -> str:
        return "yes" if passed else "[red]no[/red]"

    for view in summary.get("quality", []):
        failed = sum(s["failed"] for s in view["suites"])
        table.add_row(
            "quality", view["view"], mark(view["passed"]),
            f"{view['rows_checked']:,} rows of {view['newest_partition']}; {failed} failed",
        )  # fmt: skip
    for task, report in summary.get("drift", {}).items():
        drifted = report["drifted"]
        worst = max(report["features"], key=lambda f: f["psi"] or 0.0)
        table.add_row(
            "drift", f"{task} v{report['model_version']}", mark(report["passed"]),
            f"{len(drifted)} of {len(report['features'])} inputs drifted "
            f"({', '.join(drifted[:4])}{'...' if len(drifted) > 4 else ''}); "
            f"max PSI {worst['psi'] or 0:.3f} ({worst['feature']})"
            + (f"; {len(report['not_judged'])} not judged" if report.get("not_judged") else ""),
        )  # fmt: skip
    for task, report in summary.get("calibration", {}).items():
        overall = report["overall"]
        table.add_row(
            "calibration", f"{task} v{report['model_version']}", mark(report["passed"]),
            f"ratio {overall['calibration_ratio']:.3f}, ECE {overall['ece']:.4f} on "
            f"{overall['rows']:,} rows; {len(report['advertisers_miscalibrated'])} of "
            f"{report['advertisers_judged']} advertisers miscalibrated; prediction PSI "
            f"{_figure(report['prediction_psi'])}",
        )  # fmt: skip
    skew = summary.get("skew")
    if skew and "skipped" in skew:
        table.add_row("skew", "served log", "skipped", skew["skipped"])
    elif skew:
        table.add_row(
            "skew", "served log", mark(skew["passed"]),
            f"{skew['rows']:,} served rows x {skew['features']} features; "
            f"skewed: {', '.join(skew['skewed']) or 'none'}",
        )  # fmt: skip
    return table


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def validate_demo(settings: Settings, steps: Steps):
    """Every suite on the demo's data; findings are printed, not fatal."""
    with steps.step("validating: quality, drift, calibration, skew") as task:
        return validate(
            settings,
            status=lambda message: steps.update(task, description=f"validating: {message}"),
            alias=DEMO_ALIAS,
        )
