"""Our models: one training run with its calibration-split metrics, and the DCN variants
chosen among on the calibration split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from artifact.metrics import evaluate
from bench.quality.plan import log
from bench.quality.scoring import summary
from training.dataset import TrainingSet
from training.models import ModelConfig
from training.train import TrainConfig, predict, train_and_evaluate


def run_ours(
    training_set: TrainingSet,
    config: TrainConfig,
    clicked_eval: bool = False,
    after_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """``train_and_evaluate`` plus the calibration-split metrics used for selection;
    ``after_epoch`` as in ``training.train.fit_model``."""
    trained = train_and_evaluate(training_set, config, after_epoch=after_epoch)
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
