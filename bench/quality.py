"""Model quality against a known ceiling, baselines on real logs, training throughput.

Every number comes from one run on one set of splits; nothing is tuned on a test split.

Data (prepared in a temporary folder, or ``--workdir``; ``--reuse DIR`` skips it):

- **Simulator.** ``SimulationConfig(days=14)`` (default sizes, start 2026-01-05), the
  Spark batch job for window ends 2026-01-06..2026-01-19, a copy of ``feature_repo/``
  applied with ``feast apply`` (a throwaway ``redis-server`` as its online store), then
  the CTR and CVR training sets of ``training.dataset.build`` with the calibration and
  test days of ``adstack.flows.split_days`` (2 + 2 for CTR, 1 + 1 for CVR: the CVR
  label window of 8 days leaves 6 whole days).
- **TalkingData** (``/work/shared/data/talkingdata_sample``): ingested into its own data
  root, batch job over its dates, ``feast apply``, entity rows from
  ``labelled_impressions(..., "ctr", ...)`` (every row is a click; the install is the
  ``conversion`` column), features of the ``cvr_v1`` service at each row's instant,
  request features. Label = install. Split by timestamp: first 4/6 of the span train
  (about 2 days), next 1/6 calibration, last 1/6 test (about half a day each).
- **Open Bandit** (``/work/shared/data/open_bandit``): the same path with the ``ctr_v1``
  service and label = click, split the same way over its 7 days.

Measurements:

1. Simulator CTR, test days: our LR, our DCN-v2 (defaults, and the variant chosen on
   the calibration split among a few cheap ones), LightGBM, deepctr-torch 0.3.0's DCN
   (matrix cross = DCN-v2, embedding 16, 3 cross layers, DNN (256, 128), dropout 0.1,
   batch 4096, Adam at our learning rate, the same epochs and early stopping on the
   calibration split), and the ceiling: the simulator's true ``p_click`` on the same
   rows. Every model's test predictions are calibrated with ``artifact.calibration``
   fitted on its calibration-split predictions; AUC, NE, ECE and quantile ECE, and the
   gaps to the ceiling (AUC difference, relative NE difference).
2. Simulator CVR, clicked test rows: our ESMM, deepctr-torch's ESMM (its towers are
   MLPs; pCVR = pCTCVR / pCTR), a DCN trained on clicked rows only (the naive,
   sample-selection-biased approach, our code), LightGBM on clicked rows, and the
   ceiling ``p_conversion_given_click``.
3. and 4. TalkingData and Open Bandit: our DCN against LightGBM, AUC with 95% bootstrap
   intervals and a paired bootstrap interval of the difference (same resampled rows).
5. Training throughput, ours vs deepctr-torch's DCN on the CTR train split, same
   architecture and batch size, ``torch.set_num_threads(2)``: the training-loop time of
   every epoch of the default runs above (ours: ``fit_model``'s own epoch timer;
   deepctr: a callback from epoch begin to epoch end, so its per-call input
   concatenation is excluded); median epoch, examples/s and ratio.

Every model sees the same inputs: the feature map fitted on the train split
(``training.train.fit_feature_map``). LightGBM gets its sparse columns as categorical
features (codes) and the standardised dense columns; deepctr-torch gets the sparse
columns as ``SparseFeat`` (vocabulary = the field's cardinality) and the dense columns
as ``DenseFeat``.

    python -m bench.quality [--workdir DIR] [--reuse DIR] [--parts sim_ctr sim_cvr ...]

Results: ``bench/results/quality.json``, rows of ``BENCHMARKS.md`` and its model-quality
section.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import torch

from adstack.flows import split_days
from artifact import calibration
from artifact.feature_map import Encoded, FeatureMap
from artifact.metrics import auc, auc_interval, evaluate, log_loss
from bench.harness import RESULTS, ROOT, save_rows, write_section
from bench.stream import feast_apply
from training import dataset
from training.dataset import SplitDays, TrainingSet, service_features
from training.labels import labelled_impressions
from training.models import ModelConfig
from training.train import (
    EarlyStopping,
    TrainConfig,
    fit_feature_map,
    predict,
    train_and_evaluate,
)

COMMAND = "python -m bench.quality"
START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 14
SHARED = ROOT.parent / "shared" / "data"
TALKINGDATA = SHARED / "talkingdata_sample"
OPEN_BANDIT = SHARED / "open_bandit"
PARTS = ("sim_ctr", "sim_cvr", "talkingdata", "open_bandit")
THREADS = 2
# Goals from the issue.
GOAL_AUC_GAP = 0.01
GOAL_NE_GAP = 0.03
GOAL_ECE = 0.005
GOAL_SPEEDUP = 3.0


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# ------------------------------------------------------------------ data preparation


@dataclass
class Prepared:
    """Where each data set lives: the layout ``--workdir`` writes and ``--reuse`` reads."""

    root: Path

    @property
    def sim_data(self) -> Path:
        return self.root / "data"

    def sim_set(self, task: str) -> Path:
        return self.root / f"ds_{task}"

    def real_root(self, name: str) -> Path:
        return self.root / name

    def real_set(self, name: str) -> Path:
        return self.root / name / "training_set"


class Services:
    """Spark and Redis, started on first use and stopped at the end."""

    def __init__(self, stack: ExitStack, scratch: Path) -> None:
        self.stack, self.scratch = stack, scratch
        self._spark = None
        self._redis_url: str | None = None

    @property
    def spark(self):
        if self._spark is None:
            from core.spark import spark_job

            self._spark = self.stack.enter_context(spark_job("bench-quality"))
        return self._spark

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            from adstack import redis_server

            directory = self.scratch / "redis"
            server = redis_server.start(directory, redis_server.free_port(), persist=False)
            self.stack.callback(redis_server.stop, directory)
            self._redis_url = server.url
        return self._redis_url


def applied_store(root: Path, data: Path, redis_url: str):
    """A copy of ``feature_repo/`` under ``root``, applied against ``data``; its store."""
    from feast import FeatureStore

    from core.settings import get_settings

    repo = root / "feature_repo"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    for pattern in ("*.py", "*.yaml"):
        for file in (ROOT / "feature_repo").glob(pattern):
            shutil.copy(file, repo / file.name)
    feast_apply(repo, data, redis_url)
    os.environ["ADSTACK_DATA"] = str(data)
    os.environ["REDIS_URL"] = redis_url
    get_settings.cache_clear()
    return FeatureStore(repo_path=str(repo))


def batch_job(services: Services, data: Path) -> dict:
    """The Spark batch job over every window end the log's dates allow."""
    from pipelines import batch_features

    first, last = dataset.log_range(data)
    return batch_features.run(services.spark, data, first.date() + timedelta(days=1), last.date())


