"""Export of a trained model as its artifact: ``model.onnx`` plus ``manifest.json``.

The graph's inputs and outputs and the scoring path are :mod:`artifact.runtime`'s; the
manifest is :class:`artifact.manifest.Manifest`. Export checks the graph against torch
on real rows before it writes a manifest (DESIGN.md, contract 3).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from artifact.manifest import Manifest
from artifact.metrics import gate, period_shift
from artifact.runtime import (
    DENSE_INPUT,
    SPARSE_INPUT,
    output_names,
    raw_probabilities,
    session,
)
from feature_repo import contract
from training.train import TrainedModel, predict

if TYPE_CHECKING:
    from training.dataset import TrainingSet

PARITY_TOLERANCE = 1e-5


def export_onnx(trained: TrainedModel, path: Path) -> Path:
    """Write the graph with a dynamic batch axis (TorchScript-based exporter: the
    torch.export-based one needs onnxscript, which adstack does not install)."""
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


def parity(trained: TrainedModel, onnx_path: Path, frame) -> dict[str, float]:
    """Max |onnxruntime - torch| over a real batch, for every output probability."""
    encoded = trained.feature_map.transform(frame)
    expected = predict(trained.model, encoded)
    got = raw_probabilities(session(onnx_path), encoded.sparse, encoded.dense)
    return {name: float(np.max(np.abs(got[name] - expected[name]))) for name in got} | {
        "rows": len(frame)
    }


def build_manifest(
    trained: TrainedModel, training_set: TrainingSet, onnx_path: Path, parity_result: dict
) -> Manifest:
    return Manifest(
        task=trained.task,
        model_kind=trained.config.model.kind,
        feature_service=training_set.service,
        features=[asdict(f) for f in training_set.features],
        entity_keys=list(contract.MODEL_ENTITY_KEYS),
        request_features=[f.name for f in contract.REQUEST_FEATURES],
        context=[{"name": f.name, "kind": f.kind} for f in training_set.context],
        inputs={
            SPARSE_INPUT: {"dtype": "int64", "fields": trained.feature_map.sparse_names},
            DENSE_INPUT: {"dtype": "float32", "fields": trained.feature_map.dense_names},
        },
        outputs=output_names(trained.task),
        served_output=trained.served_output,
        feature_map=trained.feature_map,
        calibration=trained.calibration,
        metrics=trained.metrics,
        gate=gate(trained.metrics["test"], period_shift(trained.metrics)).as_dict(),
        training_window=training_set.summary(),
        model_config=trained.config.model.as_dict(),
        train_config=trained.config.as_dict(),
        history=trained.history,
        parity=parity_result,
        onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        created_at=datetime.now(UTC).isoformat(),
    )


def write_artifact(
    trained: TrainedModel, training_set: TrainingSet, directory: Path, parity_rows: int = 4096
) -> Manifest:
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
    manifest.write(directory)
    return manifest
