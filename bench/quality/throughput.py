"""Training throughput: our DCN and deepctr-torch's DCN, trained in alternation.

Both default runs of the simulator CTR part train in this one process, an epoch each in
turn: ours, deepctr, ours, deepctr, ... Our ``fit_model`` calls back after each of its
epochs, outside its own timer, and the callback trains deepctr-torch's next epoch, so a
burst of load on the shared machine falls on both sides alike rather than on whichever
happened to be running. Each side draws from its own torch random stream, so each trains
exactly as it would alone. A side that stops early (early stopping) leaves the other to
finish alone; only the epochs that ran in alternation, pair by pair, enter the figures.

Timers: ours is ``fit_model``'s epoch timer (the batch loop, id dropout included);
deepctr's is a callback from epoch begin to epoch end inside its ``fit`` (its per-call
input concatenation and our per-epoch id-dropout draw for it are outside). Holdout
losses are outside both.
"""

from __future__ import annotations

import time
from statistics import median

import torch

from bench.quality.ours import run_ours
from bench.quality.peers import DeepctrDCN
from bench.quality.plan import GOAL_SPEEDUP, log
from bench.quality.prepare import Views
from training.dataset import TrainingSet
from training.train import TrainConfig


def regularisation(config: TrainConfig) -> dict:
    """What regularises each side of the comparison: the same on both."""
    return {
        "weight_decay": config.weight_decay,
        "deepctr_l2_reg": 0.0,
        "mlp_dropout": config.model.dropout,
        "id_dropout": config.id_dropout,
        "early_stopping_patience": config.patience,
        "how": "ours: Adam weight_decay, MLP dropout, hashed ids to the out-of-vocabulary "
        "row per batch, early stopping on the calibration split's log loss keeping the best "
        "epoch; deepctr-torch: l2_reg_linear/embedding/cross/dnn 0 (its defaults put 1e-5 "
        "on the first three), Adam weight_decay x batch (its loss is a sum), the same "
        "dnn_dropout, the same id share dropped per epoch, the same early stopping",
    }


def interleaved_dcn(
    training_set: TrainingSet, views: Views, config: TrainConfig
) -> tuple[dict, dict, dict]:
    """Our DCN, deepctr-torch's DCN and the throughput of both, from one alternating run."""
    rows = len(views.frames["train"])
    theirs = DeepctrDCN(views, config)
    pairs: list[tuple[float, float]] = []
    theirs_inside_ours = 0.0

    def their_epoch(ours_epoch: dict) -> None:
        nonlocal theirs_inside_ours
        if theirs.done:
            return
        began = time.perf_counter()
        record = theirs.epoch()
        theirs_inside_ours += time.perf_counter() - began
        pairs.append((rows / ours_epoch["examples_per_second"], record["seconds"]))
        log(
            f"  epoch {ours_epoch['epoch']}: ours {pairs[-1][0]:.1f} s, deepctr "
            f"{pairs[-1][1]:.1f} s"
        )

    ours = run_ours(training_set, config, after_epoch=their_epoch)
    # train_and_evaluate's clock ran through deepctr's epochs too.
    ours["seconds"] -= theirs_inside_ours
    result = theirs.result()
    return ours, result, throughput(pairs, rows, ours["history"][0]["batch_size"], config)


def throughput(
    pairs: list[tuple[float, float]], rows: int, batch_size: int, config: TrainConfig
) -> dict:
    ours = [o for o, _ in pairs]
    theirs = [t for _, t in pairs]
    ratios = [t / o for o, t in pairs]
    ratio, fastest = median(ratios), min(theirs) / min(ours)
    return {
        "rows": rows,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "method": "epochs alternate ours, deepctr, ours, deepctr, ... in one process; "
        "training-loop seconds of each (ours: fit_model's epoch timer; deepctr: callback "
        "from epoch begin to end); ratio = median over epoch pairs of deepctr seconds / "
        "ours; fastest = deepctr's fastest epoch / ours",
        "paired_epochs": len(pairs),
        "ours_epoch_seconds": ours,
        "deepctr_epoch_seconds": theirs,
        "ours_median_epoch_seconds": median(ours),
        "deepctr_median_epoch_seconds": median(theirs),
        "ours_examples_per_second": rows / median(ours),
        "deepctr_examples_per_second": rows / median(theirs),
        "epoch_ratios": ratios,
        "ratio": ratio,
        "ratio_of_fastest_epochs": fastest,
        "goal_3x_met": ratio >= GOAL_SPEEDUP,
        "goal_3x_met_by_fastest_epochs": fastest >= GOAL_SPEEDUP,
        "regularisation": regularisation(config),
    }
