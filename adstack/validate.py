"""One validation run: the suites asked for, their reports, Data Docs and plots.

``adstack validate`` and the demo call :func:`validate`. What each suite reads:

- ``quality``: every feature view's offline table (:mod:`validation.quality`); streamed
  views are checked when their push log exists;
- ``drift`` and ``calibration``, per task (``ctr``, ``cvr``): the model the alias (default
  ``champion``) points to in the registry, its reference profile, and recent traffic
  joined through Feast with the model's feature service. Drift judges inputs, which need
  no label: the impressions of the log's last ``days`` whole days (the newest traffic,
  the day after the model's training set when the model is fresh). Calibration needs
  final labels: the last ``days`` whole days whose labels are final at the end of the
  log (a day earlier for CTR, a week for CVR). ``--current`` gives drift a Parquet file
  of model inputs instead, e.g. a large table for Spark;
- ``skew``: the newest rows of the scorer's served log, recomputed through Feast.

Everything is written under ``<reports>/validation/``: ``summary.json`` (also kept as
``runs/<stamp>.json``), GX Data Docs under ``data_docs/`` and drift plots under
``plots/``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import redis
from feast import FeatureStore

from adstack.flows import dataset_dir, recent_impressions, reference_rows
from artifact import registry
from artifact.manifest import Manifest
from artifact.registry import CHAMPION, MODEL_NAMES, ResolvedModel
from artifact.runtime import session
from core.served_log import SERVED_STREAM
from core.settings import Settings
from core.spark import spark_session
from feature_repo import contract
from training import dataset
from training.labels import Task, label_window
from validation import calibration, drift, quality, skew
from validation.gx import ENGINES, Runner
from validation.plots import plot_drift

log = logging.getLogger("adstack.validation")
SUITES = ("quality", "drift", "calibration", "skew")
TASKS = ("ctr", "cvr")
MAX_TRAFFIC_ROWS = 200_000
PLOTS_PER_TASK = 4


@dataclass
class ValidationRun:
    out_dir: Path
    summary: dict[str, Any]
    docs: Path | None
    plots: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.summary["passed"])

    def failures(self) -> list[str]:
        return list(self.summary["failures"])


def reports_dir(settings: Settings) -> Path:
    return settings.reports_dir / "validation"


def load_reference(settings: Settings, model: ResolvedModel) -> drift.Reference:
    """The profile the model was registered with; for an older artifact without one, the
    profile of the saved training set's train split (said in the log)."""
    path = model.directory / drift.REFERENCE_FILE
    if path.exists():
        return drift.Reference.read(model.directory)
    directory = dataset_dir(settings, model.manifest.task)
    log.warning("%s has no reference profile: profiling %s", model.directory, directory)
    manifest = model.manifest
    rows, history = reference_rows(dataset.load(directory), manifest.feature_map)
    return drift.reference_profile(rows, manifest.task, manifest.feature_map, history=history)


def recent_traffic(
    settings: Settings, manifest: Manifest, days: int = 1, seed: int = 0, labelled: bool = True
) -> pd.DataFrame:
    """Impressions of the last ``days`` days, with the model's features as Feast's
    point-in-time join returns them: whole days whose labels are final at the end of the
    log (``labelled``), else the log's last days, labels as they stand (for checks of the
    inputs only; the last day is partial when the log ends within it)."""
    task = cast(Task, manifest.task)
    _, cutoff = dataset.log_range(settings.data_root)
    if labelled:
        # The whole days whose label window closed before the log's end.
        end = pd.Timestamp(cutoff - label_window(task)).floor("D").to_pydatetime()
    else:
        end = cutoff  # the midnight after the log's last impression
    return recent_impressions(
        settings,
        task,
        manifest.feature_service,
        end - timedelta(days=days),
        end,
        MAX_TRAFFIC_ROWS,
        seed,
        labels_at=cutoff if labelled else None,
    )


@dataclass
class Context:
    """What every suite of one run shares: where reports go, the GX runner, the engine."""

    settings: Settings
    runner: Runner
    out: Path
    engine: str
    spark: Any
    thresholds: drift.Thresholds | None
    status: Callable[[str], None]
    plots: list[Path] = field(default_factory=list)


