"""The peers: LightGBM and deepctr-torch (DCN, ESMM) on the same encoded inputs."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from artifact.feature_map import Encoded, FeatureMap
from artifact.metrics import log_loss
from bench.quality.plan import THREADS
from bench.quality.prepare import Views
from bench.quality.scoring import scored
from training.train import EarlyStopping, TrainConfig

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


# deepctr-torch


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