def prepare_simulator(prepared: Prepared, services: Services) -> dict:
    from pipelines.simulator import SimulationConfig, write_simulation

    data, timings = prepared.sim_data, {}
    began = time.perf_counter()
    config = SimulationConfig(days=DAYS, start=START)
    write_simulation(config, data / "events", data / "ground_truth")
    timings["simulate"] = time.perf_counter() - began
    began = time.perf_counter()
    first_end = START.date() + timedelta(days=1)
    last_end = START.date() + timedelta(days=DAYS)
    from pipelines import batch_features

    batch_features.run(services.spark, data, first_end, last_end)
    timings["batch_features"] = time.perf_counter() - began
    began = time.perf_counter()
    store = applied_store(prepared.root / "sim_repo", data, services.redis_url)
    timings["feast_apply"] = time.perf_counter() - began
    start, end = START, START + timedelta(days=DAYS)
    for task in ("ctr", "cvr"):
        began = time.perf_counter()
        days = split_days(start, end - dataset.label_window(task))
        built = dataset.build(store, data, task, start, end, None, None, days, days)
        dataset.save(built, prepared.sim_set(task))
        timings[f"build_{task}"] = time.perf_counter() - began
    return timings


def prepare_real(
    prepared: Prepared, services: Services, name: str, path: Path, service_name: str, label: str
) -> dict:
    """Ingest a real log, compute its features, and save a time-split training set whose
    ``click`` column is ``label``."""
    from adstack.flows import ingest

    root, timings = prepared.real_root(name), {}
    data = root / "data"
    began = time.perf_counter()
    report = ingest(name, path, data, root / "reports")
    timings["ingest"] = time.perf_counter() - began
    began = time.perf_counter()
    batch_job(services, data)
    timings["batch_features"] = time.perf_counter() - began
    began = time.perf_counter()
    store = applied_store(root, data, services.redis_url)
    timings["feast_apply"] = time.perf_counter() - began
    began = time.perf_counter()
    first, last = dataset.log_range(data)
    entity_df, labels = labelled_impressions(data, "ctr", first, last, cutoff=last)
    entity_df = dataset.add_request_features(entity_df)
    service = store.get_feature_service(service_name)
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    joined = joined.sort_values(["event_timestamp", "impression_id"], kind="stable")
    joined = joined.reset_index(drop=True)
    joined["event_timestamp"] = joined["event_timestamp"].astype("datetime64[us, UTC]")
    low, high = joined["event_timestamp"].min(), joined["event_timestamp"].max()
    span = high - low
    splits = SplitDays(
        low.to_pydatetime(),
        (low + span * 4 / 6).to_pydatetime(),
        (low + span * 5 / 6).to_pydatetime(),
        (high + pd.Timedelta(microseconds=1)).to_pydatetime(),
    )
    joined["split"] = splits.assign(joined["event_timestamp"])
    if label != "click":
        joined["click"] = joined[label]
    training_set = TrainingSet(
        joined, "ctr", service_name, service_features(service), splits, labels
    )
    dataset.save(training_set, prepared.real_set(name))
    timings["build"] = time.perf_counter() - began
    timings["ingest_report"] = {"rows_in": report.rows_in, "quarantined": report.rows_quarantined}
    return timings


# ------------------------------------------------------------------ shared helpers


@dataclass
class Views:
    """One training set encoded once by its feature map, split by split."""

    training_set: TrainingSet
    feature_map: FeatureMap
    frames: dict[str, pd.DataFrame]
    encoded: dict[str, Encoded]

    @classmethod
    def of(cls, training_set: TrainingSet) -> Views:
        feature_map = fit_feature_map(training_set)
        frames = {s: training_set.part(s) for s in ("train", "calibration", "test")}
        return cls(
            training_set,
            feature_map,
            frames,
            {s: feature_map.transform(f) for s, f in frames.items()},
        )


def load_set(directory: Path, args: argparse.Namespace) -> TrainingSet:
    """A saved training set; ``--train-fraction`` (development only) thins its train split."""
    training_set = dataset.load(directory)
    if args.train_fraction < 1.0:
        frame = training_set.frame
        rng = np.random.default_rng(0)
        keep = (frame["split"] != "train").to_numpy() | (
            rng.random(len(frame)) < args.train_fraction
        )
        training_set = replace(training_set, frame=frame[keep].reset_index(drop=True))
    return training_set


def clicked_only(training_set: TrainingSet) -> TrainingSet:
    """The clicked rows with the conversion as the label: the naive CVR training set."""
    frame = training_set.frame[training_set.frame["click"] == 1].copy()
    frame["click"] = frame["conversion"]
    return replace(training_set, frame=frame.reset_index(drop=True), task="ctr")


def scored(
    y_cal: np.ndarray,
    p_cal: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    advertiser: np.ndarray | None = None,
) -> dict:
    """Calibrate on the calibration split, then test metrics (and the raw ones)."""
    fitted = calibration.fit(p_cal, y_cal)
    calibrated = calibration.apply(fitted, p_test)
    return {
        "test": evaluate(y_test, calibrated, advertiser).as_dict(),
        "test_uncalibrated": evaluate(y_test, p_test, advertiser).as_dict(),
        "calibration_split": evaluate(y_cal, p_cal).as_dict(),
        "calibrator": {k: v for k, v in fitted.items() if k not in ("x", "y")},
    }