def validate(
    settings: Settings,
    suites: tuple[str, ...] = SUITES,
    engine: str = "pandas",
    tasks: tuple[str, ...] = TASKS,
    days: int = 1,
    as_of: datetime | None = None,
    current: Path | None = None,
    served_limit: int = 10_000,
    thresholds: drift.Thresholds | None = None,
    status: Callable[[str], None] = lambda message: None,
    alias: str = CHAMPION,
) -> ValidationRun:
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown suites {sorted(unknown)}; choose from {SUITES}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    out = reports_dir(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    as_of = as_of or datetime.now(UTC)
    spark = spark_session("adstack-validate") if engine == "spark" else None
    context = Context(
        settings, Runner(docs_dir=out / "data_docs", run_name=stamp), out, engine, spark,
        thresholds, status,
    )  # fmt: skip
    summary: dict[str, Any] = {"run": stamp, "engine": engine, "as_of": as_of.isoformat()}
    failures: list[str] = []
    # Each suite run, whether it passed and why not: the reasons are its failures.
    outcomes: list[dict[str, Any]] = []

    def outcome(suite: str, subject: str, found: list[str]) -> None:
        failures.extend(found)
        outcomes.append({"suite": suite, "subject": subject, "passed": not found, "reasons": found})

    if "quality" in suites:
        summary["quality"], found = check_quality(context, as_of)
        outcome("quality", "feature views", found)
    models: dict[str, ResolvedModel] = {}
    if {"drift", "calibration", "skew"} & set(suites):
        models = {task: registry.resolve(settings, MODEL_NAMES[task], alias) for task in tasks}
    for task in tasks if {"drift", "calibration"} & set(suites) else ():
        model = models[task]
        status(f"{task}: recent traffic through Feast")
        reference = load_reference(settings, model)
        if "drift" in suites:
            newest = None
            if current is None:
                newest = recent_traffic(settings, model.manifest, days, labelled=False)
            summary.setdefault("drift", {})[task], found = check_drift(
                context, model, newest, reference, current
            )
            outcome("drift", f"{task} v{model.version}", found)
        if "calibration" in suites:
            traffic = recent_traffic(settings, model.manifest, days)
            summary.setdefault("calibration", {})[task], found = check_calibration(
                context, model, traffic, reference
            )
            outcome("calibration", f"{task} v{model.version}", found)
    if "skew" in suites:
        summary["skew"], found = check_skew(context, list(models.values()), served_limit)
        outcome("skew", "served log", found)
    summary["suites"] = outcomes
    return _write(context, stamp, summary, failures)


def check_quality(context: Context, as_of: datetime) -> tuple[list[dict], list[str]]:
    """Every feature view's offline table; a streamed view only once it has been pushed."""
    context.status("quality: feature tables")
    root = context.settings.data_root
    views = []
    for spec in contract.ALL_VIEWS.values():
        streamed = spec.name not in contract.VIEWS
        if streamed and not quality.has_data(quality.table_path(root, spec)):
            continue  # the stream worker has not pushed yet
        views.append(
            quality.check_view(context.runner, root, spec, as_of, context.engine, context.spark)
        )
    failures = [c.describe() for v in views for s in v.suites for c in s.failures]
    return [v.as_dict() for v in views], failures


def check_drift(
    context: Context,
    model: ResolvedModel,
    traffic: pd.DataFrame | None,
    reference: drift.Reference,
    current: Path | None,
) -> tuple[dict, list[str]]:
    """The model's inputs on ``traffic`` (or the ``current`` Parquet file) against its
    reference."""
    task = model.manifest.task
    context.status(f"{task}: drift of {len(drift.model_inputs(model.manifest.feature_map))} inputs")
    frame: Any = traffic
    spark = context.spark
    if current is not None:
        frame = spark.read.parquet(str(current)) if spark else pd.read_parquet(current)
    elif traffic is None:
        raise ValueError("drift needs recent traffic or a --current file")
    elif spark is not None:
        frame = spark_frame(spark, traffic, reference)
    report = drift.run(context.runner, reference, frame, context.thresholds)
    failures = [
        f"drift {task}: {f.feature} failed {', '.join(f.failed_checks)} "
        f"(PSI {_figure(f.psi)}, KS {_figure(f.ks)}, mean {_figure(f.reference_mean)} "
        f"-> {_figure(f.current_mean)})"
        for f in report.features
        if f.drifted
    ]
    context.plots += _plot(report, context.out / "plots", task)
    return report.as_dict() | {"model_version": model.version}, failures


def check_calibration(
    context: Context, model: ResolvedModel, traffic: pd.DataFrame, reference: drift.Reference
) -> tuple[dict, list[str]]:
    """The model, scored through its artifact, on recent labelled traffic."""
    task = model.manifest.task
    context.status(f"{task}: calibration of {model.name} v{model.version}")
    judged = calibration.judged_rows(task, traffic)
    predictions = calibration.predict(session(model.onnx_path), model.manifest, judged)
    report = calibration.run(
        context.runner, task, judged, predictions, reference, context.thresholds, model.version
    )
    summary = report.as_dict()
    failures = [
        c.describe()
        for s in report.suites
        for c in s.failures
        if c.check != "advertiser_calibration"
    ]
    failures += [
        f"calibration {task}: advertiser {a['advertiser_id']} predicted "
        f"{a['predicted']:.1f} against {a['positives']} observed (ratio "
        f"{a['calibration_ratio']:.2f}, z {a['calibration_z']:.1f})"
        for a in summary["advertisers_miscalibrated"]
    ]
    return summary, failures


def check_skew(
    context: Context, models: list[ResolvedModel], served_limit: int
) -> tuple[dict, list[str]]:
    """The newest rows of the scorer's served log against Feast's offline values."""
    context.status("skew: served log against Feast's offline values")
    settings = context.settings
    client = redis.Redis.from_url(settings.effective_redis_url)
    served = skew.read_served(client, served_limit)
    client.close()
    if not served:
        return {"skipped": f"no served rows in {SERVED_STREAM}"}, []
    refs = list(
        dict.fromkeys(f"{f['view']}:{f['name']}" for m in models for f in m.manifest.features)
    )
    store = FeatureStore(repo_path=str(settings.feature_repo))
    report = skew.run(context.runner, store, served, refs)
    table = report.table.set_index("feature")
    failures = [
        f"skew: {name} mismatches on {table.at[name, 'mismatch_rate']:.1%} of served "
        f"rows (max |diff| {table.at[name, 'max_abs_diff']:.4g}), e.g. {examples[0]}"
        for name, examples in report.examples.items()
        if table.at[name, "mismatch_rate"] > skew.MAX_MISMATCH_RATE
    ]
    return report.as_dict(), failures


def _write(
    context: Context, stamp: str, summary: dict[str, Any], failures: list[str]
) -> ValidationRun:
    docs = context.runner.build_docs()
    summary |= {
        "passed": not failures,
        "failures": failures,
        "data_docs": str(docs) if docs else None,
        "plots": [str(p) for p in context.plots],
    }
    out = context.out
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(summary), indent=2, default=_json)
    (out / "summary.json").write_text(text)
    (out / "runs").mkdir(exist_ok=True)
    (out / "runs" / f"{stamp}.json").write_text(text)
    return ValidationRun(out, summary, docs, context.plots)


