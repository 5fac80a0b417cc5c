"""The peers: LightGBM and deepctr-torch (DCN, ESMM) on the same encoded inputs."""

from __future__ import annotations

import time

import numpy as np
import torch

from artifact.feature_map import HASH, Encoded, FeatureMap
from artifact.metrics import log_loss
from bench.quality.plan import THREADS
from bench.quality.prepare import Views
from bench.quality.scoring import scored
from training.train import EarlyStopping, TrainConfig, effective_batch_size

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

# deepctr-torch's L2 terms, all off. Its defaults put 1e-5 on the linear part, the
# embeddings and the cross kernels, summed over whole tables each step; our loop has no
# L2 (``TrainConfig.weight_decay`` is 0), so both sides are regularised alike only
# without them. Dropout, id dropout and early stopping follow the ``TrainConfig``.
NO_L2 = {"l2_reg_linear": 0.0, "l2_reg_embedding": 0.0, "l2_reg_dnn": 0.0}


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


class TorchRandomStream:
    """torch's global generator as a stream of its own: inside ``with``, draws continue
    this stream; outside, whoever drew before continues theirs. deepctr-torch shuffles,
    drops out and seeds every DataLoader (even predict's) with the global generator, so
    with this its epochs can alternate with ours while each side draws exactly what it
    would draw alone."""

    def __init__(self, seed: int) -> None:
        outer = torch.get_rng_state()
        torch.manual_seed(seed)
        self.state = torch.get_rng_state()
        torch.set_rng_state(outer)
        self._outer = outer

    def __enter__(self) -> None:
        self._outer = torch.get_rng_state()
        torch.set_rng_state(self.state)

    def __exit__(self, *exc: object) -> None:
        self.state = torch.get_rng_state()
        torch.set_rng_state(self._outer)


