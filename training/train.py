"""Fit a model on a training set: encode, train, calibrate, evaluate.

The data path is whole tensors: the split is encoded once by the feature map into an
int64 sparse matrix and a float32 dense matrix, every epoch draws one random
permutation, and each batch is a slice of it indexed in one call. No Python runs per
row.

Tasks:
- ``ctr``: one logit per impression, BCE on the click (focal loss optional; calibration
  always follows, since focal loss pushes probabilities towards 0.5 by design).
- ``cvr``: an ESMM model over every impression, BCE on the click (pCTR) and on
  click-and-conversion (pCTCVR = pCTR x pCVR). The scorer uses its pCVR, calibrated and
  evaluated on the clicked impressions of the calibration and test periods.

Early stopping watches the calibration period's log loss; the best epoch's weights are
kept. The calibration period then fits the calibrator, and the test period, never seen
before, gives the metrics the gate reads.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from artifact import calibration
from artifact.feature_map import HASH, Encoded, FeatureMap
from artifact.metrics import Metrics, PeriodShift, evaluate
from feature_repo import contract
from training.dataset import TrainingSet
from training.models import CTR_KINDS, ModelConfig, build_model, embedding_tables

ID_KEYS = ("user_id", "ad_id", "advertiser_id", "campaign_id")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 4096
    epochs: int = 4
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    # Share of ids replaced by the out-of-vocabulary bucket while training, so that
    # bucket learns what an unknown user or ad looks like.
    id_dropout: float = 0.05
    patience: int = 1
    # Keep service features whose window is longer than the log before the test period
    # (``warming_up``) as inputs; by default they are left out until the log is longer.
    keep_warming_up: bool = False
    loss: str = "bce"  # or "focal"
    focal_gamma: float = 2.0
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Inputs:
    """Which columns feed which part of the feature map, and which were left out."""

    hashed: list[str]
    categorical: list[str]
    dense: list[str]
    count_like: set[str]
    left_out: dict[str, str]  # column -> why it carries no information


def uninformative(column: pd.Series) -> str | None:
    """Why a training column cannot teach a model anything, or None: missing on every
    row, or one value on every row. A single value with some rows missing still says
    something (present or not), so it stays."""
    present = column.notna()
    if not present.any():
        return "missing on every training row"
    if present.all() and column.nunique(dropna=True) == 1:
        value = column.iloc[0]
        value = value.item() if isinstance(value, np.generic) else value
        return f"the same value ({value!r}) on every training row"
    return None


def warming_up(training_set: TrainingSet) -> dict[str, str]:
    """Service features whose window is longer than the log before the test period, with
    the reason. Such a window was still filling in on every row the model learnt from and
    is judged on (a "30d" count over 12 days of log): its values keep growing as the log
    does, so the model would read them differently at serving time. They become inputs
    once the log is longer than the window."""
    history = training_set.history_before_test
    days = history / timedelta(days=1)
    reasons = {}
    for f in training_set.features:
        window = contract.warming_up(f.name, history)
        if window is not None:
            reasons[f.name] = (
                f"warming up: its {window.label} window is longer than the {days:.1f} days "
                "of log before the test period"
            )
    return reasons


def model_inputs(training_set: TrainingSet, keep_warming_up: bool = False) -> Inputs:
    """Entity ids and id-valued features are hashed; strings, request features and
    categorical context fields use vocabularies; numeric context fields and everything
    else are dense (integer features are counts). Columns that are missing or constant
    on every training row are left out, with the reason."""
    hashed = [k for k in ID_KEYS if k in training_set.frame.columns]
    categorical = ["category"] + [f.name for f in contract.REQUEST_FEATURES]
    categorical += [f.column for f in training_set.context if f.kind == "categorical"]
    dense = [f.column for f in training_set.context if f.kind == "numeric"]
    counts = set()
    for f in training_set.features:
        if f.dtype == contract.INT64 and f.name.endswith("_id"):
            hashed.append(f.name)
        elif f.dtype == contract.STRING:
            categorical.append(f.name)
        else:
            dense.append(f.name)
            if f.dtype == contract.INT64:
                counts.add(f.name)
    train = training_set.part("train")
    left_out = {} if keep_warming_up else warming_up(training_set)
    left_out |= {
        name: reason
        for name in (*hashed, *categorical, *dense)
        if name not in left_out and (reason := uninformative(train[name])) is not None
    }
    return Inputs(
        [n for n in hashed if n not in left_out],
        [n for n in categorical if n not in left_out],
        [n for n in dense if n not in left_out],
        counts - set(left_out),
        left_out,
    )


def fit_feature_map(training_set: TrainingSet, keep_warming_up: bool = False) -> FeatureMap:
    inputs = model_inputs(training_set, keep_warming_up)
    # An age counts from the key's first impression in the log: a key there since the
    # log's first day shows the log's length, which only grows after training. Capped at
    # the training maximum it reads "at least this old" and never extrapolates (uncapped,
    # the demo's CVR model predicted less on each later day of a flat conversion rate).
    return FeatureMap.fit(
        training_set.part("train"),
        inputs.hashed,
        inputs.categorical,
        inputs.dense,
        inputs.count_like,
        left_out=inputs.left_out,
        capped=set(contract.AGE_FEATURES),
    )


def _tensors(encoded: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(encoded.sparse), torch.from_numpy(encoded.dense)


def _bce(logits: torch.Tensor, target: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    if config.loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    if config.loss == "focal":
        p = torch.sigmoid(logits)
        pt = torch.where(target > 0.5, p, 1 - p)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return ((1 - pt) ** config.focal_gamma * bce).mean()
    raise ValueError(f"unknown loss {config.loss!r}; choose bce or focal")


def _log_product(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and log(1 - p) of p = sigmoid(a) * sigmoid(b), computed stably."""
    log_p = F.logsigmoid(a) + F.logsigmoid(b)
    return log_p, torch.log1p(-torch.exp(log_p).clamp(max=1 - 1e-7))


