"""The ``adstack`` command line: one entry point per stage of the platform.

Each command imports its stage when it runs: the stages bring Spark, Feast, torch and
MLflow, and ``adstack --help`` or ``adstack redis start`` should not wait for them.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adstack import redis_server
from core.settings import api_token_file, get_settings, read_or_create_token

app = typer.Typer(help="adstack: a feature-store-centric ads ML platform.", no_args_is_help=True)
redis_app = typer.Typer(help="The embedded redis-server (used when REDIS_URL is unset).")
app.add_typer(redis_app, name="redis")
console = Console()
err = Console(stderr=True)


@redis_app.command("start")
def redis_start(
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default ADSTACK_REDIS_PORT or 6379).")
    ] = None,
) -> None:
    """Start a real redis-server with append-only persistence under .adstack/redis/."""
    settings = get_settings()
    if not settings.embedded_redis:
        console.print(
            f"REDIS_URL is set ({settings.redis_url}): using that server, not starting one."
        )
        return
    try:
        server = redis_server.start(settings.redis_dir, port or settings.redis_port)
    except redis_server.RedisServerError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(f"redis-server pid {server.pid} on {server.url} (data in {server.directory})")


@redis_app.command("stop")
def redis_stop() -> None:
    """Stop exactly the redis-server that `adstack redis start` began (by its pid file)."""
    server = redis_server.stop(get_settings().redis_dir)
    if server is None:
        console.print("no embedded redis-server is running")
    else:
        console.print(f"stopped redis-server pid {server.pid} (port {server.port})")


@redis_app.command("status")
def redis_status() -> None:
    """Say which Redis adstack uses and whether the embedded one runs."""
    settings = get_settings()
    server = redis_server.status(settings.redis_dir)
    if not settings.embedded_redis:
        console.print(f"using REDIS_URL={settings.redis_url}")
    elif server is None:
        console.print("embedded redis-server: not running")
        raise typer.Exit(1)
    else:
        console.print(f"embedded redis-server: pid {server.pid} on {server.url}")


@app.command()
def simulate(
    days: Annotated[int, typer.Option(min=1)] = 14,
    users: Annotated[int, typer.Option(min=1)] = 20_000,
    ads: Annotated[int, typer.Option(min=1)] = 1_000,
    impressions_per_day: Annotated[int, typer.Option(min=1)] = 100_000,
    seed: int = 7,
    start: Annotated[
        str, typer.Option(help="First simulated day, YYYY-MM-DD (UTC).")
    ] = "2026-01-05",
    drift_day: Annotated[
        int | None, typer.Option(help="Day index from which the world drifts.")
    ] = None,
    drift_kind: Annotated[str, typer.Option(help="interest, device or price")] = "interest",
    output: Annotated[
        Path | None, typer.Option(help="Landing folder (default <data>/landing/simulator).")
    ] = None,
) -> None:
    """Simulate an ad marketplace with a hidden ground truth into a landing folder."""
    from pipelines.simulator import SimulationConfig, write_simulation

    settings = get_settings()
    try:
        config = SimulationConfig(
            days=days,
            users=users,
            ads=ads,
            impressions_per_day=impressions_per_day,
            seed=seed,
            start=datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=UTC),
            drift_day=drift_day,
            drift_kind=drift_kind,  # type: ignore[arg-type]
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    landing = output or settings.data_root / "landing" / "simulator"
    ground_truth = settings.data_root / "ground_truth"
    with _progress() as progress:
        task = progress.add_task("simulating days", total=days)
        counts = write_simulation(
            config, landing, ground_truth, on_day=lambda _day: progress.advance(task)
        )
    table = Table("table", "rows", title="simulated")
    for name, rows in counts.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print(f"events landed in {landing}\nground truth (never a feature) in {ground_truth}")


@app.command()
def ingest(
    source: Annotated[
        str,
        typer.Option(
            help="simulator, canonical, talkingdata, open_bandit, avazu, criteo or generic"
        ),
    ],
    path: Annotated[
        Path | None, typer.Option(help="File or folder to read; for generic, the YAML mapping.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name the written files carry (default: the source).")
    ] = None,
    max_bad_fraction: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.01,
) -> None:
    """Validate a source with Great Expectations into the canonical events; quarantine bad rows."""
    from adstack import flows
    from pipelines import ingest as ingest_job

    settings = get_settings()
    if path is None:
        if source != "simulator":
            raise typer.BadParameter("--path is required for this source", param_hint="--path")
        path = settings.data_root / "landing" / "simulator"
    try:
        report = flows.ingest(
            source,
            path,
            settings.data_root,
            settings.reports_dir / "ingest",
            name=name,
            max_bad_fraction=max_bad_fraction,
        )
    except (ingest_job.UnreadableFile, FileNotFoundError, ValueError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    table = Table(
        "table", "rows in", "written", "quarantined", "reasons", title=f"ingest {report.name}"
    )
    for table_name, counts in report.tables.items():
        reasons = ", ".join(f"{r}: {n}" for r, n in counts.reasons.items())
        table.add_row(
            table_name,
            f"{counts.rows_in:,}",
            f"{counts.rows_written:,}",
            f"{counts.rows_quarantined:,}",
            reasons,
        )
    console.print(table)
    console.print(
        f"events in {report.events_root}; quarantine in {report.quarantine_dir}; "
        f"report {settings.reports_dir / 'ingest' / (report.name + '.json')}"
    )
    if not report.passed:
        err.print(
            f"[red]bad fraction {report.bad_fraction:.2%} is above the threshold "
            f"{report.max_bad_fraction:.2%}[/red]"
        )
        raise typer.Exit(1)


def _date(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


@app.command()
def batch(
    start: Annotated[
        str | None, typer.Option(help="First window-end date, YYYY-MM-DD (UTC).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last window-end date, YYYY-MM-DD.")] = None,
    master: Annotated[str | None, typer.Option(help="Spark master (default local[*]).")] = None,
) -> None:
    """Compute the daily windowed feature tables with Spark (default: every event day)."""
    from core.spark import spark_job
    from pipelines import batch_features

    settings = get_settings()
    try:
        first_end, last_end = _date(start), _date(end)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    try:
        with (
            spark_job("adstack-batch-features", master) as spark,
            console.status("computing feature tables with Spark"),
        ):
            written = batch_features.run(spark, settings.data_root, first_end, last_end)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    table = Table("feature table", "rows", title="batch features")
    for name, rows in written.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print(f"feature tables in {settings.data_root / 'features'}")


@app.command()
def apply(
    offline: Annotated[
        str, typer.Option(help="Offline store profile: duckdb or spark.")
    ] = "duckdb",
) -> None:
    """`feast apply` in the feature repo, with adstack's data root and Redis."""
    from adstack.feature_store import FeastCommandError, feast_cli

    settings = get_settings()
    try:
        if offline == "spark":
            # The default profile's apply gives empty push logs their zero-row partition;
            # the Spark store cannot infer a schema from an empty folder.
            feast_cli(settings, "apply", profile="duckdb")
        result = feast_cli(settings, "apply", profile=offline)
    except (FeastCommandError, ValueError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(result.stdout.strip())


def _instant(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def materialize(
    end: Annotated[
        str | None, typer.Option(help="Up to this instant, ISO 8601 (default now; UTC if naive).")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Backfill from this instant, like `feast materialize START END`."),
    ] = None,
    view: Annotated[
        list[str] | None, typer.Option(help="Only these feature views (repeatable).")
    ] = None,
) -> None:
    """Load the online store: `feast materialize-incremental END`, or a backfill with --start.

    Incremental runs continue from the interval the last run recorded; the first one
    starts at now minus the view's TTL (Feast's rule), so backfill historical data with
    --start.
    """
    from pipelines import materialize as materialize_job

    settings = get_settings()
    until = _instant(end, "--end") if end else datetime.now(UTC)
    since = _instant(start, "--start") if start else None
    try:
        with console.status(f"materialising into {settings.effective_redis_url}"):
            if since is None:
                written = materialize_job.materialize_incremental(
                    settings.feature_repo, until, view
                )
            else:
                written = materialize_job.materialize(settings.feature_repo, since, until, view)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    table = Table("feature view", "rows written", title=f"materialised up to {until.isoformat()}")
    for name, rows in written.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)


@app.command()
def replay(
    start: Annotated[
        str | None, typer.Option(help="First instant replayed (ISO 8601, UTC).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Replay events before this instant.")] = None,
    speed: Annotated[
        float, typer.Option(help="Event time per wall time (3600: an hour a second); 0: unpaced.")
    ] = 3600.0,
    maxlen: Annotated[int, typer.Option(help="Trim the stream to about this many entries.")] = (
        5_000_000
    ),
) -> None:
    """Replay the canonical events onto the event stream, in time order, at --speed."""
    import redis

    from core.event_bus import STREAM_KEY, EventProducer
    from pipelines.replay import replay as replay_events
    from pipelines.replay import stream_events

    settings = get_settings()
    since = _instant(start, "--start") if start else None
    until = _instant(end, "--end") if end else None
    try:
        events = stream_events(settings.data_root, since, until)
        producer = EventProducer(redis.Redis.from_url(settings.effective_redis_url), maxlen=maxlen)
    except ValueError as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    with console.status(f"replaying {len(events):,} events at {speed:g}x onto {STREAM_KEY}"):
        report = replay_events(producer, events, speed)
    console.print(
        f"replayed {report.events:,} events in {report.seconds:.1f} s "
        f"({report.events_per_second:,.0f} events/s) onto {STREAM_KEY}"
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def stream(ctx: typer.Context) -> None:
    """Run the stream worker (options: `adstack stream --help-worker`)."""
    from pipelines import stream_features

    args = list(ctx.args)
    if "--help-worker" in args:
        args = ["--help"]
    raise typer.Exit(stream_features.main(args))


@app.command("stream-status")
def stream_status(
    group: Annotated[str, typer.Option(help="Consumer group of the worker.")] = "stream-features",
) -> None:
    """Print the stream worker's last committed summary (counts, lag, latency, stages)."""
    import redis

    from pipelines.stream_features import status

    summary = status(redis.Redis.from_url(get_settings().effective_redis_url), group=group)
    if summary is None:
        err.print(f"no status for group {group}: has `adstack stream` run?")
        raise typer.Exit(1)
    console.print_json(json.dumps(summary))


TASK_HELP = "ctr (click model) or cvr (conversion model, ESMM)."


def _task(value: str) -> str:
    if value not in ("ctr", "cvr"):
        raise typer.BadParameter(f"{value!r} is not a task; choose ctr or cvr")
    return value


def _fractions(value: str | None) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(part) for part in value.split(","))
    except ValueError as error:
        raise typer.BadParameter(f"{value!r}: three numbers like 0.7,0.15,0.15") from error
    if len(parts) != 3:
        raise typer.BadParameter(f"{value!r}: three numbers like 0.7,0.15,0.15")
    return parts[0], parts[1], parts[2]


@app.command()
def dataset(
    task: Annotated[str, typer.Option(help=TASK_HELP, callback=_task)] = "ctr",
    start: Annotated[str | None, typer.Option(help="First impression instant (ISO 8601).")] = None,
    end: Annotated[str | None, typer.Option(help="End of the impressions (exclusive).")] = None,
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="When the log was read (default: its last event). Impressions whose label "
            "window is still open then are left out."
        ),
    ] = None,
    service: Annotated[
        str | None, typer.Option(help="Feature service (default ctr_v1/cvr_v1).")
    ] = None,
    calibration_from: Annotated[
        str | None,
        typer.Option(help="Calibration period start (ISO 8601); train is before it."),
    ] = None,
    test_from: Annotated[
        str | None, typer.Option(help="Test period start (ISO 8601), after calibration.")
    ] = None,
    split_fractions: Annotated[
        str | None,
        typer.Option(
            help="Train, calibration and test shares of the time-ordered rows, e.g. "
            "0.7,0.15,0.15 (default for logs under 3 days; otherwise the last whole days)."
        ),
    ] = None,
) -> None:
    """Build a point-in-time training set from Feast (default: the whole event log)."""
    from adstack.flows import build_dataset, dataset_dir
    from training.dataset import SPLITS, SplitRequest

    settings = get_settings()
    try:
        split = SplitRequest(
            _instant(calibration_from, "--calibration-from") if calibration_from else None,
            _instant(test_from, "--test-from") if test_from else None,
            _fractions(split_fractions),
        )
        with console.status(f"labelling impressions and joining {task} features with Feast"):
            training_set = build_dataset(
                settings,
                task,  # type: ignore[arg-type]
                _instant(start, "--start") if start else None,
                _instant(end, "--end") if end else None,
                _instant(cutoff, "--cutoff") if cutoff else None,
                service,
                split,
            )
    except (ValueError, FileNotFoundError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    summary = training_set.summary()
    splits = summary["splits"]
    table = Table(
        "split", "from", "rows", "clicks", "conversions",
        title=f"{task} training set (split by {splits['how']})",
    )  # fmt: skip
    bounds = (splits["start"], splits["calibration"], splits["test"])
    starts = dict(zip(SPLITS, bounds, strict=True))
    for split_name, row in summary["rows_by_split"].items():
        table.add_row(
            split_name,
            starts[split_name],
            *(f"{row[k]:,}" for k in ("rows", "clicks", "conversions")),
        )
    console.print(table)
    labels = summary["labels"]
    console.print(
        f"left out: {labels['open_label_window']:,} impressions whose label window was open at "
        f"the cut-off {labels['cutoff']} (--cutoff), {labels['without_ad']:,} without a "
        f"catalog ad\n"
        f"{summary['features']} features of {training_set.service}; saved to "
        f"{dataset_dir(settings, task)}"
    )


@app.command("audit-leakage")
def audit_leakage(
    task: Annotated[str, typer.Option(help=TASK_HELP, callback=_task)] = "ctr",
    rows: Annotated[int, typer.Option(min=1, help="Training rows to recompute.")] = 1000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    gap: Annotated[
        bool,
        typer.Option(
            help="Also train LR on the set and on a leaky twin (whole-log aggregates) and "
            "report the offline AUC the leak would fake."
        ),
    ] = False,
) -> None:
    """Recompute every joined feature of sampled training rows from the raw events."""
    from adstack.flows import dataset_dir
    from training import dataset as datasets
    from training import leakage

    settings = get_settings()
    directory = dataset_dir(settings, task)
    if not (directory / "dataset.parquet").exists():
        err.print(f"[red]error:[/red] no {task} training set at {directory}: run `adstack dataset`")
        raise typer.Exit(2)
    training_set = datasets.load(directory)
    views = list(dict.fromkeys(f.view for f in training_set.features))
    with console.status(f"recomputing {len(views)} views for {rows:,} rows from raw events"):
        report = leakage.audit(settings.data_root, training_set.frame, views, rows, seed)
    table = Table("view", "features", "values compared", "mismatches", title="leakage audit")
    for view in report.views:
        table.add_row(view.view, str(view.features), f"{view.compared:,}", str(view.mismatches))
    console.print(table)
    out = settings.reports_dir / "training" / task / "leakage_audit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.as_dict(), indent=2))
    if not report.passed:
        for view in report.views:
            for example in view.examples:
                err.print(f"  {view.view}: {example}")
        err.print(f"[red]leakage audit failed[/red]: {report.mismatches:,} mismatches ({out})")
        raise typer.Exit(1)
    console.print(f"[green]no leakage[/green]: {report.compared:,} values equal; report {out}")
    if gap:
        from training.models import ModelConfig
        from training.train import TrainConfig

        config = TrainConfig(model=ModelConfig(kind="lr"), epochs=2)
        with console.status("training LR on the honest set and on its leaky twin"):
            result = leakage.auc_gap(settings.data_root, training_set, config)
        console.print(
            f"test AUC honest {result.honest_auc:.4f}, leaky {result.leaky_auc:.4f}: the leak "
            f"would add {result.gap:+.4f} AUC offline that production never sees"
        )
        out.write_text(json.dumps(report.as_dict() | {"auc_gap": result.as_dict()}, indent=2))


@app.command()
def train(
    model: Annotated[str, typer.Option(help=TASK_HELP, callback=_task)] = "ctr",
    kind: Annotated[
        str | None,
        typer.Option(
            help="Architecture: dcn (default), deepfm, widedeep or lr for ctr; esmm for cvr."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="At most this many epochs.")] = 4,
    promote: Annotated[
        bool, typer.Option(help="Give the new version the champion alias if it passes the gate.")
    ] = True,
    accept_failed_validation: Annotated[
        bool,
        typer.Option(
            help="Train even if the training set fails its quality suite (logged, and tagged "
            "on the MLflow run)."
        ),
    ] = False,
    keep_warming_up: Annotated[
        bool,
        typer.Option(
            help="Keep features whose window is longer than the log before the test period "
            "(left out by default, as 'warming up')."
        ),
    ] = False,
) -> None:
    """Validate the training set, train, calibrate, evaluate, export to ONNX and register."""
    from adstack.demo import epoch_bars
    from adstack.flows import train as train_job
    from training.train import metric_summary

    settings = get_settings()
    with _progress() as progress:
        step = epoch_bars(progress, model)
        try:
            run = train_job(
                settings, model, kind, epochs, promote, step,  # type: ignore[arg-type]
                accept_failed_validation=accept_failed_validation,
                keep_warming_up=keep_warming_up,
            )  # fmt: skip
        except (FileNotFoundError, ValueError, RuntimeError) as error:
            err.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error
    reg = run.registration
    left_out = run.manifest.feature_map.left_out
    if left_out:
        by_reason: dict[str, list[str]] = {}
        for name, reason in left_out.items():
            by_reason.setdefault(reason, []).append(name)
        console.print(
            "left out of the model: "
            + "; ".join(f"{', '.join(names)} ({reason})" for reason, names in by_reason.items()),
            soft_wrap=True,
        )
    console.print(f"test: {metric_summary(run.manifest.metrics['test'])}")
    console.print(
        f"calibration: {run.manifest.calibration['method']}; ONNX parity {run.manifest.parity}"
    )
    status = "champion" if reg.champion else ("gate failed: " + "; ".join(reg.gate_reasons))
    console.print(
        f"registered {reg.name} version {reg.version} ({status}); report {run.report_dir}"
    )
    if not reg.gate_passed:
        raise typer.Exit(1)


@app.command()
def promote(
    model: Annotated[str, typer.Option(help=TASK_HELP, callback=_task)],
    version: Annotated[str, typer.Option(help="Registered version to promote.")],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "champion",
) -> None:
    """Move the champion alias to a version, if its metrics pass the calibration gate."""
    from adstack import flows

    settings = get_settings()
    try:
        resolved = flows.promote(settings, model, version, alias)
    except flows.GateRefused as error:
        err.print(f"[red]refused:[/red] {error}")
        raise typer.Exit(1) from error
    except Exception as error:  # MLflow raises its own for unknown versions
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"{model}@{alias} -> version {resolved.version} ({resolved.onnx_path})")


