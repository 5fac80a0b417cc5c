"""The read side of the model registry: which artifact ``name@alias`` or a version is.

Default store: SQLite at ``<state dir>/mlflow.db`` with artifacts under
``<state dir>/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///...`` shows it);
``MLFLOW_TRACKING_URI`` points at a tracking server instead. A registered version's
source is the run's ``model/`` folder: ``model.onnx`` and ``manifest.json``. Only a
version whose manifest passed the calibration gate can hold ``champion``. Writing
(runs, versions) is :mod:`training.registry`'s; moving an alias behind the calibration
suite is the roof's (:func:`adstack.flows.promote`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from artifact.manifest import Manifest
from core.settings import Settings

CHAMPION = "champion"
EXPERIMENT = "adstack"
MODEL_NAMES = {"ctr": "ctr", "cvr": "cvr"}


def tracking_uri(settings: Settings) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_uri(settings)


def local_uri(settings: Settings) -> str:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(settings.state_dir / 'mlflow.db').resolve()}"


def client(settings: Settings):
    """A client bound to the settings' store. The fluent ``mlflow.*`` API is not used: it
    keeps the tracking URI in a process-wide variable."""
    # MLflow is imported when a model is resolved, not when the scorer's modules load.
    from mlflow import MlflowClient

    # MLflow logs the schema migrations of a new local store at INFO ("Creating initial
    # MLflow database tables"): set-up detail, not something the caller did.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    uri = tracking_uri(settings)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    directory: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.directory / "model.onnx"


def resolve(settings: Settings, name: str, alias: str = CHAMPION) -> ResolvedModel:
    """The ONNX file and manifest that ``name@alias`` points to (downloaded when the
    artifact store is remote)."""
    from mlflow.exceptions import MlflowException

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
    import mlflow

    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri(settings))
    )
    return ResolvedModel(name, str(version), local, Manifest.load(local))
