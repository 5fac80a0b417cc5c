"""The model manifest: everything around the ONNX graph, typed, stored as pure JSON.

``manifest.json`` beside ``model.onnx`` records the feature service and its ordered
features, the fitted feature map (hash sizes, vocabularies, fill values, normalisation),
the calibration parameters, the metrics and the gate, the training window, the model
and training configuration, the ONNX-torch parity and the graph's hash. Readers get a
:class:`Manifest`, never a dict: a missing or unknown key is an error at load time, not
a ``KeyError`` in the scorer.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from artifact.feature_map import FeatureMap

MANIFEST_VERSION = 1
FILE = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    task: str  # "ctr" or "cvr"
    model_kind: str
    feature_service: str
    features: list[dict[str, Any]]  # the service's features in order: name, view, dtype
    entity_keys: list[str]
    request_features: list[str]
    inputs: dict[str, dict[str, Any]]  # graph input -> dtype and the fields it carries
    outputs: list[str]
    served_output: str  # "ctr" or "cvr": the output the scorer calibrates and serves
    feature_map: FeatureMap
    calibration: dict[str, Any]  # parameters of artifact.calibration.apply
    metrics: dict[str, Any]  # per split
    gate: dict[str, Any]  # artifact.metrics.GateResult.as_dict() on the test split
    training_window: dict[str, Any]
    model_config: dict[str, Any]
    train_config: dict[str, Any]
    history: list[dict[str, Any]]  # per epoch
    parity: dict[str, float]  # max |onnxruntime - torch| per output, and the rows compared
    onnx_sha256: str
    created_at: str
    # The training set's quality suite: passed, failures, whether it was overridden.
    validation: dict[str, Any] = field(default_factory=dict)
    # Declared context fields the model reads (name, kind): the scorer accepts them in a
    # request's context as ``name`` and feeds them as ``ctx_<name>``.
    context: list[dict[str, str]] = field(default_factory=list)
    manifest_version: int = MANIFEST_VERSION

    @property
    def gate_passed(self) -> bool:
        return bool(self.gate["passed"])

    @property
    def test_metrics(self) -> dict[str, Any]:
        return self.metrics["test"]

    def with_validation(self, validation: dict[str, Any]) -> Manifest:
        return replace(self, validation=validation)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["feature_map"] = self.feature_map.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        names = {f.name for f in fields(cls)}
        required = {
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        }
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"not a model manifest: missing {missing}, unknown {unknown}")
        version = data.get("manifest_version", MANIFEST_VERSION)
        if version != MANIFEST_VERSION:
            raise ValueError(f"manifest version {version}; this adstack reads {MANIFEST_VERSION}")
        return cls(**{**data, "feature_map": FeatureMap.from_dict(data["feature_map"])})

    def write(self, directory: Path) -> Path:
        path = directory / FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json))
        return path

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        return cls.from_dict(json.loads((directory / FILE).read_text()))


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)  # timestamps of the training window