class DeepctrRun:
    """A deepctr-torch model trained one epoch per :meth:`epoch` call under our protocol:
    the calibration split's loss after each epoch, patience as ours, the best epoch's
    weights kept (:meth:`finish`). Regularised like ours: no L2, the MLP dropout of the
    config, and each epoch a fresh ``id_dropout`` share of the hashed ids of the train
    split set to their out-of-vocabulary row (our loop draws the same share per batch).
    Batches are our loop's effective batch size. ``seconds`` adds up the time spent in
    this object (building, epochs, holdout losses, predictions). A model kind defines
    ``losses``, ``build``, ``targets``, ``holdout_loss`` and ``result``."""

    losses: str | list[str] = "binary_crossentropy"

    def __init__(self, views: Views, config: TrainConfig) -> None:
        began = time.perf_counter()
        self.views, self.config = views, config
        self.x = {s: deepctr_inputs(views.feature_map, views.encoded[s]) for s in views.encoded}
        self.y_train = self.targets("train")
        self.batch_size = effective_batch_size(config.batch_size, len(self.y_train))
        self.hashed = [f"s_{f.name}" for f in views.feature_map.sparse if f.kind == HASH]
        self.id_draws = np.random.default_rng(config.seed)
        self.stream = TorchRandomStream(config.seed)
        with self.stream:
            self.model = self.build(deepctr_columns(views.feature_map, config.model.embedding_dim))
        # deepctr-torch's loss is a sum over the batch, ours a mean: Adam's coupled decay
        # scaled by the batch gives the same update.
        optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay * self.batch_size,
        )
        self.model.compile(optimizer, self.losses)
        self.timer = EpochTimer()
        self.stopping, self.history = EarlyStopping(config.patience), []
        self.stopped = False
        self.seconds = time.perf_counter() - began

    def build(self, columns: list):
        raise NotImplementedError

    def targets(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def holdout_loss(self) -> float:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.stopped or len(self.history) >= self.config.epochs

    def train_inputs(self) -> dict[str, np.ndarray]:
        if self.config.id_dropout <= 0:
            return self.x["train"]
        x = dict(self.x["train"])
        for name in self.hashed:
            dropped = self.id_draws.random(len(x[name])) < self.config.id_dropout
            x[name] = np.where(dropped, 0, x[name])
        return x

    def epoch(self) -> dict:
        began = time.perf_counter()
        x = self.train_inputs()
        with self.stream:
            self.model.fit(
                x, self.y_train, batch_size=self.batch_size, epochs=1, verbose=0,
                shuffle=True, callbacks=[self.timer],
            )  # fmt: skip
        loss = self.holdout_loss()
        seconds = self.timer.seconds[-1]
        self.history.append(
            {
                "epoch": len(self.history) + 1,
                "holdout_loss": loss,
                "seconds": seconds,
                "examples_per_second": len(self.y_train) / seconds,
            }
        )
        self.stopped = self.stopping.stop(self.model, loss)
        self.seconds += time.perf_counter() - began
        return self.history[-1]

    def finish(self) -> None:
        while not self.done:
            self.epoch()
        self.stopping.restore(self.model)

    def outputs(self, split: str) -> np.ndarray:
        # predict's DataLoader draws a seed from the global generator too.
        with self.stream:
            out = self.model.predict(self.x[split], batch_size=65_536)
        return out.astype(np.float64)


def deepctr_config(config: TrainConfig, batch_size: int) -> dict:
    return {
        "embedding_dim": config.model.embedding_dim,
        "cross_num": config.model.cross_layers,
        "cross_parameterization": "matrix",
        "dnn_hidden_units": list(config.model.hidden),
        "dnn_dropout": config.model.dropout,
        "optimizer": f"Adam(lr={config.learning_rate}, "
        f"weight_decay={config.weight_decay} x batch on its summed loss)",
        "batch_size": batch_size,
        "max_epochs": config.epochs,
        "patience": config.patience,
        "l2_reg": "0 on linear, embedding, cross and DNN (library default: 1e-5 on the "
        "first three)",
        "id_dropout": config.id_dropout,
        "other": "deepctr-torch defaults otherwise (init_std 1e-4, a linear logit over the "
        "same columns)",
    }


class DeepctrDCN(DeepctrRun):
    """deepctr-torch's DCN with matrix cross layers (DCN-v2), our architecture's sizes."""

    def build(self, columns: list):
        from deepctr_torch.models import DCN

        return DCN(
            columns,
            columns,
            cross_num=self.config.model.cross_layers,
            cross_parameterization="matrix",
            dnn_hidden_units=self.config.model.hidden,
            dnn_dropout=self.config.model.dropout,
            l2_reg_cross=0.0,
            **NO_L2,
            seed=self.config.seed,
        )

    def targets(self, split: str) -> np.ndarray:
        return self.views.frames[split]["click"].to_numpy(np.float32)

    def holdout_loss(self) -> float:
        return log_loss(self.targets("calibration"), self.outputs("calibration").ravel())

    def result(self) -> dict:
        self.finish()
        began = time.perf_counter()
        p_cal, p_test = (self.outputs(s).ravel() for s in ("calibration", "test"))
        y_cal, y_test = self.targets("calibration"), self.targets("test")
        result = scored(
            y_cal, p_cal, y_test, p_test, self.views.frames["test"]["advertiser_id"].to_numpy()
        )
        self.seconds += time.perf_counter() - began
        return {
            "config": deepctr_config(self.config, self.batch_size),
            "seconds": self.seconds,
            "history": self.history,
            **result,
            "_test_predictions": (y_test, p_test),
        }


class DeepctrESMM(DeepctrRun):
    """deepctr-torch's ESMM on every impression (targets click and click-and-conversion);
    pCVR = pCTCVR / pCTR, calibrated and judged on clicked rows."""

    losses = ["binary_crossentropy", "binary_crossentropy"]

    def build(self, columns: list):
        from deepctr_torch.models import ESMM

        return ESMM(
            columns,
            tower_dnn_hidden_units=self.config.model.hidden,
            dnn_dropout=self.config.model.dropout,
            **NO_L2,
            seed=self.config.seed,
        )

    def targets(self, split: str) -> np.ndarray:
        frame = self.views.frames[split]
        return np.stack(
            [frame["click"].to_numpy(np.float32),
             (frame["click"] * frame["conversion"]).to_numpy(np.float32)],
            axis=1,
        )  # fmt: skip

    def holdout_loss(self) -> float:
        y, p = self.targets("calibration"), self.outputs("calibration")
        return log_loss(y[:, 0], p[:, 0]) + log_loss(y[:, 1], p[:, 1])

    def clicked_cvr(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        out = self.outputs(split)
        clicked = self.views.frames[split]["click"].to_numpy() == 1
        p = np.clip(out[clicked, 1] / np.maximum(out[clicked, 0], 1e-7), 1e-7, 1 - 1e-7)
        return self.views.frames[split]["conversion"].to_numpy()[clicked], p

    def result(self) -> dict:
        self.finish()
        began = time.perf_counter()
        (y_cal, p_cal), (y_test, p_test) = self.clicked_cvr("calibration"), self.clicked_cvr("test")
        result = scored(y_cal, p_cal, y_test, p_test)
        self.seconds += time.perf_counter() - began
        config = deepctr_config(self.config, self.batch_size)
        config.pop("cross_num"), config.pop("cross_parameterization")
        config["tower_dnn_hidden_units"] = config.pop("dnn_hidden_units")
        return {
            "config": config,
            "seconds": self.seconds,
            "history": self.history,
            **result,
            "_test_predictions": (y_test, p_test),
        }


def run_deepctr_dcn(views: Views, config: TrainConfig) -> dict:
    return DeepctrDCN(views, config).result()


def run_deepctr_esmm(views: Views, config: TrainConfig) -> dict:
    return DeepctrESMM(views, config).result()