def loss_fn(task: str, config: TrainConfig) -> Callable[..., torch.Tensor]:
    if task == "ctr":

        def ctr_loss(output: torch.Tensor, click: torch.Tensor, conversion: torch.Tensor):
            return _bce(output, click, config)

        return ctr_loss

    def esmm_loss(output: tuple[torch.Tensor, ...], click: torch.Tensor, conversion: torch.Tensor):
        ctr_logit, cvr_logit = output
        log_p, log_not_p = _log_product(ctr_logit, cvr_logit)
        ctcvr = click * conversion
        ctcvr_loss = -(ctcvr * log_p + (1 - ctcvr) * log_not_p).mean()
        return _bce(ctr_logit, click, config) + ctcvr_loss

    return esmm_loss


def predict(model: nn.Module, encoded: Encoded, batch_size: int = 65_536) -> dict[str, np.ndarray]:
    """Raw probabilities: ``ctr`` for every model, plus ``cvr`` and ``ctcvr`` for ESMM."""
    model.eval()
    sparse, dense = _tensors(encoded)
    outputs: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, len(sparse), batch_size):
            out = model(sparse[start : start + batch_size], dense[start : start + batch_size])
            logits = out if isinstance(out, tuple) else (out,)
            for name, logit in zip(("ctr", "cvr"), logits, strict=False):
                outputs.setdefault(name, []).append(torch.sigmoid(logit).numpy())
    result = {name: np.concatenate(parts).astype(np.float64) for name, parts in outputs.items()}
    if "cvr" in result:
        result["ctcvr"] = result["ctr"] * result["cvr"]
    return result


