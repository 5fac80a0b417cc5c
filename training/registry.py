"""The write side of the model registry: MLflow runs and registered versions.

Each training run logs its parameters, metrics, plots and artifact as an MLflow run and
registers a version of ``ctr`` or ``cvr``; a version that passed the calibration gate
takes the ``champion`` alias when asked. Reading is :mod:`artifact.registry`'s.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from artifact.manifest import Manifest
from artifact.registry import CHAMPION, EXPERIMENT, MODEL_NAMES, client, local_uri, tracking_uri
from core.settings import Settings


def _experiment(settings: Settings, mlflow_client: MlflowClient) -> str:
    found = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri(settings) == local_uri(settings):
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
    manifest: Manifest,
    artifact_dir: Path,
    plots: list[Path],
    promote: bool = True,
) -> Registration:
    """Log a run (parameters, metrics, plots, artifact), register a version of the
    task's model, and give it ``champion`` when it passed the gate and ``promote``."""
    mlflow_client = client(settings)
    experiment_id = _experiment(settings, mlflow_client)
    name = MODEL_NAMES[manifest.task]
    run = mlflow_client.create_run(
        experiment_id, run_name=f"{name}-{manifest.model_kind}",
        tags={
            "gate_passed": str(manifest.gate_passed), "task": manifest.task,
            "validation_override": str(manifest.validation.get("override", False)),
        },
    )  # fmt: skip
    run_id, now = run.info.run_id, int(time.time() * 1000)
    params = (
        _flat("model.", manifest.model_config)
        | _flat("train.", manifest.train_config)
        | {"feature_service": manifest.feature_service}
    )
    metrics = [
        Metric(key, float(value), now, 0)
        for key, value in _flat("", manifest.metrics).items()
        if isinstance(value, int | float) and value == value
    ]
    for epoch in manifest.history:
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
        name, source, run_id=run_id, tags={"gate_passed": str(manifest.gate_passed)}
    )
    passed = manifest.gate_passed
    if promote and passed:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version.version)
    return Registration(
        name,
        str(version.version),
        run_id,
        promote and passed,
        passed,
        manifest.gate["reasons"],
    )


def set_alias(settings: Settings, name: str, version: str, alias: str = CHAMPION) -> None:
    client(settings).set_registered_model_alias(name, alias, version)