@app.command()
def validate(
    suite: Annotated[
        list[str] | None,
        typer.Option(help="quality, drift, calibration or skew (repeatable; default all)."),
    ] = None,
    engine: Annotated[str, typer.Option(help="pandas, or spark for large tables.")] = "pandas",
    task: Annotated[
        list[str] | None, typer.Option(help="Models for drift and calibration (default both).")
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="Recent whole days of labelled traffic.")] = 1,
    as_of: Annotated[
        str | None, typer.Option(help="Judge freshness at this instant (ISO 8601; default now).")
    ] = None,
    current: Annotated[
        Path | None, typer.Option(help="Parquet of model inputs to compare instead of traffic.")
    ] = None,
    served_limit: Annotated[int, typer.Option(min=1, help="Newest served rows to check.")] = 10_000,
    alias: Annotated[str, typer.Option(help="Registry alias of the models to judge.")] = "champion",
) -> None:
    """Run validation suites; exit 1 and list what failed, by how much, if any fails."""
    from adstack.validate import SUITES, TASKS
    from adstack.validate import validate as run_validation

    settings = get_settings()
    try:
        with console.status("validating") as spinner:
            run = run_validation(
                settings,
                tuple(suite or SUITES),
                engine,
                tuple(_task(t) for t in task) if task else TASKS,
                days,
                _instant(as_of, "--as-of") if as_of else None,
                current,
                served_limit,
                status=lambda message: spinner.update(message),
                alias=alias,
            )
    except (ValueError, FileNotFoundError, LookupError) as error:
        err.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    print_validation(run)
    if not run.passed:
        raise typer.Exit(1)


