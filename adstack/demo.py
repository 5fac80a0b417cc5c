"""The demo: the platform's main job, end to end, as far as it exists today.

Starts the embedded Redis (unless ``REDIS_URL`` is set), simulates two weeks of a
marketplace ending at today's UTC midnight, ingests and validates it and any real
sample logs present, computes the windowed feature tables with Spark, runs `feast apply`
and materialises the newest features into Redis, streams the last day, builds CTR and
CVR training sets from Feast, audits them for leakage, trains, calibrates, exports and
registers both models, sends a few hundred auctions through the scorer (in process,
logging every winner's features), validates everything (feature quality, drift,
calibration, training-serving skew), prints where everything went, and stops every
process it started, even when a step fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import redis
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adstack import redis_server
from adstack.feature_store import feast_cli
from adstack.settings import Settings
from pipelines import batch_features, ingest
from pipelines.materialize import materialize_incremental
from pipelines.simulator import SimulationConfig, write_simulation
from pipelines.spark import spark_job

# The registry alias of the models the demo trained (the scorer and validation use it).
DEMO_ALIAS = "demo"
REAL_LOGS = {
    "talkingdata": "talkingdata_sample",
    "open_bandit": "open_bandit",
    "avazu": "avazu_sample",
    "criteo": "criteo_sample",
}


@contextmanager
def online_store(settings: Settings, console: Console) -> Iterator[str]:
    """The Redis the demo uses: REDIS_URL, or an embedded server stopped on exit."""
    if not settings.embedded_redis:
        yield settings.effective_redis_url
        return
    running = redis_server.status(settings.redis_dir)
    if running is not None:
        console.print(f"using the embedded redis-server already running (pid {running.pid})")
        yield running.url
        return
    server = redis_server.start(settings.redis_dir, settings.redis_port)
    console.print(f"started redis-server pid {server.pid} on {server.url}")
    try:
        yield server.url
    finally:
        redis_server.stop(settings.redis_dir)
        console.print(f"stopped redis-server pid {server.pid}")


def run(settings: Settings, console: Console) -> list[ingest.IngestReport]:
    scale = settings.demo_scale
    # Two weeks: the conversion model's labels need the 7-day attribution window to close.
    days = 14
    # The simulated week ends at today's UTC midnight, so `materialize-incremental now`
    # finds the newest feature rows inside their views' TTL, as with live data.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    config = SimulationConfig(
        days=days,
        users=max(100, int(20_000 * scale)),
        ads=max(20, int(1_000 * scale)),
        impressions_per_day=max(1_000, int(100_000 * scale)),
        start=today - timedelta(days=days),
    )
    landing = settings.data_root / "landing" / "simulator"
    reports_dir = settings.reports_dir / "ingest"
    with online_store(settings, console) as url:
        client = redis.Redis.from_url(url)
        console.print(f"online store answers PING: {client.ping()} ({url})")
        client.close()
        with console.status(f"simulating {config.days} days x {config.impressions_per_day:,}"):
            counts = write_simulation(config, landing, settings.data_root / "ground_truth")
        console.print(f"simulated {counts['impressions']:,} impressions into {landing}")
        reports = []
        with console.status("ingesting and validating the simulated events"):
            reports.append(ingest.ingest("simulator", landing, settings.data_root, reports_dir))
        for source, folder in REAL_LOGS.items():
            path = settings.sample_logs / folder
            if not path.exists():
                console.print(f"[yellow]skipping {source}: {path} is absent[/yellow]")
                continue
            # Each real log gets its own data root: numeric ids of different sources
            # (an app id, a simulated ad id) must never share one catalog.
            with console.status(f"ingesting and validating {source}"):
                root = settings.data_root / "sample_logs" / source
                reports.append(ingest.ingest(source, path, root, reports_dir))
        features = build_features(settings, config, console)
        stream_last_day(settings, config, console)
        # The simulated fortnight only: real sample logs share the events tables.
        train_models(settings, console, config.start, config.start + timedelta(days=config.days))
        sample_auctions(settings, config, console)
        validation = validate_demo(settings, console)
    summary = Table("source", "rows in", "quarantined", "bad fraction", "passed", title="ingest")
    for report in reports:
        summary.add_row(
            report.name,
            f"{report.rows_in:,}",
            f"{report.rows_quarantined:,}",
            f"{report.bad_fraction:.3%}",
            "yes" if report.passed else "[red]no[/red]",
        )
    console.print(summary)
    console.print(
        f"events: {settings.data_root / 'events'} (sample logs: "
        f"{settings.data_root / 'sample_logs'})\n"
        f"quarantine: {settings.data_root / 'quarantine'}\n"
        f"ground truth: {settings.data_root / 'ground_truth'}\n"
        f"ingest reports: {reports_dir}\n"
        f"feature tables: {settings.data_root / 'features'} "
        f"({sum(features.values()):,} rows; feast repo {settings.feature_repo})\n"
        f"validation report: {validation.out_dir / 'summary.json'}\n"
        f"validation Data Docs (HTML): {validation.docs}"
    )
    return reports


def build_features(
    settings: Settings, config: SimulationConfig, console: Console
) -> dict[str, int]:
    """Spark batch features over the simulated days, `feast apply`, materialise into Redis."""
    first_end = config.start.date() + timedelta(days=1)
    last_end = config.start.date() + timedelta(days=config.days)
    with (
        spark_job("adstack-demo-batch") as spark,
        console.status(f"Spark: windowed features for window ends {first_end}..{last_end}"),
    ):
        written = batch_features.run(spark, settings.data_root, first_end, last_end)
    console.print(f"Spark wrote {sum(written.values()):,} feature rows in {len(written)} tables")
    with console.status("feast apply"):
        feast_cli(settings, "apply")
    from feast import FeatureStore

    registered = FeatureStore(repo_path=str(settings.feature_repo)).list_feature_views()
    console.print(f"feast apply: {len(registered)} feature views registered")
    now = datetime.now(UTC)
    with console.status("materialising into Redis"):
        loaded = materialize_incremental(settings.feature_repo, now)
    console.print(f"materialised up to {now:%Y-%m-%d %H:%M} UTC: {loaded}")
    client = redis.Redis.from_url(settings.effective_redis_url)
    console.print(f"online store holds {client.dbsize():,} entity keys")
    client.close()
    return written


def train_models(settings: Settings, console: Console, start: datetime, end: datetime) -> dict:
    """Build both training sets from Feast, audit them for leakage, then train, calibrate,
    export and register the CTR and CVR models (champion when they pass the gate)."""
    from training import leakage, registry
    from training.pipeline import build_dataset, train
    from training.train import metric_summary

    runs = {}
    for task in ("ctr", "cvr"):
        with console.status(f"{task}: labelling impressions and joining features with Feast"):
            training_set = build_dataset(settings, task, start, end)
        rows = training_set.summary()["rows_by_split"]
        console.print(
            f"{task} training set: " + ", ".join(f"{k} {v['rows']:,}" for k, v in rows.items())
        )
        views = list(dict.fromkeys(f.view for f in training_set.features))
        with console.status(f"{task}: leakage audit on 1,000 rows"):
            audit = leakage.audit(settings.data_root, training_set.frame, views, 1000)
        console.print(
            f"leakage audit: {audit.compared:,} values recomputed from raw events, "
            f"{audit.mismatches} mismatches"
        )
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
        ) as progress:
            step = epoch_bars(progress, task)
            run = train(settings, task, epochs=2, progress=step, training_set=training_set)
        reg = run.registration
        status = "champion" if reg.champion else "not promoted: " + "; ".join(reg.gate_reasons)
        test = metric_summary(run.manifest["metrics"]["test"])
        console.print(
            f"{task} ({run.manifest['model_kind']}): {test}"
            f"\n  registered {reg.name} version {reg.version} ({status}); report {run.report_dir}"
        )
        # The demo serves and validates what it just trained, champion or not.
        registry.client(settings).set_registered_model_alias(reg.name, DEMO_ALIAS, reg.version)
        runs[task] = run
    console.print(
        f"MLflow UI: mlflow ui --backend-store-uri sqlite:///"
        f"{(settings.state_dir / 'mlflow.db').resolve()}"
    )
    return runs


def epoch_bars(progress: Progress, task: str):
    """A training progress callback drawing one bar per epoch."""
    bars: dict[int, object] = {}

    def step(epoch: int, batch: int, batches: int, loss: float) -> None:
        if epoch not in bars:
            bars[epoch] = progress.add_task(f"{task} epoch {epoch + 1}", total=batches)
        progress.update(
            bars[epoch], completed=batch, description=f"{task} epoch {epoch + 1} loss {loss:.4f}"
        )

    return step


def stream_last_day(settings: Settings, config: SimulationConfig, console: Console) -> dict:
    """Replay the last simulated day onto the event stream and run the stream worker on it."""
    from feast import FeatureStore

    from pipelines.event_bus import STREAM_KEY, EventProducer
    from pipelines.replay import replay, stream_events
    from pipelines.stream_features import StreamWorker, WorkerConfig

    client = redis.Redis.from_url(settings.effective_redis_url)
    # A fresh stream and worker state: an earlier demo's entries belong to other days.
    stale = list(client.scan_iter(f"{STREAM_KEY}*"))
    if stale:
        client.delete(*stale)
    last_day = config.start + timedelta(days=config.days - 1)
    events = stream_events(settings.data_root, last_day, last_day + timedelta(days=1))
    with console.status(
        f"replaying {len(events):,} events of {last_day:%Y-%m-%d} onto {STREAM_KEY}"
    ):
        report = replay(EventProducer(client), events, speed=0)
    console.print(f"replayed {report.events:,} events ({report.events_per_second:,.0f}/s)")
    worker = StreamWorker(
        client,
        FeatureStore(repo_path=str(settings.feature_repo)),
        WorkerConfig(repo_path=settings.feature_repo, exit_when_idle=1.5),
    )
    with console.status("stream worker: windowed aggregates pushed to Feast online and offline"):
        summary = worker.run()
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary["stage_seconds"].items())
    console.print(
        f"stream worker counted {summary['events']:,} events ({summary['late']} late, "
        f"{summary['invalid']} invalid) and pushed {summary['rows']:,} rows; {stages}"
    )
    client.close()
    return summary


def sample_auctions(
    settings: Settings, config: SimulationConfig, console: Console, requests: int = 300
) -> int:
    """Send auctions for the last day's users through the scorer with every winner
    logged, so the skew check has served rows. In process (the app and its lifespan,
    without a socket)."""
    import numpy as np
    from fastapi.testclient import TestClient

    from pipelines import events
    from serving.app import create_app
    from serving.config import ServingSettings
    from serving.service import SERVED_STREAM

    client = redis.Redis.from_url(settings.effective_redis_url)
    client.delete(SERVED_STREAM)
    client.close()
    root = events.events_root(settings.data_root)
    shown = events.read_table(
        events.IMPRESSIONS, root, ["user_id", "device", "placement", "country"]
    ).to_pandas()
    ads = events.read_table(events.ADS, root, ["ad_id"]).column("ad_id").to_numpy()
    rng = np.random.default_rng(config.seed)
    picked = shown.iloc[rng.choice(len(shown), min(requests, len(shown)), replace=False)]
    serving = ServingSettings(served_log_sample=1.0, model_alias=DEMO_ALIAS)
    answered = 0
    status = console.status(f"sending {len(picked)} auctions through the scorer")
    with status, TestClient(create_app(settings=serving)) as scorer:
        for i, row in enumerate(picked.itertuples(index=False)):
            candidates = rng.choice(ads, min(50, len(ads)), replace=False)
            body = {
                "request_id": f"demo-{i}",
                "user_id": int(row.user_id),
                "context": {
                    "device": row.device,
                    "placement": row.placement,
                    "country": row.country,
                },
                "slots": 2,
                "candidates": [{"ad_id": int(a)} for a in candidates],
            }
            answered += scorer.post("/v1/auction", json=body).status_code == 200
    console.print(f"scorer answered {answered} of {len(picked)} auctions (winners logged)")
    return answered


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
            f"max PSI {worst['psi'] or 0:.3f} ({worst['feature']})",
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


def validate_demo(settings: Settings, console: Console):
    """Every suite on the demo's data; findings are printed, not fatal (the simulated
    log starts empty, so 30-day windows and ad ages drift as history accumulates)."""
    from validation.run import validate

    with console.status("validating: quality, drift, calibration, skew") as spinner:
        run = validate(settings, status=lambda message: spinner.update(message), alias=DEMO_ALIAS)
    console.print(validation_table(run.summary))
    for failure in run.failures()[:20]:
        console.print(f"  [yellow]finding[/yellow] {escape(failure)}", soft_wrap=True)
    if len(run.failures()) > 20:
        console.print(f"  ... {len(run.failures()) - 20} more in {run.out_dir / 'summary.json'}")
    return run
