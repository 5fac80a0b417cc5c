"""The model registry: MLflow runs, registered models ``ctr`` and ``cvr``, the
``champion`` alias, and the loader the scorer calls.

Default store: SQLite at ``<state dir>/mlflow.db`` with artifacts under
``<state dir>/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///...`` shows it);
``MLFLOW_TRACKING_URI`` points at a tracking server instead. A registered version's
source is the run's ``model/`` folder: ``model.onnx`` and ``manifest.json``. Only a
version whose manifest passed the calibration gate can hold ``champion``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from adstack.settings import Settings
from training.metrics import gate

CHAMPION = "champion"
EXPERIMENT = "adstack"
MODEL_NAMES = {"ctr": "ctr", "cvr": "cvr"}


def tracking_uri(settings: Settings) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or _local_uri(settings)


def _local_uri(settings: Settings) -> str:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(settings.state_dir / 'mlflow.db').resolve()}"


def client(settings: Settings) -> MlflowClient:
    """A client bound to the settings' store. The fluent ``mlflow.*`` API is not used: it
    keeps the tracking URI in a process-wide variable."""
    uri = tracking_uri(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _experiment(settings: Settings, mlflow_client: MlflowClient) -> str:
    found = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri(settings) == _local_uri(settings):
        location = (settings.state_dir / "mlartifacts").resolve().as_uri()
    return mlflow_client.create_experiment(EXPERIMENT, artifact_location=location)


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    champion: bool
    gate_passed: bool
    gate_reasons: list[str]


class GateRefused(RuntimeError):
    pass


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(f"{name}.", value))
        else:
            flat[name] = value
    return flat


def register(
    settings: Settings,
    manifest: dict[str, Any],
    artifact_dir: Path,
    plots: list[Path],
    promote: bool = True,
) -> Registration:
    """Log a run (parameters, metrics, plots, artifact), register a version of the
    task's model, and give it ``champion`` when it passed the gate and ``promote``."""
    mlflow_client = client(settings)
    experiment_id = _experiment(settings, mlflow_client)
    name = MODEL_NAMES[manifest["task"]]
    run = mlflow_client.create_run(
        experiment_id, run_name=f"{name}-{manifest['model_kind']}",
        tags={
            "gate_passed": str(manifest["gate"]["passed"]), "task": manifest["task"],
            "validation_override": str(manifest.get("validation", {}).get("override", False)),
        },
    )  # fmt: skip
    run_id, now = run.info.run_id, int(time.time() * 1000)
    params = (
        _flat("model.", manifest["model_config"])
        | _flat("train.", manifest["train_config"])
        | {"feature_service": manifest["feature_service"]}
    )
    metrics = [
        Metric(key, float(value), now, 0)
        for key, value in _flat("", manifest["metrics"]).items()
        if isinstance(value, int | float) and value == value
    ]
    for epoch in manifest["history"]:
        metrics += [
            Metric(key, float(value), now, int(epoch["epoch"]))
            for key, value in epoch.items()
            if key != "epoch"
        ]
    mlflow_client.log_batch(
        run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()]
    )
    mlflow_client.log_artifacts(run_id, str(artifact_dir), artifact_path="model")
    for plot in plots:
        mlflow_client.log_artifact(run_id, str(plot), artifact_path="plots")
    mlflow_client.set_terminated(run_id)
    source = f"{run.info.artifact_uri}/model"
    with contextlib.suppress(MlflowException):  # already registered
        mlflow_client.create_registered_model(name)
    version = mlflow_client.create_model_version(
        name, source, run_id=run_id, tags={"gate_passed": str(manifest["gate"]["passed"])}
    )
    passed = bool(manifest["gate"]["passed"])
    if promote and passed:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version.version)
    return Registration(
        name,
        str(version.version),
        run_id,
        promote and passed,
        passed,
        manifest["gate"]["reasons"],
    )


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    directory: Path
    manifest: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.directory / "model.onnx"


def resolve(settings: Settings, name: str, alias: str = CHAMPION) -> ResolvedModel:
    """The ONNX file and manifest that ``name@alias`` points to (downloaded when the
    artifact store is remote)."""
    mlflow_client = client(settings)
    try:
        version = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        raise LookupError(
            f"no model {name!r} with alias {alias!r} in {tracking_uri(settings)}"
        ) from error
    uri = mlflow_client.get_model_version_download_uri(name, version.version)
    return _load(settings, name, version.version, uri)


def resolve_version(settings: Settings, name: str, version: str) -> ResolvedModel:
    mlflow_client = client(settings)
    return _load(
        settings, name, version, mlflow_client.get_model_version_download_uri(name, version)
    )


def _load(settings: Settings, name: str, version: str, uri: str) -> ResolvedModel:
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri(settings))
    )
    manifest = json.loads((local / "manifest.json").read_text())
    return ResolvedModel(name, str(version), local, manifest)


def promote(settings: Settings, name: str, version: str, alias: str = CHAMPION) -> ResolvedModel:
    """Move ``alias`` to ``version``; refuses a version that fails the calibration gate on
    its recorded test metrics or, re-scored through its own artifact, on the saved
    training set's test days (overall and per advertiser)."""
    resolved = resolve_version(settings, name, version)
    # The gate is re-applied to the recorded test metrics, not read from a stored flag.
    result = gate(resolved.manifest["metrics"]["test"])
    reasons = list(result.reasons) + calibration_on_test_days(settings, resolved)
    if reasons:
        raise GateRefused(
            f"{name} version {version} failed the calibration gate: {'; '.join(reasons)}"
        )
    client(settings).set_registered_model_alias(name, alias, version)
    return resolved


def calibration_on_test_days(settings: Settings, model: ResolvedModel) -> list[str]:
    """Failures of the calibration suite on the saved training set's test split, scored
    through ``model``'s ONNX graph and calibration; none when no set is saved."""
    from training import dataset
    from training.export import session
    from training.pipeline import dataset_dir
    from validation import calibration
    from validation.gx import Runner

    task = model.manifest["task"]
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
