"""The model artifact: ``model.onnx`` plus ``manifest.json`` (DESIGN.md, contract 3).

The ONNX graph takes two named, typed inputs, ``sparse_ids`` (N, S) int64 and
``dense_features`` (N, D) float32, and returns logits (``ctr_logit``; ESMM adds
``cvr_logit``). Everything around the graph is JSON in the manifest: the feature
service and its ordered features, the fitted feature map (hash sizes, vocabularies,
fill values, normalisation), the calibration parameters applied by
``training.calibration.apply``, the metrics, the gate and the training window. Serving
needs no pickle and no torch: :func:`score` is the whole scoring path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from feature_repo import contract
from training import calibration
from training.feature_map import FeatureMap
from training.metrics import gate

if TYPE_CHECKING:  # torch and the training loop stay out of the scorer's processes
    from training.dataset import TrainingSet
    from training.train import TrainedModel

MANIFEST_VERSION = 1
SPARSE_INPUT = "sparse_ids"
DENSE_INPUT = "dense_features"
PARITY_TOLERANCE = 1e-5


def output_names(task: str) -> list[str]:
    return ["ctr_logit"] if task == "ctr" else ["ctr_logit", "cvr_logit"]


def export_onnx(trained: TrainedModel, path: Path) -> Path:
    """Write the graph with a dynamic batch axis (TorchScript-based exporter: the
    torch.export-based one needs onnxscript, which adstack does not install)."""
    import torch

    fm = trained.feature_map
    example = (
        torch.zeros((2, len(fm.sparse)), dtype=torch.int64),
        torch.zeros((2, len(fm.dense)), dtype=torch.float32),
    )
    outputs = output_names(trained.task)
    torch.onnx.export(
        trained.model,
        example,
        str(path),
        input_names=[SPARSE_INPUT, DENSE_INPUT],
        output_names=outputs,
        dynamic_axes={name: {0: "batch"} for name in [SPARSE_INPUT, DENSE_INPUT, *outputs]},
        opset_version=17,
        dynamo=False,
    )
    return path


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    return session_from_bytes(path.read_bytes(), threads)


def session_from_bytes(graph: bytes, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads steal the CPU a web server on the same cores needs (DESIGN.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def raw_probabilities(
    onnx_session: ort.InferenceSession, sparse: np.ndarray, dense: np.ndarray
) -> dict[str, np.ndarray]:
    """Uncalibrated probabilities from the graph: ``ctr``, and ``cvr`` for ESMM."""
    logits = onnx_session.run(None, {SPARSE_INPUT: sparse, DENSE_INPUT: dense})
    names = [o.name.removesuffix("_logit") for o in onnx_session.get_outputs()]
    return {
        name: 1.0 / (1.0 + np.exp(-value.astype(np.float64)))
        for name, value in zip(names, logits, strict=True)
    }


def score(
    onnx_session: ort.InferenceSession, manifest: Mapping[str, Any], columns: Mapping[str, Any]
) -> np.ndarray:
    """Calibrated probabilities of the model's served output for rows given column-wise
    (the manifest's entity keys, request features and service features)."""
    feature_map = FeatureMap.from_dict(manifest["feature_map"])
    encoded = feature_map.transform(columns)
    raw = raw_probabilities(onnx_session, encoded.sparse, encoded.dense)
    return calibration.apply(manifest["calibration"], raw[manifest["served_output"]])


def parity(trained: TrainedModel, onnx_path: Path, frame) -> dict[str, float]:
    """Max |onnxruntime - torch| over a real batch, for every output probability."""
    from training.train import predict

    encoded = trained.feature_map.transform(frame)
    expected = predict(trained.model, encoded)
    got = raw_probabilities(session(onnx_path), encoded.sparse, encoded.dense)
    return {name: float(np.max(np.abs(got[name] - expected[name]))) for name in got} | {
        "rows": len(frame)
    }


def build_manifest(
    trained: TrainedModel, training_set: TrainingSet, onnx_path: Path, parity_result: dict
) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION,
        "task": trained.task,
        "model_kind": trained.config.model.kind,
        "feature_service": training_set.service,
        "features": [asdict(f) for f in training_set.features],
        "entity_keys": list(contract.MODEL_ENTITY_KEYS),
        "request_features": [f.name for f in contract.REQUEST_FEATURES],
        "inputs": {
            SPARSE_INPUT: {"dtype": "int64", "fields": trained.feature_map.sparse_names},
            DENSE_INPUT: {"dtype": "float32", "fields": trained.feature_map.dense_names},
        },
        "outputs": output_names(trained.task),
        "served_output": trained.served_output,
        "feature_map": trained.feature_map.to_dict(),
        "calibration": trained.calibration,
        "metrics": trained.metrics,
        "gate": gate(trained.metrics["test"]).as_dict(),
        "training_window": training_set.summary(),
        "model_config": trained.config.model.as_dict(),
        "train_config": trained.config.as_dict(),
        "history": trained.history,
        "parity": parity_result,
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "created_at": datetime.now(UTC).isoformat(),
    }


def write_artifact(
    trained: TrainedModel, training_set: TrainingSet, directory: Path, parity_rows: int = 4096
) -> dict[str, Any]:
    """``model.onnx`` and ``manifest.json`` in ``directory``; refuses to write a manifest
    for a graph whose outputs differ from torch by more than ``PARITY_TOLERANCE``."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(trained, directory / "model.onnx")
    test = training_set.part("test")
    result = parity(trained, onnx_path, test.iloc[: min(parity_rows, len(test))])
    worst = max(v for k, v in result.items() if k != "rows")
    if worst > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX and torch disagree by {worst:.2e} > {PARITY_TOLERANCE}")
    manifest = build_manifest(trained, training_set, onnx_path, result)
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json))
    return manifest


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def load_manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())
