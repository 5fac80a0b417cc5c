"""Prediction drift and calibration of a model on labelled traffic.

The model is scored through its own artifact (ONNX graph, feature map and calibration
from the manifest: the serving path), never through numbers recorded at training time.
On the rows scored:

- overall: calibration ratio (sum of predictions over positives) and ECE with equal-width
  and quantile bins, held to the same gate as promotion (``artifact.metrics.gate``);
- per advertiser with at least ``MIN_ADVERTISER_POSITIVES`` positives: miscalibrated when
  the calibration ratio is outside ``ADVERTISER_RATIO`` *and* the gap between predicted
  and observed positives exceeds ``ADVERTISER_Z`` Poisson standard deviations. The ratio
  alone would flag small advertisers by chance (at 50 positives its own noise is 14%,
  and a day has hundreds of advertisers); the z-score alone would flag a 2% error of a
  large one;
- prediction drift: PSI and KS of the predictions against the predictions on the
  training split recorded in the model's reference profile.

CTR is judged on every impression against clicks; CVR on clicked impressions against
conversions (what pCVR predicts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd

from artifact import metrics, runtime
from artifact.manifest import Manifest
from validation import profile as profiles
from validation.drift import Reference, Thresholds, statistics_expectations, statistics_table
from validation.gx import Runner, SuiteResult, check

MIN_ADVERTISER_POSITIVES = 30
ADVERTISER_RATIO = (0.8, 1.25)
ADVERTISER_Z = 4.0
LABEL = {"ctr": "click", "cvr": "conversion"}


def judged_rows(task: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a task's predictions are judged on."""
    return frame[frame["click"] == 1] if task == "cvr" else frame


def predict(model: Any, manifest: Manifest, frame: pd.DataFrame) -> np.ndarray:
    """Calibrated served-output probabilities through the artifact (``runtime.score``)."""
    return runtime.score(model, manifest, frame)


def summary_table(task: str, frame: pd.DataFrame, predictions: np.ndarray) -> pd.DataFrame:
    """One row overall (``advertiser_id`` null) and one per advertiser."""
    labels = frame[LABEL[task]].to_numpy(dtype=np.float64)
    overall = metrics.evaluate(labels, predictions)
    rows = [
        {
            "advertiser_id": None,
            "rows": overall.rows,
            "positives": overall.positives,
            "predicted": float(predictions.sum()),
            "calibration_ratio": overall.calibration_ratio,
            "calibration_z": _z(float(predictions.sum()), float(overall.positives)),
            "ece": overall.ece,
            "ece_quantile": overall.ece_quantile,
        }
    ]
    grouped = pd.DataFrame(
        {"advertiser_id": frame["advertiser_id"].to_numpy(), "y": labels, "p": predictions}
    ).groupby("advertiser_id", sort=True)
    for advertiser, group in grouped:
        positives = float(group["y"].sum())
        rows.append(
            {
                "advertiser_id": int(advertiser),
                "rows": len(group),
                "positives": int(positives),
                "predicted": float(group["p"].sum()),
                "calibration_ratio": float(group["p"].sum()) / positives if positives else None,
                "calibration_z": _z(float(group["p"].sum()), positives),
                "ece": None,
                "ece_quantile": None,
            }
        )
    table = pd.DataFrame(rows).astype({"calibration_ratio": "float64"})
    low, high = ADVERTISER_RATIO
    table["miscalibrated"] = ~table["calibration_ratio"].between(low, high) & (
        table["calibration_z"].abs() > ADVERTISER_Z
    )
    return table


def _z(predicted: float, positives: float) -> float:
    """(predicted - observed) positives in Poisson standard deviations of the prediction."""
    return (predicted - positives) / np.sqrt(max(predicted, 1e-9))


def overall_expectations() -> list[gxe.Expectation]:
    low, high = metrics.GATE_CALIBRATION_RATIO
    ratio = gxe.ExpectColumnValuesToBeBetween(
        column="calibration_ratio", min_value=low, max_value=high
    )
    checks = [check(ratio, "calibration_ratio")]
    for column in ("ece", "ece_quantile"):
        bound = gxe.ExpectColumnValuesToBeBetween(column=column, max_value=metrics.GATE_MAX_ECE)
        checks.append(check(bound, column))
    return checks


def advertiser_expectations() -> list[gxe.Expectation]:
    return [
        check(
            gxe.ExpectColumnValuesToBeInSet(column="miscalibrated", value_set=[False]),
            "advertiser_calibration",
        )
    ]


@dataclass
class CalibrationReport:
    task: str
    model_version: str | None
    table: pd.DataFrame
    prediction_psi: float | None
    prediction_ks: float | None
    suites: list[SuiteResult]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.suites)

    @property
    def overall(self) -> dict[str, Any]:
        return self.table.iloc[0].drop("advertiser_id").to_dict()

    def as_dict(self) -> dict[str, Any]:
        judged = self.table.iloc[1:]
        judged = judged[judged["positives"] >= MIN_ADVERTISER_POSITIVES]
        return {
            "task": self.task,
            "model_version": self.model_version,
            "passed": self.passed,
            "overall": self.overall,
            "advertisers": int(len(self.table) - 1),
            "advertisers_judged": int(len(judged)),
            "advertisers_miscalibrated": judged.loc[
                judged["miscalibrated"],
                ["advertiser_id", "positives", "predicted", "calibration_ratio", "calibration_z"],
            ].to_dict(orient="records"),
            "prediction_psi": self.prediction_psi,
            "prediction_ks": self.prediction_ks,
            "suites": [s.as_dict() for s in self.suites],
        }


def run(
    runner: Runner,
    task: str,
    frame: pd.DataFrame,
    predictions: np.ndarray,
    reference: Reference | None = None,
    thresholds: Thresholds | None = None,
    model_version: str | None = None,
    name: str | None = None,
) -> CalibrationReport:
    """Judge ``predictions`` of ``frame``'s rows (already restricted by :func:`judged_rows`)."""
    thresholds = thresholds or Thresholds()
    name = name or f"calibration_{task}"
    table = summary_table(task, frame, predictions)
    suites = [runner.validate(f"{name}_overall", overall_expectations(), table.iloc[:1])]
    judged = table.iloc[1:]
    judged = judged[judged["positives"] >= MIN_ADVERTISER_POSITIVES].reset_index(drop=True)
    if len(judged):
        suites.append(
            runner.validate(f"{name}_advertisers", advertiser_expectations(), judged, complete=True)
        )
    psi = ks = None
    if reference is not None and reference.prediction is not None:
        current = profiles.current_stats(
            pd.DataFrame({reference.prediction.name: predictions}), [reference.prediction]
        )
        drift_table = statistics_table([reference.prediction], current, thresholds)
        psi, ks = (None if pd.isna(v) else float(v) for v in drift_table.loc[0, ["psi", "ks"]])
        expectations = statistics_expectations()
        suites.append(runner.validate(f"{name}_prediction_drift", expectations, drift_table))
    for suite in suites:
        suite.rows = len(frame)
    return CalibrationReport(task, model_version, table, psi, ks, suites)
