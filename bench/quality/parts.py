"""The parts of a run, each from a prepared training set to a section of figures."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace

from artifact.metrics import auc_interval, evaluate
from bench.quality.ours import run_ours, try_variants
from bench.quality.peers import run_deepctr_esmm, run_lightgbm
from bench.quality.plan import GOAL_AUC_GAP, GOAL_ECE, GOAL_NE_GAP, log
from bench.quality.prepare import Prepared, Views, clicked_only, ground_truth, load_set
from bench.quality.scoring import gaps, paired_auc_difference, public, summary
from bench.quality.throughput import interleaved_dcn
from training.models import ModelConfig
from training.train import TrainConfig


def simulator_ctr(prepared: Prepared, args: argparse.Namespace, not_done: list[dict]) -> dict:
    training_set = load_set(prepared.sim_set("ctr"), args)
    config = TrainConfig(epochs=args.epochs)
    views = Views.of(training_set)
    test = views.frames["test"].merge(
        ground_truth(prepared.sim_data, ["p_click"]), on="impression_id", how="left"
    )
    ceiling = evaluate(test["click"].to_numpy(), test["p_click"].to_numpy()).as_dict()
    models: dict[str, dict] = {}
    log("sim CTR: ours_lr")
    models["ours_lr"] = run_ours(training_set, replace(config, model=ModelConfig(kind="lr")))
    log("sim CTR: ours_dcn and deepctr_dcn, epochs in alternation")
    models["ours_dcn"], deepctr_dcn, speed = interleaved_dcn(training_set, views, config)
    log("sim CTR: lightgbm")
    models["lightgbm"] = run_lightgbm(views)
    models["deepctr_dcn"] = deepctr_dcn
    for name, result in models.items():
        log(f"  {name}: {summary(result['test'])} ({result['seconds']:.0f} s)")
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
        "throughput": speed,
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
