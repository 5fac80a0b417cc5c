"""The ONNX runtime that scores a model artifact (DESIGN.md, contract 3).

The graph takes two named, typed inputs, ``sparse_ids`` (N, S) int64 and
``dense_features`` (N, D) float32, and returns logits (``ctr_logit``; ESMM adds
``cvr_logit``). A logit becomes a probability in one place, :func:`sigmoid`, and a
calibrated probability through :func:`artifact.calibration.apply` with the manifest's
parameters. Serving needs no pickle and no torch: :class:`LoadedModel` is the whole
scoring path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from artifact import calibration
from artifact.feature_map import FeatureMap
from artifact.manifest import Manifest

SPARSE_INPUT = "sparse_ids"
DENSE_INPUT = "dense_features"


def output_names(task: str) -> list[str]:
    return ["ctr_logit"] if task == "ctr" else ["ctr_logit", "cvr_logit"]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities (float64) from the graph's logits."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    return session_from_bytes(path.read_bytes(), threads)


def session_from_bytes(graph: bytes, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads steal the CPU a web server on the same cores needs (DESIGN.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def served_session(path: Path, output: str, threads: int = 1) -> ort.InferenceSession:
    """A session computing only ``output``: ESMM's graph also holds the CTR tower, which
    the CVR model's served output does not need (half its inference time, measured)."""
    # onnx only to prune a multi-output graph, which happens once per model load.
    import onnx
    from onnx.utils import Extractor

    graph = onnx.load(str(path))
    if [o.name for o in graph.graph.output] == [output]:
        return session(path, threads)
    inputs = [i.name for i in graph.graph.input]
    pruned = Extractor(graph).extract_model(inputs, [output])
    return session_from_bytes(pruned.SerializeToString(), threads)


def raw_probabilities(
    onnx_session: ort.InferenceSession, sparse: np.ndarray, dense: np.ndarray
) -> dict[str, np.ndarray]:
    """Uncalibrated probabilities from the graph: ``ctr``, and ``cvr`` for ESMM."""
    logits = onnx_session.run(None, {SPARSE_INPUT: sparse, DENSE_INPUT: dense})
    names = [o.name.removesuffix("_logit") for o in onnx_session.get_outputs()]
    return {name: sigmoid(value) for name, value in zip(names, logits, strict=True)}


def score(
    onnx_session: ort.InferenceSession, manifest: Manifest, columns: Mapping[str, Any]
) -> np.ndarray:
    """Calibrated probabilities of the model's served output for rows given column-wise
    (the manifest's entity keys, request features and service features)."""
    encoded = manifest.feature_map.transform(columns)
    raw = raw_probabilities(onnx_session, encoded.sparse, encoded.dense)
    return calibration.apply(manifest.calibration, raw[manifest.served_output])


@dataclass
class LoadedModel:
    """A model artifact ready to score: its ONNX session (pruned to the served output)
    and its manifest."""

    name: str
    version: str
    manifest: Manifest
    session: ort.InferenceSession
    output: str  # the graph output to run, e.g. "cvr_logit"

    @property
    def feature_map(self) -> FeatureMap:
        return self.manifest.feature_map

    @classmethod
    def from_files(cls, name: str, version: str, directory: Path, threads: int = 1) -> LoadedModel:
        manifest = Manifest.load(directory)
        output = f"{manifest.served_output}_logit"
        return cls(
            name,
            version,
            manifest,
            served_session(directory / "model.onnx", output, threads),
            output,
        )

    @property
    def views(self) -> list[str]:
        return list(dict.fromkeys(f["view"] for f in self.manifest.features))

    def predict(self, columns: Mapping[str, Any], rows: int) -> tuple[np.ndarray, dict[str, int]]:
        """Calibrated probabilities of the served output, and missing values per field."""
        encoded = self.feature_map.transform(columns, rows)
        (logit,) = self.session.run(
            [self.output], {SPARSE_INPUT: encoded.sparse, DENSE_INPUT: encoded.dense}
        )
        return calibration.apply(self.manifest.calibration, sigmoid(logit.ravel())), encoded.missing