def fit_model(
    task: str,
    feature_map: FeatureMap,
    train: Encoded,
    train_labels: pd.DataFrame,
    holdout: Encoded,
    holdout_labels: pd.DataFrame,
    config: TrainConfig,
    progress: Callable[[int, int, int, float], None] | None = None,
    after_epoch: Callable[[dict], None] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train with early stopping on the holdout's loss; returns the best model and the
    per-epoch history (train loss, holdout loss, examples per second).

    ``after_epoch`` receives each epoch's history entry once its holdout loss is known,
    outside the epoch's timer: the quality benchmark trains a peer's epoch there, so the
    two loops alternate under the same machine load."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, feature_map.cardinalities, len(feature_map.dense))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    criterion = loss_fn(task, config)
    sparse, dense = _tensors(train)
    click = torch.from_numpy(train_labels["click"].to_numpy(np.float32))
    conversion = torch.from_numpy(train_labels["conversion"].to_numpy(np.float32))
    hashed = torch.tensor([f.kind == HASH for f in feature_map.sparse])
    hold = _tensors(holdout)
    hold_click = torch.from_numpy(holdout_labels["click"].to_numpy(np.float32))
    hold_conversion = torch.from_numpy(holdout_labels["conversion"].to_numpy(np.float32))
    generator = torch.Generator().manual_seed(config.seed)
    stopping, history = EarlyStopping(config.patience), []
    batch_size = effective_batch_size(config.batch_size, len(sparse))
    batches = (len(sparse) + batch_size - 1) // batch_size
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(sparse), generator=generator)
        started, total = time.perf_counter(), 0.0
        for step in range(batches):
            index = order[step * batch_size : (step + 1) * batch_size]
            batch_sparse = sparse[index]
            if config.id_dropout > 0:
                drop = torch.rand(batch_sparse.shape, generator=generator) < config.id_dropout
                batch_sparse = batch_sparse.masked_fill(drop & hashed, 0)
            loss = criterion(model(batch_sparse, dense[index]), click[index], conversion[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            if progress is not None:
                progress(epoch, step + 1, batches, loss.item())
        seconds = time.perf_counter() - started
        hold_loss = mean_loss(model, criterion, hold, hold_click, hold_conversion)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(sparse),
                "holdout_loss": hold_loss,
                "examples_per_second": len(sparse) / seconds,
                "batch_size": batch_size,
            }
        )
        if after_epoch is not None:
            after_epoch(history[-1])
        if stopping.stop(model, hold_loss):
            break
    stopping.restore(model)
    retire_untrained_buckets(model, feature_map, train.sparse)
    model.eval()
    return model, history


class EarlyStopping:
    """Keeps the weights of the epoch with the lowest holdout loss; says stop after
    ``patience`` epochs in a row without improvement."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = float("inf")
        self.best_state: dict | None = None
        self.stale = 0

    def stop(self, model: nn.Module, holdout_loss: float) -> bool:
        if holdout_loss < self.best - 1e-6:
            self.best, self.best_state, self.stale = (
                holdout_loss,
                copy.deepcopy(model.state_dict()),
                0,
            )
            return False
        self.stale += 1
        return self.stale > self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def mean_loss(
    model: nn.Module,
    criterion: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, torch.Tensor],
    click: torch.Tensor,
    conversion: torch.Tensor,
    chunk: int = 65_536,
) -> float:
    """The criterion's mean over all rows, evaluated in chunks without gradients."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(click), chunk):
            rows = slice(s, s + chunk)
            output = model(inputs[0][rows], inputs[1][rows])
            total += float(criterion(output, click[rows], conversion[rows])) * len(click[rows])
    return total / max(len(click), 1)


MIN_STEPS_PER_EPOCH = 100