def _plot(report: drift.DriftReport, directory: Path, task: str) -> list[Path]:
    ranked = sorted(
        (f for f in report.features if f.drifted),
        key=lambda f: -(f.psi if f.psi is not None else 0.0),
    )
    return [
        plot_drift(
            report.profiles[f.feature],
            report.current[f.feature],
            f.psi,
            directory / f"drift_{task}_{f.feature}.png",
        )
        for f in ranked[:PLOTS_PER_TASK]
    ]


def spark_frame(spark: Any, frame: pd.DataFrame, reference: drift.Reference) -> Any:
    """The compared inputs as a Spark DataFrame: categories as strings, numbers as
    doubles, and missing values as nulls (through Arrow; a pandas NaN would become
    Spark's NaN, which Spark counts as a value)."""
    columns = {}
    for p in reference.columns:
        values = frame[p.name]
        if p.kind == drift.CATEGORICAL:
            columns[p.name] = values.astype("string").astype(object).where(values.notna(), None)
        else:
            columns[p.name] = pd.to_numeric(values, errors="coerce").astype("float64")
    return spark.createDataFrame(pa.Table.from_pandas(pd.DataFrame(columns), preserve_index=False))


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _finite(value: Any) -> Any:
    """NaN and infinities as null: the summary is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value)}")