def print_validation(run) -> None:
    """The run's outcome per suite, then every failure with observed and allowed values."""
    from rich.markup import escape

    from adstack.demo import validation_table

    console.print(validation_table(run.summary))
    for failure in run.failures():  # one unwrapped line each, for grep
        err.print(f"  [red]failed[/red] {escape(failure)}", soft_wrap=True, highlight=False)
    console.print(
        f"report: {run.out_dir / 'summary.json'}\nData Docs: {run.docs}\n"
        + (f"drift plots: {run.out_dir / 'plots'}" if run.plots else "no drift plots")
    )


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
    workers: int = typer.Option(1, min=1, help="Worker processes (each loads the models)."),
) -> None:
    """Run the scorer (``uvicorn serving.app:app``) on the champion models.

    Without ``ADSTACK_API_TOKEN`` a random token is generated (once) into the state
    folder and given to the workers; the command says where it is."""
    import uvicorn

    if not os.environ.get("ADSTACK_API_TOKEN"):
        path = api_token_file(get_settings())
        os.environ["ADSTACK_API_TOKEN"] = read_or_create_token(path)
        console.print(
            f"API token for /v1/events and /admin/*: {path} "
            f"(export ADSTACK_API_TOKEN=$(cat {path}))"
        )
    uvicorn.run(
        "serving.app:app",
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@app.command()
def demo(
    drift_day: Annotated[
        int | None,
        typer.Option(
            help="Drift the simulated world from this day (0-based; the live day is the "
            "last, 13): the drift suite should then fail and name the drifted inputs."
        ),
    ] = None,
    drift_kind: Annotated[
        str, typer.Option(help="With --drift-day: device, interest or price.")
    ] = "device",
) -> None:
    """Run the platform end to end at DEMO_SCALE, printing where everything went."""
    from adstack import demo as demo_job
    from pipelines.simulator import DRIFT_KINDS

    if drift_kind not in DRIFT_KINDS:
        raise typer.BadParameter(
            f"{drift_kind!r} is not a drift kind: choose one of {', '.join(DRIFT_KINDS)}",
            param_hint="--drift-kind",
        )
    if drift_day is not None and not 1 <= drift_day < demo_job.DAYS:
        raise typer.BadParameter(
            f"the demo simulates days 0 to {demo_job.DAYS - 1} (the last is the live day): "
            f"choose a drift day from 1 to {demo_job.DAYS - 1}",
            param_hint="--drift-day",
        )
    reports = demo_job.run(get_settings(), console, drift_day, drift_kind)
    if not all(report.passed for report in reports):
        raise typer.Exit(1)


@app.command()
def info() -> None:
    """Print the settings in force (data root, Redis, reports) as JSON."""
    settings = get_settings()
    console.print_json(
        json.dumps(
            {
                "data_root": str(settings.data_root),
                "reports_dir": str(settings.reports_dir),
                "redis_url": settings.effective_redis_url,
                "embedded_redis": settings.embedded_redis,
            }
        )
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console,
    )  # fmt: skip


if __name__ == "__main__":
    app()