def effective_batch_size(batch_size: int, rows: int) -> int:
    """The configured batch, smaller when an epoch would take fewer than 100 steps.

    Measured on Open Bandit (42k training rows): batches of 4,096 make an epoch 10 steps
    and left the DCN at its initialisation (test AUC 0.38); batches of 417 gave 0.49 and
    0.54 for two seeds (LightGBM 0.53). Sets over 400k rows keep the configured size.
    """
    return max(64, min(batch_size, rows // MIN_STEPS_PER_EPOCH))


def retire_untrained_buckets(model: nn.Module, feature_map: FeatureMap, sparse: np.ndarray) -> int:
    """Point every hashed bucket no training id reached at the field's out-of-vocabulary
    row (row 0), in every per-value table of the model, so an unseen id scores like a
    missing one. Returns the rows reset."""
    reset = 0
    with torch.no_grad():
        for table in embedding_tables(model):
            offsets = table.offsets.tolist()
            for column, spec in enumerate(feature_map.sparse):
                if spec.kind != HASH:
                    continue
                used = np.zeros(spec.buckets, dtype=bool)
                used[np.unique(sparse[:, column])] = True
                used[0] = True
                unused = torch.from_numpy(np.flatnonzero(~used)) + offsets[column]
                table.table.weight[unused] = table.table.weight[offsets[column]].clone()
                reset += len(unused)
    return reset


@dataclass
class TrainedModel:
    task: str
    model: nn.Module
    feature_map: FeatureMap
    config: TrainConfig
    calibration: dict  # calibration parameters of the served output
    metrics: dict[str, dict]  # by name: test metrics (and raw, uncalibrated ones)
    history: list[dict]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # test labels and predictions
    seconds: float

    @property
    def served_output(self) -> str:
        """The probability the scorer reads: pCTR from a CTR model, pCVR from ESMM."""
        return "ctr" if self.task == "ctr" else "cvr"


def _served(task: str, frame: pd.DataFrame, probabilities: dict[str, np.ndarray]):
    """Labels, raw predictions and advertisers of the rows the served output is judged on:
    every impression for pCTR, the clicked ones for pCVR (conversion given click)."""
    if task == "ctr":
        return frame["click"].to_numpy(), probabilities["ctr"], frame["advertiser_id"].to_numpy()
    clicked = frame["click"].to_numpy() == 1
    return (
        frame["conversion"].to_numpy()[clicked],
        probabilities["cvr"][clicked],
        frame["advertiser_id"].to_numpy()[clicked],
    )


def train_and_evaluate(
    training_set: TrainingSet,
    config: TrainConfig,
    progress: Callable[[int, int, int, float], None] | None = None,
    after_epoch: Callable[[dict], None] | None = None,
) -> TrainedModel:
    started = time.perf_counter()
    task = training_set.task
    if task == "cvr" and config.model.kind != "esmm":
        raise ValueError("the conversion model is ESMM (model kind 'esmm')")
    if task == "ctr" and config.model.kind not in CTR_KINDS:
        raise ValueError(f"a CTR model is one of {', '.join(CTR_KINDS)}, not {config.model.kind!r}")
    feature_map = fit_feature_map(training_set, config.keep_warming_up)
    parts = {split: training_set.part(split) for split in ("train", "calibration", "test")}
    for split, frame in parts.items():
        if frame.empty:
            raise ValueError(f"the {split} split is empty: {training_set.summary()['splits']}")
    encoded = {split: feature_map.transform(frame) for split, frame in parts.items()}
    model, history = fit_model(
        task,
        feature_map,
        encoded["train"],
        parts["train"],
        encoded["calibration"],
        parts["calibration"],
        config,
        progress,
        after_epoch,
    )
    y_cal, p_cal, _ = _served(task, parts["calibration"], predict(model, encoded["calibration"]))
    fitted = calibration.fit(p_cal, y_cal)
    test_probabilities = predict(model, encoded["test"])
    y_test, p_raw, advertisers = _served(task, parts["test"], test_probabilities)
    p_calibrated = calibration.apply(fitted, p_raw)
    metrics = {
        "test": evaluate(y_test, p_calibrated, advertisers).as_dict(),
        "test_uncalibrated": evaluate(y_test, p_raw, advertisers).as_dict(),
    }
    if task == "cvr":
        test = parts["test"]
        ctcvr = (test["click"] * test["conversion"]).to_numpy()
        metrics["test_ctcvr_uncalibrated"] = evaluate(ctcvr, test_probabilities["ctcvr"]).as_dict()
    # The label rate of both periods: the gate tells a shift between them from the model.
    metrics["period_shift"] = PeriodShift(
        float(np.mean(y_cal)) if len(y_cal) else 0.0,
        len(y_cal),
        float(np.mean(y_test)) if len(y_test) else 0.0,
        len(y_test),
    ).as_dict()
    curves = {"calibrated": (y_test, p_calibrated), "uncalibrated": (y_test, p_raw)}
    return TrainedModel(
        task,
        model,
        feature_map,
        config,
        fitted,
        metrics,
        history,
        curves,
        time.perf_counter() - started,
    )


def metric_summary(metrics: Metrics | dict) -> str:
    m = metrics.as_dict() if isinstance(metrics, Metrics) else metrics
    return (
        f"AUC {m['auc']:.4f}, NE {m['normalized_entropy']:.4f}, log loss {m['log_loss']:.4f}, "
        f"ECE {m['ece']:.4f} (quantile {m['ece_quantile']:.4f}), "
        f"calibration ratio {m['calibration_ratio']:.3f}"
    )
