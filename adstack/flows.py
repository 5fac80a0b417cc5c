"""Flows that chain engines: ingest with its checks; train, then validate, then register;
promote behind the calibration suite.

``adstack ingest``, ``adstack dataset``, ``adstack train`` and ``adstack promote`` call
these functions; so does the demo. The
data set of a task is saved under ``<data root>/training/<task>/`` and reused by
``train`` until rebuilt. Reports (metrics JSON, reliability diagram, ROC curves) go to
``<reports>/training/<task>/``; the artifact to ``<state dir>/models/<task>/<stamp>/``
before MLflow copies it into the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore

from artifact import registry as registry_read
from artifact.feature_map import FeatureMap
from artifact.manifest import Manifest
from artifact.metrics import gate, period_shift
from artifact.registry import CHAMPION, ResolvedModel
from artifact.runtime import score, session
from core.settings import Settings
from feature_repo import contract
from pipelines import ingest as ingest_job
from pipelines.ingest import IngestReport
from training import dataset, registry
from training.dataset import TrainingSet
from training.export import write_artifact
from training.labels import Task, label_window, labelled_impressions
from training.models import ModelConfig
from training.plots import plot_reliability, plot_roc
from training.train import TrainConfig, TrainedModel, train_and_evaluate
from validation import calibration
from validation.drift import reference_profile
from validation.gx import Runner
from validation.ingest import IngestValidator, TimeBounds
from validation.quality import check_training_set as training_set_suite

DEFAULT_KIND = {"ctr": "dcn", "cvr": "esmm"}
REFERENCE_ROWS = 100_000
# The drift reference profiles this much of the training set's end (reference_rows).
REFERENCE_DAYS = timedelta(days=7)
log = logging.getLogger("adstack.training")


class DataRefused(ValueError):
    """The training set failed its quality suite and no override was given."""


class GateRefused(RuntimeError):
    """A version failed the calibration gate and cannot take the alias."""


def dataset_dir(settings: Settings, task: str) -> Path:
    return settings.data_root / "training" / task


def ingest(
    source: str,
    path: Path,
    data_root: Path,
    reports_dir: Path,
    *,
    name: str | None = None,
    max_bad_fraction: float = 0.01,
    bounds: TimeBounds | None = None,
) -> IngestReport:
    """Ingest ``path`` as ``source``, every batch checked row by row by the ingest suites
    (events outside ``bounds`` are refused; default: 2000-01-01 to an hour from now)."""
    validator = IngestValidator(bounds or TimeBounds.default())
    return ingest_job.ingest(
        source,
        path,
        data_root,
        reports_dir,
        validator=validator,
        name=name,
        max_bad_fraction=max_bad_fraction,
    )


def require_conversions(settings: Settings) -> None:
    """Refuse a conversion model for a log without conversions, saying what works."""
    if dataset.count_rows(settings.data_root, "conversions") == 0:
        raise ValueError(
            f"the log under {settings.data_root} has no conversions, so no conversion "
            "(CVR) model can be trained from it. Serve the CTR model alone: the scorer "
            "prices CPC bids without a CVR model (CPA bids need one)."
        )


def build_dataset(
    settings: Settings,
    task: Task,
    start: datetime | None = None,
    end: datetime | None = None,
    cutoff: datetime | None = None,
    service: str | None = None,
    split: dataset.SplitRequest | None = None,
) -> TrainingSet:
    """The task's training set over ``[start, end)`` (default: the whole log), read at
    ``cutoff`` (default: the log's last event), saved under ``dataset_dir``."""
    from feast import FeatureStore

    if task == "cvr":
        require_conversions(settings)
    first, last = dataset.log_range(settings.data_root)
    start, end = start or first, end or last
    cutoff = cutoff or dataset.last_event(settings.data_root)
    store = FeatureStore(repo_path=str(settings.feature_repo))
    training_set = dataset.build(
        store, settings.data_root, task, start, end, cutoff, service, split
    )
    dataset.save(training_set, dataset_dir(settings, task))
    return training_set


@dataclass
class TrainingRun:
    trained: TrainedModel
    manifest: Manifest
    registration: registry.Registration
    artifact_dir: Path
    report_dir: Path


def train(
    settings: Settings,
    task: Task,
    kind: str | None = None,
    epochs: int = 4,
    promote: bool = True,
    progress: Callable[[int, int, int, float], None] | None = None,
    training_set: TrainingSet | None = None,
    accept_failed_validation: bool = False,
    keep_warming_up: bool = False,
) -> TrainingRun:
    """Validate the training set, then train, calibrate, evaluate, export and register
    the ``task`` model. A training set failing its quality suite is refused unless
    ``accept_failed_validation``; the override is logged and recorded with the run."""
    if task == "cvr":
        require_conversions(settings)
    if training_set is None:
        directory = dataset_dir(settings, task)
        if not (directory / "dataset.parquet").exists():
            raise FileNotFoundError(
                f"no {task} training set at {directory}: run `adstack dataset --task {task}`"
            )
        training_set = dataset.load(directory)
    validation = check_training_set(settings, training_set, accept_failed_validation)
    config = TrainConfig(
        model=ModelConfig(kind=kind or DEFAULT_KIND[task]),
        epochs=epochs,
        keep_warming_up=keep_warming_up,
    )
    trained = train_and_evaluate(training_set, config, progress)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    artifact_dir = settings.state_dir / "models" / task / stamp
    manifest = write_artifact(trained, training_set, artifact_dir).with_validation(validation)
    manifest.write(artifact_dir)
    write_reference(settings, training_set, manifest, artifact_dir)
    report_dir = settings.reports_dir / "training" / task
    report_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_reliability(trained.curves, report_dir / "reliability.png"),
        plot_roc(trained.curves, report_dir / "roc.png"),
    ]
    registration = registry.register(settings, manifest, artifact_dir, plots, promote=promote)
    report = {
        "registration": asdict(registration),
        "metrics": manifest.metrics,
        "gate": manifest.gate,
        "calibration": {k: v for k, v in manifest.calibration.items() if k not in ("x", "y")},
        "history": manifest.history,
        "parity": manifest.parity,
        "training_window": manifest.training_window,
        "train_seconds": trained.seconds,
        "left_out_inputs": trained.feature_map.left_out,
        "validation": validation,
    }
    (report_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return TrainingRun(trained, manifest, registration, artifact_dir, report_dir)


def check_training_set(
    settings: Settings, training_set: TrainingSet, accept_failed_validation: bool = False
) -> dict[str, Any]:
    """Run the training-set quality suite; refuse a failing set unless overridden."""
    result = training_set_suite(Runner(run_name=f"training-{training_set.task}"), training_set)
    failures = [c.describe() for c in result.failures]
    if failures and not accept_failed_validation:
        raise DataRefused(
            f"the {training_set.task} training set failed {len(failures)} quality checks "
            "(pass --accept-failed-validation to train anyway):\n  " + "\n  ".join(failures)
        )
    if failures:
        log.warning(
            "training on a %s set that failed %d quality checks (override): %s",
            training_set.task, len(failures), "; ".join(failures),
        )  # fmt: skip
    return {
        "suite": result.suite,
        "passed": result.passed,
        "expectations": len(result.checks),
        "failures": failures,
        "override": bool(failures) and accept_failed_validation,
    }


def reference_start(end: datetime, origin: datetime, feature_map: FeatureMap) -> datetime:
    """Where a drift reference ending at ``end`` starts: ``REFERENCE_DAYS`` before it, no
    earlier than the model's longest window is full (on a log starting at ``origin``),
    unless that leaves less than a day."""
    windows = [
        contract.WINDOW_OF[n].length for n in feature_map.dense_names if n in contract.WINDOW_OF
    ]
    start = max(end - REFERENCE_DAYS, origin + max(windows, default=timedelta(0)))
    return max(min(start, end - timedelta(days=1)), origin)


def reference_rows(
    training_set: TrainingSet, feature_map: FeatureMap
) -> tuple[pd.DataFrame, timedelta]:
    """The rows the drift reference profiles: the last ``REFERENCE_DAYS`` of the training
    set (every split), the traffic most like the day after it, starting no earlier than
    the model's longest window is full, unless that leaves less than a day. Returns them
    and the log their earliest row had."""
    frame = training_set.frame
    times = frame["event_timestamp"]
    origin = training_set.history_start or training_set.splits.start
    start = reference_start(times.max().to_pydatetime(), origin, feature_map)
    return frame[times >= start], start - origin


def log_end(training_set: TrainingSet) -> datetime:
    """Where the log the training set was built from ends: the end of the impressions it
    was asked for (capped at the instant its labels were read); the traffic after it is
    what the model meets next."""
    if training_set.impressions_end is not None:
        return training_set.impressions_end
    return pd.Timestamp(training_set.labels.cutoff).tz_convert(UTC).to_pydatetime()


# A training set whose last row is further than this from the end of its log (a label
# window of days: the CVR model's click and attribution windows) is not the traffic the
# next day follows; its reference is read from the log's last days instead.
LABEL_LAG_LIMIT = timedelta(days=1)


def recent_impressions(
    settings: Settings,
    task: Task,
    feature_service: str,
    start: datetime,
    end: datetime,
    max_rows: int,
    seed: int = 0,
    labels_at: datetime | None = None,
) -> pd.DataFrame:
    """Impressions shown in ``[start, end)`` whose label is final at ``labels_at``, with
    the feature service's values from Feast's point-in-time join, as the scorer would
    have read them; at most ``max_rows``, sampled before the join. Without ``labels_at``
    every impression, labels as they stand (their windows read as closed). Raises
    ValueError when the log has none there."""
    final_at = end + label_window(task) if labels_at is None else labels_at
    rows, _ = labelled_impressions(settings.data_root, task, start, end, final_at)
    if rows.empty:
        final_label = "" if labels_at is None else " with a final label"
        raise ValueError(f"no {task} impressions{final_label} in [{start}, {end})")
    if len(rows) > max_rows:
        rows = rows.sample(max_rows, random_state=seed).sort_values("event_timestamp")
    rows = dataset.add_request_features(rows)
    store = FeatureStore(repo_path=str(settings.feature_repo))
    service = store.get_feature_service(feature_service)
    joined = store.get_historical_features(entity_df=rows, features=service).to_df()
    return joined.reset_index(drop=True)


def reference_source(
    settings: Settings,
    training_set: TrainingSet,
    feature_map: FeatureMap,
    feature_service: str,
    own: tuple[pd.DataFrame, timedelta],
) -> tuple[pd.DataFrame, timedelta, str]:
    """The rows a model's drift reference profiles, the log their earliest row had, and
    where they come from. The next day follows the end of the log, so the reference is
    the log's last days: the training set's own rows (``own``, from ``reference_rows``)
    when they reach within a day of the log's end (a CTR set, whose click window is an
    hour), else (a CVR set, whose labels close days later) the log's impressions of those
    days read through Feast, labels as they stand: the inputs need none."""
    end = log_end(training_set)
    last = training_set.frame["event_timestamp"].max().to_pydatetime()
    if end - last <= LABEL_LAG_LIMIT:
        return *own, "training set"
    origin = training_set.history_start or training_set.splits.start
    start = reference_start(end, origin, feature_map)
    recent = recent_impressions(
        settings, training_set.task, feature_service, start, end, REFERENCE_ROWS
    )
    return recent, start - origin, "log through Feast"


def write_reference(
    settings: Settings, training_set: TrainingSet, manifest: Manifest, directory: Path
) -> Path:
    """The drift reference, saved beside the model (registered with it): the model's
    inputs on the log's last days (``reference_source``: what the drift suite compares
    the next day with) and its predictions on the training set's last days (what the
    calibration suite compares its labelled traffic with; for a CVR model that traffic
    is as old as the set's labels, a week before the log's end)."""
    labelled, history = reference_rows(training_set, manifest.feature_map)
    if len(labelled) > REFERENCE_ROWS:
        labelled = labelled.sample(REFERENCE_ROWS, random_state=0)
    rows, history, source = reference_source(
        settings, training_set, manifest.feature_map, manifest.feature_service,
        (labelled, history),
    )  # fmt: skip
    judged = labelled[labelled["click"] == 1] if training_set.task == "cvr" else labelled
    predictions = score(session(directory / "model.onnx"), manifest, judged)
    profile = reference_profile(rows, manifest.task, manifest.feature_map, predictions, history)
    times = rows["event_timestamp"]
    profile.window = {
        "start": times.min().isoformat(),
        "end": times.max().isoformat(),
        "source": source,
    }
    return profile.write(directory)


def promote(settings: Settings, name: str, version: str, alias: str = CHAMPION) -> ResolvedModel:
    """Move ``alias`` to ``version``; refuses a version that fails the calibration gate on
    its recorded test metrics or, re-scored through its own artifact, on the saved
    training set's test days (overall and per advertiser)."""
    resolved = registry_read.resolve_version(settings, name, version)
    # The gate is re-applied to the recorded test metrics, not read from a stored flag.
    result = gate(resolved.manifest.test_metrics, period_shift(resolved.manifest.metrics))
    reasons = list(result.reasons) + calibration_on_test_days(settings, resolved)
    if reasons:
        raise GateRefused(
            f"{name} version {version} failed the calibration gate: {'; '.join(reasons)}"
        )
    registry.set_alias(settings, name, version, alias)
    return resolved


def calibration_on_test_days(settings: Settings, model: ResolvedModel) -> list[str]:
    """Failures of the calibration suite on the saved training set's test split, scored
    through ``model``'s ONNX graph and calibration; none when no set is saved."""
    task = model.manifest.task
    directory = dataset_dir(settings, task)
    if not (directory / "dataset.parquet").exists():
        return []
    judged = calibration.judged_rows(task, dataset.load(directory).part("test"))
    predictions = calibration.predict(session(model.onnx_path), model.manifest, judged)
    report = calibration.run(
        Runner(), task, judged, predictions, model_version=model.version,
        name=f"promotion_{task}",
    )  # fmt: skip
    return [c.describe() for s in report.suites for c in s.failures]