def gaps(metrics: dict, ceiling: dict) -> dict:
    return {
        "auc": ceiling["auc"] - metrics["auc"],
        "ne_relative": metrics["normalized_entropy"] / ceiling["normalized_entropy"] - 1,
    }


def ground_truth(data: Path, columns: list[str]) -> pd.DataFrame:
    return (
        pads.dataset(data / "ground_truth", format="parquet")
        .to_table(columns=["impression_id", *columns])
        .to_pandas()
    )


def paired_auc_difference(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, rounds: int = 200, seed: int = 0
) -> dict:
    """AUC(a) - AUC(b) with a 95% bootstrap interval over the same resampled rows."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        if 0 < y[pick].sum() < len(pick):
            values.append(auc(y[pick], a[pick]) - auc(y[pick], b[pick]))
    low, high = np.quantile(values, [0.025, 0.975])
    return {"difference": auc(y, a) - auc(y, b), "ci95": [float(low), float(high)]}


# ------------------------------------------------------------------ our models


def run_ours(training_set: TrainingSet, config: TrainConfig, clicked_eval: bool = False) -> dict:
    """``train_and_evaluate`` plus the calibration-split metrics used for selection."""
    trained = train_and_evaluate(training_set, config)
    part = training_set.part("calibration")
    p = predict(trained.model, trained.feature_map.transform(part))
    if training_set.task == "cvr":
        clicked = part["click"].to_numpy() == 1
        y_cal, p_cal = part["conversion"].to_numpy()[clicked], p["cvr"][clicked]
    else:
        y_cal, p_cal = part["click"].to_numpy(), p["ctr"]
    y_test, p_test = trained.curves["uncalibrated"]
    return {
        "config": config.as_dict(),
        "seconds": trained.seconds,
        "history": trained.history,
        **trained.metrics,
        "calibration_split": evaluate(y_cal, p_cal).as_dict(),
        "calibrator": {k: v for k, v in trained.calibration.items() if k not in ("x", "y")},
        "_test_predictions": (np.asarray(y_test), np.asarray(p_test)),
    }


def dcn_variants(epochs: int) -> dict[str, TrainConfig]:
    """Cheap, principled variants of the default DCN, in the order they are tried: the
    default run overfits the id embeddings after its first epoch (train loss falls,
    calibration loss rises), so first more id dropout and smaller embeddings, then weight
    decay, more MLP dropout and a lower learning rate."""
    base = TrainConfig(epochs=epochs)
    dcn = ModelConfig(kind="dcn")
    return {
        "id_dropout_0.2": replace(base, id_dropout=0.2),
        "emb8": replace(base, model=replace(dcn, embedding_dim=8)),
        "weight_decay_1e-6": replace(base, weight_decay=1e-6),
        "dropout_0.3": replace(base, model=replace(dcn, dropout=0.3)),
        "lr_1e-3": replace(base, learning_rate=1e-3),
    }


def try_variants(
    training_set: TrainingSet, defaults: dict, budget: float, not_done: list[dict]
) -> dict[str, dict]:
    """Train variants until ``budget`` seconds are spent. Each trains at most one epoch
    past the default run's best epoch (early stopping with patience 1 would stop a model
    that behaves alike there)."""
    losses = [h["holdout_loss"] for h in defaults["history"]]
    epochs = int(np.argmin(losses)) + 2
    began, results = time.perf_counter(), {}
    for name, variant in dcn_variants(epochs).items():
        spent = time.perf_counter() - began
        if spent > budget:
            not_done.append(
                {
                    "what": f"DCN variant {name}",
                    "reason": f"variant time budget ({budget:.0f} s) spent",
                }
            )
            continue
        log(f"sim CTR: DCN variant {name} (at most {epochs} epochs)")
        results[name] = run_ours(training_set, variant)
        log(
            f"  {name}: calibration NE "
            f"{results[name]['calibration_split']['normalized_entropy']:.4f}, test "
            f"{summary(results[name]['test'])}"
        )
    return results


# ------------------------------------------------------------------ LightGBM


LGBM_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 63,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "max_bin": 255,
    "num_threads": THREADS,
    "verbose": -1,
    "seed": 0,
}
LGBM_ROUNDS, LGBM_STOP = 500, 30


def lgbm_matrix(encoded: Encoded) -> np.ndarray:
    return np.hstack([encoded.sparse.astype(np.float64), encoded.dense.astype(np.float64)])


def run_lightgbm(views: Views, label: str = "click", params: dict | None = None) -> dict:
    """LightGBM on the feature map's encoding: sparse codes as categorical features,
    early stopping on the calibration split's log loss."""
    import lightgbm as lgb

    params = {**LGBM_PARAMS, **(params or {})}
    began = time.perf_counter()
    sparse_columns = list(range(views.encoded["train"].sparse.shape[1]))
    train = lgb.Dataset(
        lgbm_matrix(views.encoded["train"]),
        views.frames["train"][label].to_numpy(),
        categorical_feature=sparse_columns,
        free_raw_data=True,
    )
    holdout = lgb.Dataset(
        lgbm_matrix(views.encoded["calibration"]),
        views.frames["calibration"][label].to_numpy(),
        reference=train,
    )
    booster = lgb.train(
        params,
        train,
        num_boost_round=LGBM_ROUNDS,
        valid_sets=[holdout],
        callbacks=[lgb.early_stopping(LGBM_STOP, verbose=False)],
    )
    seconds = time.perf_counter() - began
    p = {
        s: booster.predict(lgbm_matrix(views.encoded[s]), num_iteration=booster.best_iteration)
        for s in ("calibration", "test")
    }
    y = {s: views.frames[s][label].to_numpy() for s in ("calibration", "test")}
    result = scored(
        y["calibration"], p["calibration"], y["test"], p["test"],
        views.frames["test"]["advertiser_id"].to_numpy(),
    )  # fmt: skip
    return {
        "config": {
            **params,
            "max_rounds": LGBM_ROUNDS,
            "early_stopping_rounds": LGBM_STOP,
            "best_iteration": booster.best_iteration,
            "inputs": "feature-map encoding: sparse codes categorical, dense standardised",
        },
        "seconds": seconds,
        **result,
        "_test_predictions": (y["test"], p["test"]),
    }


