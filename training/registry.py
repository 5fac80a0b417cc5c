"""The model registry: MLflow runs, registered models ``ctr`` and ``cvr``, the
``champion`` alias, and the loader the scorer calls.

Default store: SQLite at ``<state dir>/mlflow.db`` with artifacts under
``<state dir>/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///...`` shows it);
``MLFLOW_TRACKING_URI`` points at a tracking server instead. A registered version's
source is the run's ``model/`` folder: ``model.onnx`` and ``manifest.json``. Only a
version whose manifest passed the calibration gate can hold ``champion``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from adstack.settings import Settings
from training.metrics import gate

CHAMPION = "champion"
EXPERIMENT = "adstack"
MODEL_NAMES = {"ctr": "ctr", "cvr": "cvr"}


def tracking_uri(settings: Settings) -> str:
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(settings.state_dir / 'mlflow.db').resolve()}"


def client(settings: Settings) -> MlflowClient:
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _experiment(settings: Settings, mlflow_client: MlflowClient) -> str:
    found = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if found is not None:
        return found.experiment_id
    location = None
    if "MLFLOW_TRACKING_URI" not in os.environ:
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
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{name}-{manifest['model_kind']}"
    ) as run:
        mlflow.log_params(
            _flat("model.", manifest["model_config"])
            | _flat("train.", manifest["train_config"])
            | {"feature_service": manifest["feature_service"]}
        )
        numbers = {
            key: float(value)
            for key, value in _flat("", manifest["metrics"]).items()
            if isinstance(value, int | float) and value == value
        }
        mlflow.log_metrics(numbers)
        for epoch in manifest["history"]:
            mlflow.log_metrics(
                {k: float(v) for k, v in epoch.items() if k != "epoch"}, step=int(epoch["epoch"])
            )
        mlflow.log_artifacts(str(artifact_dir), artifact_path="model")
        for plot in plots:
            mlflow.log_artifact(str(plot), artifact_path="plots")
        mlflow.set_tags({"gate_passed": str(manifest["gate"]["passed"]), "task": manifest["task"]})
        source = f"{run.info.artifact_uri}/model"
    try:
        mlflow_client.create_registered_model(name)
    except MlflowException:
        pass  # already registered
    version = mlflow_client.create_model_version(
        name, source, run_id=run.info.run_id, tags={"gate_passed": str(manifest["gate"]["passed"])}
    )
    passed = bool(manifest["gate"]["passed"])
    if promote and passed:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version.version)
    return Registration(
        name,
        version.version,
        run.info.run_id,
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
    return _load(
        name, version.version, mlflow_client.get_model_version_download_uri(name, version.version)
    )


def resolve_version(settings: Settings, name: str, version: str) -> ResolvedModel:
    mlflow_client = client(settings)
    return _load(name, version, mlflow_client.get_model_version_download_uri(name, version))


def _load(name: str, version: str, uri: str) -> ResolvedModel:
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    manifest = json.loads((local / "manifest.json").read_text())
    return ResolvedModel(name, str(version), local, manifest)


def promote(settings: Settings, name: str, version: str, alias: str = CHAMPION) -> ResolvedModel:
    """Move ``alias`` to ``version``; refuses a version whose manifest failed the gate."""
    resolved = resolve_version(settings, name, version)
    # The gate is re-applied to the recorded test metrics, not read from a stored flag.
    result = gate(resolved.manifest["metrics"]["test"])
    if not result.passed:
        raise GateRefused(
            f"{name} version {version} failed the calibration gate: {'; '.join(result.reasons)}"
        )
    client(settings).set_registered_model_alias(name, alias, version)
    return resolved
