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
from training.labels import Task
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
    write_reference(training_set, manifest, artifact_dir)
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


def reference_rows(
    training_set: TrainingSet, feature_map: FeatureMap
) -> tuple[pd.DataFrame, timedelta]:
    """The rows the drift reference profiles: the last ``REFERENCE_DAYS`` of the training
    set (every split), the traffic most like the day after it, starting no earlier than
    the model's longest window is full, unless that leaves less than a day. Returns them
    and the log their earliest row had."""
    frame = training_set.frame
    times = frame["event_timestamp"]
    end = times.max().to_pydatetime()
    origin = training_set.history_start or training_set.splits.start
    windows = [
        contract.WINDOW_OF[n].length for n in feature_map.dense_names if n in contract.WINDOW_OF
    ]
    start = max(end - REFERENCE_DAYS, origin + max(windows, default=timedelta(0)))
    start = max(min(start, end - timedelta(days=1)), origin)
    return frame[times >= start], start - origin


def write_reference(training_set: TrainingSet, manifest: Manifest, directory: Path) -> Path:
    """The drift reference: the model's inputs and its predictions on the training set's
    last days (``reference_rows``), profiled and saved beside the model (registered
    with it)."""
    rows, history = reference_rows(training_set, manifest.feature_map)
    if len(rows) > REFERENCE_ROWS:
        rows = rows.sample(REFERENCE_ROWS, random_state=0)
    judged = rows[rows["click"] == 1] if training_set.task == "cvr" else rows

    predictions = score(session(directory / "model.onnx"), manifest, judged)
    profile = reference_profile(rows, manifest.task, manifest.feature_map, predictions, history)
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