# ------------------------------------------------------------------ deepctr-torch


def deepctr_columns(feature_map: FeatureMap, dim: int) -> list:
    from deepctr_torch.inputs import DenseFeat, SparseFeat

    return [
        SparseFeat(f"s_{f.name}", vocabulary_size=f.cardinality, embedding_dim=dim)
        for f in feature_map.sparse
    ] + [DenseFeat(f"d_{f.name}", 1) for f in feature_map.dense]


def deepctr_inputs(feature_map: FeatureMap, encoded: Encoded) -> dict[str, np.ndarray]:
    x = {f"s_{f.name}": encoded.sparse[:, i] for i, f in enumerate(feature_map.sparse)}
    x.update({f"d_{f.name}": encoded.dense[:, i] for i, f in enumerate(feature_map.dense)})
    return x


class EpochTimer:
    """deepctr-torch callback: the training-loop seconds of each epoch."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._began = 0.0
        self.model = None

    def set_model(self, model) -> None:
        self.model = model

    def set_params(self, params) -> None:
        pass

    def on_train_begin(self, logs=None) -> None:
        pass

    def on_train_end(self, logs=None) -> None:
        pass

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._began)


def fit_deepctr(
    model,
    x_train: dict,
    y_train: np.ndarray,
    holdout_loss: Callable[[], float],
    config: TrainConfig,
) -> tuple[list[dict], list[float]]:
    """Our protocol around deepctr-torch's ``fit``: one epoch per call, the calibration
    split's loss after each, patience as ours, the best epoch's weights kept."""
    timer = EpochTimer()
    stopping, history = EarlyStopping(config.patience), []
    for epoch in range(config.epochs):
        model.fit(
            x_train, y_train, batch_size=config.batch_size, epochs=1, verbose=0,
            shuffle=True, callbacks=[timer],
        )  # fmt: skip
        loss = holdout_loss()
        history.append(
            {
                "epoch": epoch + 1,
                "holdout_loss": loss,
                "seconds": timer.seconds[-1],
                "examples_per_second": len(y_train) / timer.seconds[-1],
            }
        )
        if stopping.stop(model, loss):
            break
    stopping.restore(model)
    return history, timer.seconds


def deepctr_config(config: TrainConfig) -> dict:
    return {
        "embedding_dim": config.model.embedding_dim,
        "cross_num": config.model.cross_layers,
        "cross_parameterization": "matrix",
        "dnn_hidden_units": list(config.model.hidden),
        "dnn_dropout": config.model.dropout,
        "optimizer": f"Adam(lr={config.learning_rate})",
        "batch_size": config.batch_size,
        "max_epochs": config.epochs,
        "patience": config.patience,
        "other": "deepctr-torch defaults (l2 1e-5 on linear, embedding and cross, init_std 1e-4)",
    }


def run_deepctr_dcn(views: Views, config: TrainConfig) -> dict:
    from deepctr_torch.models import DCN

    began = time.perf_counter()
    torch.manual_seed(config.seed)
    columns = deepctr_columns(views.feature_map, config.model.embedding_dim)
    model = DCN(
        columns,
        columns,
        cross_num=config.model.cross_layers,
        cross_parameterization="matrix",
        dnn_hidden_units=config.model.hidden,
        dnn_dropout=config.model.dropout,
        seed=config.seed,
    )
    model.compile(
        torch.optim.Adam(model.parameters(), lr=config.learning_rate), "binary_crossentropy"
    )
    x = {s: deepctr_inputs(views.feature_map, views.encoded[s]) for s in views.encoded}
    y = {s: views.frames[s]["click"].to_numpy(np.float32) for s in views.frames}

    def p_of(split: str) -> np.ndarray:
        return model.predict(x[split], batch_size=65_536).ravel().astype(np.float64)

    history, _ = fit_deepctr(
        model,
        x["train"],
        y["train"],
        lambda: log_loss(y["calibration"], p_of("calibration")),
        config,
    )
    seconds = time.perf_counter() - began
    p_cal, p_test = p_of("calibration"), p_of("test")
    result = scored(
        y["calibration"], p_cal, y["test"], p_test,
        views.frames["test"]["advertiser_id"].to_numpy(),
    )  # fmt: skip
    return {
        "config": deepctr_config(config),
        "seconds": seconds,
        "history": history,
        **result,
        "_test_predictions": (y["test"], p_test),
    }


def run_deepctr_esmm(views: Views, config: TrainConfig) -> dict:
    """deepctr-torch's ESMM on every impression (targets click and click-and-conversion);
    pCVR = pCTCVR / pCTR, calibrated and judged on clicked rows."""
    from deepctr_torch.models import ESMM

    began = time.perf_counter()
    torch.manual_seed(config.seed)
    columns = deepctr_columns(views.feature_map, config.model.embedding_dim)
    model = ESMM(
        columns,
        tower_dnn_hidden_units=config.model.hidden,
        dnn_dropout=config.model.dropout,
        seed=config.seed,
    )
    model.compile(
        torch.optim.Adam(model.parameters(), lr=config.learning_rate),
        ["binary_crossentropy", "binary_crossentropy"],
    )
    x = {s: deepctr_inputs(views.feature_map, views.encoded[s]) for s in views.encoded}
    click = {s: views.frames[s]["click"].to_numpy(np.float32) for s in views.frames}
    ctcvr = {
        s: (views.frames[s]["click"] * views.frames[s]["conversion"]).to_numpy(np.float32)
        for s in views.frames
    }

    def outputs(split: str) -> tuple[np.ndarray, np.ndarray]:
        out = model.predict(x[split], batch_size=65_536).astype(np.float64)
        return out[:, 0], out[:, 1]

    def holdout_loss() -> float:
        p_ctr, p_ctcvr = outputs("calibration")
        return log_loss(click["calibration"], p_ctr) + log_loss(ctcvr["calibration"], p_ctcvr)

    y_train = np.stack([click["train"], ctcvr["train"]], axis=1)
    history, _ = fit_deepctr(model, x["train"], y_train, holdout_loss, config)
    seconds = time.perf_counter() - began

    def clicked_cvr(split: str) -> tuple[np.ndarray, np.ndarray]:
        p_ctr, p_ctcvr = outputs(split)
        clicked = click[split] == 1
        p = np.clip(p_ctcvr[clicked] / np.maximum(p_ctr[clicked], 1e-7), 1e-7, 1 - 1e-7)
        return views.frames[split]["conversion"].to_numpy()[clicked], p

    (y_cal, p_cal), (y_test, p_test) = clicked_cvr("calibration"), clicked_cvr("test")
    result = scored(y_cal, p_cal, y_test, p_test)
    cfg = deepctr_config(config)
    cfg.pop("cross_num"), cfg.pop("cross_parameterization")
    cfg["tower_dnn_hidden_units"] = cfg.pop("dnn_hidden_units")
    return {
        "config": cfg,
        "seconds": seconds,
        "history": history,
        **result,
        "_test_predictions": (y_test, p_test),
    }


# ------------------------------------------------------------------ measurements


def public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def simulator_ctr(prepared: Prepared, args: argparse.Namespace, not_done: list[dict]) -> dict:
    training_set = load_set(prepared.sim_set("ctr"), args)
    config = TrainConfig(epochs=args.epochs)
    views = Views.of(training_set)
    test = views.frames["test"].merge(
        ground_truth(prepared.sim_data, ["p_click"]), on="impression_id", how="left"
    )
    ceiling = evaluate(test["click"].to_numpy(), test["p_click"].to_numpy()).as_dict()
    models: dict[str, dict] = {}
    runs: list[tuple[str, Callable[[], dict]]] = [
        ("ours_lr", lambda: run_ours(training_set, replace(config, model=ModelConfig(kind="lr")))),
        ("ours_dcn", lambda: run_ours(training_set, config)),
        ("lightgbm", lambda: run_lightgbm(views)),
        ("deepctr_dcn", lambda: run_deepctr_dcn(views, config)),
    ]
    for name, run in runs:
        log(f"sim CTR: {name}")
        models[name] = run()
        log(f"  {name}: {summary(models[name]['test'])} ({models[name]['seconds']:.0f} s)")
    variants = {"defaults": models["ours_dcn"]}
    if args.variant_budget > 0:
        variants |= try_variants(training_set, models["ours_dcn"], args.variant_budget, not_done)
    selected = min(variants, key=lambda n: variants[n]["calibration_split"]["normalized_entropy"])
    models["ours_dcn_selected"] = {**variants[selected], "variant": selected}
    for result in models.values():
        result["gap_to_ceiling"] = gaps(result["test"], ceiling)
    return {
        "training_set": training_set.summary(),
        "ceiling": ceiling,
        "models": {n: public(r) for n, r in models.items()},
        "variants": {
            n: {
                "config": r["config"],
                "calibration_split": r["calibration_split"],
                "test": r["test"],
                "epochs_run": len(r["history"]),
            }
            for n, r in variants.items()
        },
        "selected_variant": selected,
        "selection_rule": "lowest normalised entropy of the raw model on the calibration split",
        "goals": ctr_goals(models, ceiling),
        "throughput": throughput(models["ours_dcn"], models["deepctr_dcn"], views),
    }


def ctr_goals(models: dict, ceiling: dict) -> dict:
    goals = {}
    for name in ("ours_dcn", "ours_dcn_selected"):
        m = models[name]["test"]
        gap = gaps(m, ceiling)
        goals[name] = {
            "auc_within_0.01_of_ceiling": gap["auc"] <= GOAL_AUC_GAP,
            "ne_within_3pct_of_ceiling": bool(gap["ne_relative"] <= GOAL_NE_GAP),
            "ece_at_most_0.005": m["ece"] <= GOAL_ECE,
            "quantile_ece_at_most_0.005": m["ece_quantile"] <= GOAL_ECE,
            "auc_above_lightgbm": m["auc"] > models["lightgbm"]["test"]["auc"],
            "auc_above_deepctr_dcn": m["auc"] > models["deepctr_dcn"]["test"]["auc"],
        }
    return goals


def throughput(ours: dict, theirs: dict, views: Views) -> dict:
    rows = len(views.frames["train"])
    ours_rates = [h["examples_per_second"] for h in ours["history"]]
    theirs_seconds = [h["seconds"] for h in theirs["history"]]
    ours_eps, theirs_eps = median(ours_rates), rows / median(theirs_seconds)
    return {
        "rows": rows,
        "threads": torch.get_num_threads(),
        "batch_size": ours["config"]["batch_size"],
        "method": "training-loop seconds of every epoch of the default runs (ours: "
        "fit_model's epoch timer; deepctr: callback from epoch begin to end)",
        "ours_epoch_seconds": [rows / r for r in ours_rates],
        "deepctr_epoch_seconds": theirs_seconds,
        "ours_examples_per_second": ours_eps,
        "deepctr_examples_per_second": theirs_eps,
        "ratio": ours_eps / theirs_eps,
        "goal_3x_met": ours_eps / theirs_eps >= GOAL_SPEEDUP,
    }


def simulator_cvr(prepared: Prepared, args: argparse.Namespace) -> dict:
    training_set = load_set(prepared.sim_set("cvr"), args)
    config = TrainConfig(epochs=args.epochs)
    views = Views.of(training_set)
    test = views.frames["test"].merge(
        ground_truth(prepared.sim_data, ["p_conversion_given_click"]),
        on="impression_id",
        how="left",
    )
    test = test[test["click"] == 1]
    ceiling = evaluate(
        test["conversion"].to_numpy(), test["p_conversion_given_click"].to_numpy()
    ).as_dict()
    naive = clicked_only(training_set)
    naive_views = Views.of(naive)
    runs: list[tuple[str, Callable[[], dict]]] = [
        ("ours_esmm", lambda: run_ours(training_set, replace(config, model=ModelConfig("esmm")))),
        ("deepctr_esmm", lambda: run_deepctr_esmm(views, config)),
        ("ours_dcn_clicked_only", lambda: run_ours(naive, config)),
        ("lightgbm_clicked_only", lambda: run_lightgbm(naive_views)),
    ]
    models = {}
    for name, run in runs:
        log(f"sim CVR: {name}")
        models[name] = run()
        models[name]["gap_to_ceiling"] = gaps(models[name]["test"], ceiling)
        log(f"  {name}: {summary(models[name]['test'])} ({models[name]['seconds']:.0f} s)")
    return {
        "training_set": training_set.summary(),
        "judged_on": "clicked test rows, label = conversion",
        "ceiling": ceiling,
        "models": {n: public(r) for n, r in models.items()},
    }


def real_log(prepared: Prepared, name: str, label: str, args: argparse.Namespace) -> dict:
    training_set = load_set(prepared.real_set(name), args)
    config = TrainConfig(epochs=args.epochs)
    views = Views.of(training_set)
    models = {}
    for model, run in (
        ("ours_lr", lambda: run_ours(training_set, replace(config, model=ModelConfig("lr")))),
        ("ours_dcn", lambda: run_ours(training_set, config)),
        ("lightgbm", lambda: run_lightgbm(views)),
    ):
        log(f"{name}: {model}")
        models[model] = run()
        y, p = models[model]["_test_predictions"]
        low, high = auc_interval(y, p)
        models[model]["test_auc_ci95"] = [low, high]
        log(f"  {model}: AUC {models[model]['test']['auc']:.4f} [{low:.4f}, {high:.4f}]")
    y, ours = models["ours_dcn"]["_test_predictions"]
    _, lgbm = models["lightgbm"]["_test_predictions"]
    ours_ci, lgbm_ci = models["ours_dcn"]["test_auc_ci95"], models["lightgbm"]["test_auc_ci95"]
    return {
        "label": label,
        "training_set": training_set.summary(),
        "split": "by timestamp: first 4/6 of the span train, next 1/6 calibration, last 1/6 test",
        "models": {n: public(r) for n, r in models.items()},
        "ours_minus_lightgbm_auc": paired_auc_difference(y, ours, lgbm),
        "cis_overlap": ours_ci[0] <= lgbm_ci[1] and lgbm_ci[0] <= ours_ci[1],
        # On raw scores, like the intervals (isotonic calibration adds ties).
        "goal_auc_at_least_lightgbm": models["ours_dcn"]["test_uncalibrated"]["auc"]
        >= models["lightgbm"]["test_uncalibrated"]["auc"],
    }


def summary(m: dict) -> str:
    return (
        f"AUC {m['auc']:.4f}, NE {m['normalized_entropy']:.4f}, ECE {m['ece']:.4f}, "
        f"qECE {m['ece_quantile']:.4f}"
    )


# ------------------------------------------------------------------ report


MODEL_LABELS = {
    "ours_lr": "ours LR",
    "ours_dcn": "ours DCN-v2 (defaults)",
    "ours_dcn_selected": "ours DCN-v2 (selected on calibration: {variant})",
    "lightgbm": "LightGBM",
    "deepctr_dcn": "deepctr-torch DCN (matrix)",
    "ours_esmm": "ours ESMM",
    "deepctr_esmm": "deepctr-torch ESMM",
    "ours_dcn_clicked_only": "ours DCN-v2 on clicked rows only (naive)",
    "lightgbm_clicked_only": "LightGBM on clicked rows only",
}


def quality_table(section: dict, title: str) -> list[str]:
    lines = [
        f"**{title}** ({section['ceiling']['rows']:,} test rows, "
        f"{section['ceiling']['positives']:,} positives; "
        "metrics after calibration)",
        "",
        "| model | AUC | NE | ECE | quantile ECE | AUC gap to ceiling | NE gap to ceiling "
        "| train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in section["models"].items():
        m, g = result["test"], result["gap_to_ceiling"]
        label = MODEL_LABELS[name].format(variant=result.get("variant", ""))
        lines.append(
            f"| {label} | {m['auc']:.4f} | {m['normalized_entropy']:.4f} | {m['ece']:.4f} | "
            f"{m['ece_quantile']:.4f} | {g['auc']:+.4f} | {100 * g['ne_relative']:+.1f}% | "
            f"{result['seconds']:.0f} |"
        )
    c = section["ceiling"]
    lines.append(
        f"| ceiling (true probability) | {c['auc']:.4f} | {c['normalized_entropy']:.4f} | "
        f"{c['ece']:.4f} | {c['ece_quantile']:.4f} | 0 | 0 | - |"
    )
    return lines


def real_table(section: dict, title: str) -> list[str]:
    test = section["training_set"]["rows_by_split"].get("test", {})
    lines = [
        f"**{title}** ({test.get('rows', 0):,} test rows, {test.get('clicks', 0):,} positives; "
        "AUC of raw scores with 95% bootstrap interval; NE and ECE after calibration)",
        "",
        "| model | AUC | 95% CI | NE | ECE | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in section["models"].items():
        m, (low, high) = result["test"], result["test_auc_ci95"]
        lines.append(
            f"| {MODEL_LABELS[name].format(variant='')} | "
            f"{result['test_uncalibrated']['auc']:.4f} | "
            f"[{low:.4f}, {high:.4f}] | {m['normalized_entropy']:.4f} | {m['ece']:.4f} | "
            f"{result['seconds']:.0f} |"
        )
    d = section["ours_minus_lightgbm_auc"]
    lines += [
        "",
        f"Ours minus LightGBM: {d['difference']:+.4f} (paired bootstrap 95% CI "
        f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]).",
    ]
    return lines


def quality_section(figures: dict, command: str, date: str) -> list[str]:
    lines = ["## Model quality", "", f"`{command}`, {date}.", ""]
    titles = {
        "sim_ctr": ("Simulator CTR, test days", quality_table),
        "sim_cvr": ("Simulator CVR (pCVR on clicked test rows)", quality_table),
        "talkingdata": ("TalkingData, label = install", real_table),
        "open_bandit": ("Open Bandit, label = click", real_table),
    }
    for key, (title, table) in titles.items():
        if key in figures:
            earlier = figures[key].get("recorded_by")
            if earlier:
                title += f" (from `{earlier['command']}`, {earlier['date']})"
            lines += [*table(figures[key], title), ""]
    for item in figures.get("not_done", []):
        lines.append(f"- Not done: {item['what']}: {item['reason']}")
    return lines


def rows(figures: dict) -> dict[str, tuple[str, str, str]]:
    out = {}
    if "sim_ctr" in figures:
        s = figures["sim_ctr"]
        ours, sel = s["models"]["ours_dcn"], s["models"]["ours_dcn_selected"]
        lgbm, dctr, c = s["models"]["lightgbm"], s["models"]["deepctr_dcn"], s["ceiling"]
        met = s["goals"]["ours_dcn"]
        out["quality_sim_ctr"] = (
            f"ours DCN-v2 AUC {ours['test']['auc']:.4f}, "
            f"NE {ours['test']['normalized_entropy']:.4f}, "
            f"ECE {ours['test']['ece']:.4f} (quantile {ours['test']['ece_quantile']:.4f}); "
            f"gap to ceiling AUC {ours['gap_to_ceiling']['auc']:+.4f}, NE "
            f"{100 * ours['gap_to_ceiling']['ne_relative']:+.1f}% (goals 0.01 / 3%: "
            f"{'met' if met['auc_within_0.01_of_ceiling'] else 'missed'} / "
            f"{'met' if met['ne_within_3pct_of_ceiling'] else 'missed'}); selected variant "
            f"`{s['selected_variant']}` AUC {sel['test']['auc']:.4f}; ceiling AUC {c['auc']:.4f}, "
            f"NE {c['normalized_entropy']:.4f}",
            f"LightGBM AUC {lgbm['test']['auc']:.4f}, NE {lgbm['test']['normalized_entropy']:.4f}; "
            f"deepctr-torch DCN AUC {dctr['test']['auc']:.4f}, NE "
            f"{dctr['test']['normalized_entropy']:.4f}",
            f"AUC vs LightGBM {ours['test']['auc'] - lgbm['test']['auc']:+.4f}, vs deepctr "
            f"{ours['test']['auc'] - dctr['test']['auc']:+.4f}",
        )
        t = s["throughput"]
        out["train_throughput"] = (
            f"ours DCN-v2 {t['ours_examples_per_second'] / 1e3:.0f}k examples/s (median epoch "
            f"of {len(t['ours_epoch_seconds'])}, {t['rows']:,} rows, batch {t['batch_size']}, "
            f"{t['threads']} threads; goal 3x)",
            f"deepctr-torch DCN {t['deepctr_examples_per_second'] / 1e3:.1f}k examples/s "
            f"(median epoch of {len(t['deepctr_epoch_seconds'])})",
            f"{t['ratio']:.1f}x median epochs "
            f"({'met' if t['goal_3x_met'] else 'missed'}); fastest epochs "
            f"{min(t['deepctr_epoch_seconds']) / min(t['ours_epoch_seconds']):.1f}x",
        )
    if "sim_cvr" in figures:
        s = figures["sim_cvr"]
        ours, c = s["models"]["ours_esmm"], s["ceiling"]
        others = {
            "deepctr_esmm": "deepctr-torch ESMM",
            "ours_dcn_clicked_only": "naive DCN on clicks",
            "lightgbm_clicked_only": "LightGBM on clicks",
        }
        out["quality_sim_cvr"] = (
            f"ours ESMM pCVR AUC {ours['test']['auc']:.4f}, NE "
            f"{ours['test']['normalized_entropy']:.4f}, ECE {ours['test']['ece']:.4f}; gap to "
            f"ceiling AUC {ours['gap_to_ceiling']['auc']:+.4f}, NE "
            f"{100 * ours['gap_to_ceiling']['ne_relative']:+.1f}%; ceiling AUC {c['auc']:.4f}",
            "; ".join(
                f"{label} AUC {s['models'][k]['test']['auc']:.4f}, NE "
                f"{s['models'][k]['test']['normalized_entropy']:.4f}"
                for k, label in others.items()
            ),
            ", ".join(
                f"vs {label} {ours['test']['auc'] - s['models'][k]['test']['auc']:+.4f} AUC"
                for k, label in others.items()
            ),
        )
    for key, name in (("talkingdata", "TalkingData installs"), ("open_bandit", "Open Bandit")):
        if key not in figures:
            continue
        s = figures[key]
        o, lg, d = s["models"]["ours_dcn"], s["models"]["lightgbm"], s["ours_minus_lightgbm_auc"]
        test = s["training_set"]["rows_by_split"]["test"]
        out[f"quality_{key}"] = (
            f"{name}: ours DCN-v2 AUC {o['test_uncalibrated']['auc']:.4f} "
            f"[{o['test_auc_ci95'][0]:.4f}, "
            f"{o['test_auc_ci95'][1]:.4f}] ({test['rows']:,} test rows, {test['clicks']} "
            "positives, bootstrap 95% CI)",
            f"LightGBM AUC {lg['test_uncalibrated']['auc']:.4f} [{lg['test_auc_ci95'][0]:.4f}, "
            f"{lg['test_auc_ci95'][1]:.4f}]",
            f"{d['difference']:+.4f} AUC, paired 95% CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            f"; CIs overlap: {s['cis_overlap']}",
        )
    return out


# The part of the run each table row comes from.
ROW_PARTS = {
    "quality_sim_ctr": "sim_ctr",
    "train_throughput": "sim_ctr",
    "quality_sim_cvr": "sim_cvr",
    "quality_talkingdata": "talkingdata",
    "quality_open_bandit": "open_bandit",
}


def keep_earlier_parts(figures: dict, parts: list[str]) -> list[str]:
    """Carry over, from the last recorded run, the parts this run did not measure; each
    keeps the command, date and commit that produced it. Returns the parts carried."""
    path = RESULTS / "quality.json"
    if not path.exists():
        return []
    previous = json.loads(path.read_text())
    carried = []
    for part in PARTS:
        if part not in parts and part in previous:
            origin = {k: previous[k] for k in ("command", "date", "commit")}
            figures[part] = previous[part] | {
                "recorded_by": previous[part].get("recorded_by", origin)
            }
            carried.append(part)
    return carried


def record(figures: dict, command: str) -> Path:
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    write_section("quality", quality_section(figures, command, date))
    cells = {}
    for name, (result, baseline, ratio) in rows(figures).items():
        earlier = figures.get(ROW_PARTS[name], {}).get("recorded_by", {})
        by, on = earlier.get("command", command), earlier.get("date", date)
        cells[name] = (result, baseline, ratio, by, on)
    return save_rows("quality", {"command": command, **figures}, cells, command=command)


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--workdir", type=Path, help="prepare data here and keep it")
    parser.add_argument(
        "--reuse", type=Path, help="a --workdir of an earlier run: data/, ds_ctr/, ds_cvr/, ..."
    )
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    parser.add_argument(
        "--variant-budget",
        type=float,
        default=420.0,
        help="seconds for DCN hyper-parameter variants (0: none); later variants are skipped",
    )
    parser.add_argument(
        "--train-fraction", type=float, default=1.0, help="development only: thin train splits"
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument(
        "--record-only", type=Path, help="write the report from a saved figures file"
    )
    return parser.parse_args(argv)


REAL = {
    "talkingdata": ("talkingdata", TALKINGDATA, "cvr_v1", "conversion"),
    "open_bandit": ("open_bandit", OPEN_BANDIT, "ctr_v1", "click"),
}


def prepare(
    args: argparse.Namespace, prepared: Prepared, services: Services, not_done: list[dict]
) -> dict:
    """Whatever the chosen parts need and ``--reuse`` does not already hold."""
    timings: dict = {}
    if {"sim_ctr", "sim_cvr"} & set(args.parts) and not prepared.sim_set("cvr").exists():
        log("preparing the simulator data")
        timings["simulator"] = prepare_simulator(prepared, services)
    for part, (source, path, service, label) in REAL.items():
        if part in args.parts and path.exists() and not prepared.real_set(part).exists():
            log(f"preparing {part}")
            try:
                timings[part] = prepare_real(prepared, services, source, path, service, label)
            except Exception as error:  # the other parts still run
                not_done.append({"what": f"{part} preparation", "reason": repr(error)[:500]})
                log(f"preparing {part} failed: {error!r}"[:500])
    return timings


def run(args: argparse.Namespace, prepared: Prepared, services: Services) -> dict:
    figures: dict = {"parameters": {k: str(v) for k, v in vars(args).items()}, "not_done": []}
    began = time.perf_counter()
    figures["prepare_seconds"] = prepare(args, prepared, services, figures["not_done"])
    figures["prepare_seconds"]["total"] = time.perf_counter() - began
    sections = {
        "sim_ctr": lambda: simulator_ctr(prepared, args, figures["not_done"]),
        "sim_cvr": lambda: simulator_cvr(prepared, args),
        "talkingdata": lambda: real_log(prepared, "talkingdata", "install", args),
        "open_bandit": lambda: real_log(prepared, "open_bandit", "click", args),
    }
    for part in args.parts:
        if part in REAL and not prepared.real_set(part).exists():
            reason = f"{REAL[part][1]} is absent" if not REAL[part][1].exists() else "see above"
            figures["not_done"].append({"what": part, "reason": reason})
            log(f"skipping {part}: {reason}")
            continue
        began = time.perf_counter()
        try:
            figures[part] = sections[part]()
        except Exception as error:  # one failed part must not lose the others
            figures["not_done"].append({"what": part, "reason": f"{type(error).__name__}: {error}"})
            log(f"{part} failed: {error!r}")
            continue
        figures[part]["seconds"] = time.perf_counter() - began
    return figures


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    if args.record_only:
        saved = json.loads(args.record_only.read_text())
        recorded = saved["command"].replace(" --no-record", "")
        print(f"wrote {record(saved['figures'], recorded)}")
        return
    torch.set_num_threads(THREADS)
    began = time.perf_counter()
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-quality-")))
        root = args.reuse or args.workdir or scratch / "work"
        root.mkdir(parents=True, exist_ok=True)
        services = Services(stack, scratch)
        figures = run(args, Prepared(root), services)
    figures["total_seconds"] = time.perf_counter() - began
    # Kept before the report is written, so a report bug costs no re-run (--record-only).
    raw = Path(tempfile.gettempdir()) / "bench-quality-figures.json"
    raw.write_text(json.dumps({"command": command, "figures": figures}, default=float))
    print(f"figures saved to {raw}")
    if not args.no_record:
        carried = keep_earlier_parts(figures, args.parts)
        if carried:
            print(f"parts kept from the last recorded run: {', '.join(carried)}")
        print(f"wrote {record(figures, command)}")
    short = {k: v for k, v in figures.items() if k in ("not_done", "prepare_seconds")}
    print(json.dumps(short, indent=1, default=float))


if __name__ == "__main__":
    main()
