"""Bring your own log: the four shipped real samples through the generic YAML mapping,
adstack's served CTR model against two baselines on the same raw fields.

For each sample of ``../shared/data`` (TalkingData, Open Bandit, Avazu, Criteo) the
mappings in ``bench/byol_mappings/`` declare every field: ids, time, the label as
``click`` (TalkingData: the install, ``is_attributed``) and every other field as a typed
``context`` field. The run then does what a user would: ``adstack ingest`` with the
mapping (source ``generic``), the Spark batch job, ``feast apply``, and the CTR training
set from Feast's point-in-time join, split by time into the first 70% of rows (train),
the next 15% (calibration) and the last 15% (test), rows of one instant kept together
(``SplitRequest(fractions=(0.7, 0.15, 0.15))``: the same split for every model; the
logs span one hour to seven days, too short for adstack's default whole-day split on
two of them). The cut-off is the last event plus the click window: the samples were
read long after they ended, so every label is final (the default cut-off, the last
event, would drop the last hour, which is all of Avazu and Criteo).

Models, all fitted on the train split, tuned on the calibration split, judged on the
test split:

- ``ours``: what ``adstack train --task ctr`` serves (``flows.train``'s defaults: a DCN,
  4 epochs at most, early stopping on the calibration split's log loss, then the
  calibrator fitted on that split); its calibrated test predictions. Its inputs are
  ``training.train.model_inputs``: the ids, the request features, the context fields
  and the ``ctr_v1`` service's point-in-time aggregates and profiles.
- ``lr_onehot``: scikit-learn's L2 logistic regression on the same raw fields, the ones
  among ``model_inputs`` that are not feature-service features (the mapped ids, the
  request features derived from the mapped columns, every context field), inputs
  identical on the train split counted once. Categoricals one-hot (values seen once in
  train share a "rare" column, unseen ones go there too); numerics ``log1p`` when
  non-negative and reaching above 1 (as adstack's feature map does), mean-filled with a
  missing flag, standardised. C is the grid value with the lowest calibration log loss.
- ``lightgbm``: LightGBM on the same raw fields, categoricals as LightGBM categoricals
  (codes of the train split's values; unseen and missing are missing), numerics as they
  are. Early stopping on the calibration split's log loss, for each of four
  (num_leaves, min_data_in_leaf) settings; the setting with the lowest calibration log
  loss is kept.
- ``constant``: the train split's click rate for every row.

Baselines are judged on their own probabilities (both minimise log loss directly); ours
is judged calibrated, as served.

Statistics (paired bootstrap: ``--rounds`` resamples, 1,000 by default, of the test rows
with replacement, the same resamples for every model; resamples without a positive or
without a negative are skipped and counted):

- ``auc_gap`` = AUC(ours) - max(AUC(lr_onehot), AUC(lightgbm)) on the test split, and its
  95% interval: the 2.5th and 97.5th percentiles of the same difference computed on
  each resample (the better baseline taken per resample).
- ``not_significantly_worse``: the interval's upper bound is >= 0, i.e. the data do
  not show at the 95% level that ours ranks worse than the better baseline.
- ``ahead``: ``auc_gap > 0`` (point estimate); ``significantly_ahead``: the interval's
  lower bound is > 0.
- ``beats_constant``: log loss(ours) < log loss(constant) on the test split (point
  estimate), with the 95% interval of their difference beside it.

Goal (from the issue): ``not_significantly_worse`` on every sample, ``ahead`` on at
least two, ``beats_constant`` on every sample.

    python -m bench.byol [--quick] [--workdir DIR] [--samples avazu criteo] [--rounds N]

Results: ``bench/results/byol.json`` (one dict per sample under its name) and one
``byol_<sample>`` row per sample in BENCHMARKS.md; ``--quick`` (Avazu and Criteo only,
200 resamples) writes ``bench/results/quick/byol.json`` only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from artifact.feature_map import HASH
from artifact.metrics import auc, log_loss
from bench.harness import ROOT, save_rows, use_quick
from bench.quality.plan import OPEN_BANDIT, SHARED, TALKINGDATA, THREADS, log
from bench.quality.prepare import Services, applied_store, batch_job

COMMAND = "python -m bench.byol"
MAPPINGS = ROOT / "bench" / "byol_mappings"
AVAZU = SHARED / "avazu_sample"
CRITEO = SHARED / "criteo_sample"
FRACTIONS = (0.7, 0.15, 0.15)
ROUNDS, QUICK_ROUNDS = 1000, 200
SERVICE = "ctr_v1"
LR_C = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
LGBM_BASE = {
    "objective": "binary",
    "learning_rate": 0.05,
    "feature_fraction": 0.8,
    "num_threads": THREADS,
    "verbose": -1,
    "seed": 0,
}
LGBM_GRID = (
    {"num_leaves": 15, "min_data_in_leaf": 20},
    {"num_leaves": 15, "min_data_in_leaf": 100},
    {"num_leaves": 63, "min_data_in_leaf": 20},
    {"num_leaves": 63, "min_data_in_leaf": 100},
)
LGBM_ROUNDS, LGBM_STOP = 2000, 50


@dataclass(frozen=True)
class Sample:
    """A shipped sample: its mappings (ingested in order into one data root) and the
    links the mappings' relative ``path`` globs read, made in the sample's work folder."""

    mappings: tuple[str, ...]
    links: tuple[tuple[str, Path], ...]

    @property
    def present(self) -> bool:
        return all(target.exists() for _, target in self.links)


def _parts(folder: Path) -> tuple[tuple[str, Path], ...]:
    """train, dev and test linked as 0-train.csv, 1-dev.csv, 2-test.csv: the mapping's
    glob reads them in that order, so file order (and row time) runs train to test."""
    return tuple(
        (f"log/{i}-{n}.csv", folder / f"{n}.csv") for i, n in enumerate(("train", "dev", "test"))
    )


SAMPLES = {
    "talkingdata": Sample(("talkingdata.yaml",), (("log", TALKINGDATA),)),
    "open_bandit": Sample(
        ("open_bandit_all.yaml", "open_bandit_men.yaml", "open_bandit_women.yaml"),
        (("log", OPEN_BANDIT),),
    ),
    "avazu": Sample(("avazu.yaml",), _parts(AVAZU)),
    "criteo": Sample(("criteo.yaml",), _parts(CRITEO)),
}
QUICK_SAMPLES = ("avazu", "criteo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="prepare the data here (kept)")
    parser.add_argument("--samples", nargs="+", choices=list(SAMPLES), help="default: all")
    parser.add_argument("--rounds", type=int, help=f"bootstrap resamples ({ROUNDS})")
    parser.add_argument("--quick", action="store_true", help="Avazu and Criteo, into results/quick")
    args = parser.parse_args(argv)
    args.samples = args.samples or list(QUICK_SAMPLES if args.quick else SAMPLES)
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    return args


# --- preparation: what a user runs ---------------------------------------------------


def prepare(name: str, sample: Sample, root: Path, services: Services):
    """Ingest the sample with its mappings, run the batch job, apply the feature repo and
    build the CTR training set; returns it with the ingest reports and timings."""
    from adstack.flows import ingest
    from training import dataset
    from training.labels import label_window

    root.mkdir(parents=True, exist_ok=True)
    for link, target in sample.links:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).unlink(missing_ok=True)
        (root / link).symlink_to(target)
    data, timings, reports = root / "data", {}, {}
    began = time.perf_counter()
    for mapping in sample.mappings:
        shutil.copy(MAPPINGS / mapping, root / mapping)
        report = ingest("generic", root / mapping, data, root / "reports")
        reports[report.name] = {
            "files": len(report.files_read),
            "rows_in": report.rows_in,
            "rows_quarantined": report.rows_quarantined,
            "reasons": report.tables["impressions"].reasons,
            "passed": report.passed,
        }
        if not report.passed:
            raise RuntimeError(f"{name}: ingest of {mapping} failed its checks: {reports}")
    timings["ingest"] = time.perf_counter() - began
    began = time.perf_counter()
    batch_job(services, data)
    timings["batch_features"] = time.perf_counter() - began
    began = time.perf_counter()
    store = applied_store(root, data, services.redis_url)
    timings["feast_apply"] = time.perf_counter() - began
    began = time.perf_counter()
    first, last = dataset.log_range(data)
    cutoff = dataset.last_event(data) + label_window("ctr")
    split = dataset.SplitRequest(fractions=FRACTIONS)
    training_set = dataset.build(store, data, "ctr", first, last, cutoff, SERVICE, split)
    dataset.save(training_set, root / "training_set")
    timings["build"] = time.perf_counter() - began
    return training_set, reports, timings


# --- the models -----------------------------------------------------------------------


def ours(training_set) -> tuple[np.ndarray, dict]:
    """The model ``adstack train --task ctr`` serves; its calibrated test predictions."""
    from adstack.flows import DEFAULT_KIND
    from training.models import ModelConfig
    from training.train import TrainConfig, train_and_evaluate

    config = TrainConfig(model=ModelConfig(kind=DEFAULT_KIND["ctr"]))
    trained = train_and_evaluate(training_set, config)
    y_test, p_test = trained.curves["calibrated"]
    test = training_set.part("test")
    assert np.array_equal(y_test, test["click"].to_numpy()), "test rows out of order"
    encoded = trained.feature_map.transform(test)
    train_codes = trained.feature_map.transform(training_set.part("train")).sparse
    unknown = {}
    for j, f in enumerate(trained.feature_map.sparse):
        if f.kind == HASH:  # share of test ids (present) never seen in train
            seen = np.isin(encoded.sparse[:, j], np.unique(train_codes[:, j]))
            unknown[f.name] = float(np.mean(~seen | (encoded.sparse[:, j] == 0)))
        else:  # share of test values outside the vocabulary (or missing)
            unknown[f.name] = float(np.mean(encoded.sparse[:, j] == 0))
    service = [f.name for f in training_set.features]
    history = test[service].notna().any(axis=1).mean() if service else 0.0
    return p_test, {
        "kind": config.model.kind,
        "epochs_max": config.epochs,
        "epochs_run": len(trained.history),
        "history": trained.history,
        "calibration": {k: v for k, v in trained.calibration.items() if k not in ("x", "y")},
        "test_uncalibrated": trained.metrics["test_uncalibrated"],
        "inputs": {
            "sparse": trained.feature_map.sparse_names,
            "dense": trained.feature_map.dense_names,
            "left_out": trained.feature_map.left_out,
        },
        "service_features": len(service),
        "service_features_used": len([n for n in trained.feature_map.dense_names if n in service]),
        "test_rows_with_any_service_feature": float(history),
        "test_share_unknown_or_missing": unknown,
        "seconds": trained.seconds,
    }


def raw_inputs(training_set) -> tuple[list[str], list[str], dict[str, str]]:
    """The raw fields of ``model_inputs`` (not feature-service features): categorical and
    numeric columns, and the duplicates dropped (column -> the column it repeats)."""
    from training.train import model_inputs

    inputs = model_inputs(training_set)
    service = {f.name for f in training_set.features}
    train = training_set.part("train")
    kept: list[str] = []
    repeats: dict[str, str] = {}
    for column in (*inputs.hashed, *inputs.categorical, *inputs.dense):
        if column in service:
            continue
        text = train[column].astype("string")
        same = next((k for k in kept if text.equals(train[k].astype("string"))), None)
        if same is None:
            kept.append(column)
        else:
            repeats[column] = same
    numeric = [c for c in kept if c in inputs.dense]
    return [c for c in kept if c not in numeric], numeric, repeats


def _categories(frames: dict[str, pd.DataFrame], column: str) -> dict[str, np.ndarray]:
    return {
        s: f[column].astype("string").fillna("<missing>").to_numpy(object)
        for s, f in frames.items()
    }


def _numeric(frames: dict[str, pd.DataFrame], column: str) -> dict[str, np.ndarray]:
    return {
        s: pd.to_numeric(f[column], errors="coerce").to_numpy(np.float64) for s, f in frames.items()
    }


def lr_onehot(frames: dict[str, pd.DataFrame], categorical: list[str], numeric: list[str]):
    """L2 logistic regression on one-hot categoricals and standardised numerics; C by the
    calibration split's log loss. Returns the test predictions and what was chosen."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    began = time.perf_counter()
    blocks: dict[str, list] = {s: [] for s in frames}
    if categorical:
        text = {
            s: np.column_stack([_categories(frames, c)[s] for c in categorical]) for s in frames
        }
        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=2)
        encoder.fit(text["train"])
        for s in frames:
            blocks[s].append(encoder.transform(text[s]).tocsr())
    for column in numeric:
        values = _numeric(frames, column)
        known = values["train"][~np.isnan(values["train"])]
        log1p = bool(known.size and known.min() >= 0 and np.quantile(known, 0.99) > 1.0)
        fill = float(known.mean()) if known.size else 0.0
        for s, v in values.items():
            missing = np.isnan(v)
            filled = np.where(missing, fill, v)
            values[s] = np.log1p(np.maximum(filled, 0)) if log1p else filled
            blocks[s].append(sparse.csr_matrix(missing.astype(np.float64)[:, None]))
        mean, std = values["train"].mean(), values["train"].std() or 1.0
        for s in frames:
            blocks[s].append(sparse.csr_matrix(((values[s] - mean) / std)[:, None]))
    x = {s: sparse.hstack(b).tocsr() for s, b in blocks.items()}
    y = {s: f["click"].to_numpy() for s, f in frames.items()}
    grid = []
    best = None
    for c in LR_C:
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit(x["train"], y["train"])
        loss = log_loss(y["calibration"], model.predict_proba(x["calibration"])[:, 1])
        grid.append({"C": c, "calibration_log_loss": loss})
        if best is None or loss < best[0]:
            best = (loss, c, model)
    assert best is not None
    return best[2].predict_proba(x["test"])[:, 1], {
        "chosen_C": best[1],
        "grid": grid,
        "columns": x["train"].shape[1],
        "seconds": time.perf_counter() - began,
    }


def lightgbm(frames: dict[str, pd.DataFrame], categorical: list[str], numeric: list[str]):
    """LightGBM with early stopping on the calibration split, for each setting of the
    grid; the setting with the lowest calibration log loss is kept."""
    import lightgbm as lgb

    began = time.perf_counter()
    columns: dict[str, list[np.ndarray]] = {s: [] for s in frames}
    for column in categorical:
        text = _categories(frames, column)
        values = pd.Index(pd.unique(text["train"]))
        for s in frames:
            codes = values.get_indexer(text[s]).astype(np.float64)
            columns[s].append(np.where(codes < 0, np.nan, codes))
    for column in numeric:
        for s, v in _numeric(frames, column).items():
            columns[s].append(v)
    x = {s: np.column_stack(c) for s, c in columns.items()}
    y = {s: f["click"].to_numpy() for s, f in frames.items()}
    grid, best = [], None
    for setting in LGBM_GRID:
        params = {**LGBM_BASE, **setting}
        train = lgb.Dataset(
            x["train"],
            y["train"],
            categorical_feature=list(range(len(categorical))),
            free_raw_data=False,
        )
        holdout = lgb.Dataset(x["calibration"], y["calibration"], reference=train)
        booster = lgb.train(
            params,
            train,
            num_boost_round=LGBM_ROUNDS,
            valid_sets=[holdout],
            callbacks=[lgb.early_stopping(LGBM_STOP, verbose=False)],
        )
        p_cal = booster.predict(x["calibration"], num_iteration=booster.best_iteration)
        loss = log_loss(y["calibration"], p_cal)
        grid.append(
            {**setting, "best_iteration": booster.best_iteration, "calibration_log_loss": loss}
        )
        if best is None or loss < best[0]:
            best = (loss, setting, booster)
    assert best is not None
    booster = best[2]
    return booster.predict(x["test"], num_iteration=booster.best_iteration), {
        "params": {**LGBM_BASE, **best[1]},
        "best_iteration": booster.best_iteration,
        "max_rounds": LGBM_ROUNDS,
        "early_stopping_rounds": LGBM_STOP,
        "grid": grid,
        "seconds": time.perf_counter() - began,
    }


# --- the comparison -------------------------------------------------------------------


def bootstrap(y: np.ndarray, p: dict[str, np.ndarray], rounds: int, seed: int = 0) -> dict:
    """Per-model AUC intervals, the AUC gap of ours to the better baseline and the log
    loss gap of ours to the constant, each over the same resamples of the test rows."""
    rng = np.random.default_rng(seed)
    aucs: dict[str, list[float]] = {name: [] for name in ("ours", "lr_onehot", "lightgbm")}
    gaps, losses, skipped = [], [], 0
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        if not 0 < y[pick].sum() < len(pick):
            skipped += 1
            continue
        values = {name: auc(y[pick], p[name][pick]) for name in aucs}
        for name, value in values.items():
            aucs[name].append(value)
        gaps.append(values["ours"] - max(values["lr_onehot"], values["lightgbm"]))
        losses.append(log_loss(y[pick], p["ours"][pick]) - log_loss(y[pick], p["constant"][pick]))

    def ci(values: list[float]) -> list[float]:
        return [float(v) for v in np.quantile(values, [0.025, 0.975])]

    return {
        **{f"{name}_auc_ci95": ci(v) for name, v in aucs.items()},
        "auc_gap_ci95": ci(gaps),
        "logloss_gap_ci95": ci(losses),
        "rounds": rounds,
        "rounds_skipped": skipped,
    }


def compare(training_set, rounds: int) -> dict:
    """Every model on the test split; the figures of one sample."""
    frames = {s: training_set.part(s) for s in ("train", "calibration", "test")}
    y = frames["test"]["click"].to_numpy().astype(np.int64)
    p_ours, ours_info = ours(training_set)
    categorical, numeric, repeats = raw_inputs(training_set)
    p_lr, lr_info = lr_onehot(frames, categorical, numeric)
    p_gbm, gbm_info = lightgbm(frames, categorical, numeric)
    rate = float(frames["train"]["click"].mean())
    p = {"ours": p_ours, "lr_onehot": p_lr, "lightgbm": p_gbm, "constant": np.full(len(y), rate)}
    figures = {
        "ours_auc": auc(y, p_ours),
        "lr_onehot_auc": auc(y, p_lr),
        "lightgbm_auc": auc(y, p_gbm),
        "ours_logloss": log_loss(y, p_ours),
        "constant_logloss": log_loss(y, p["constant"]),
        "lr_onehot_logloss": log_loss(y, p_lr),
        "lightgbm_logloss": log_loss(y, p_gbm),
        "constant_ctr": rate,
    }
    best = max(("lr_onehot", "lightgbm"), key=lambda name: figures[f"{name}_auc"])
    figures["best_baseline"] = best
    figures["auc_gap"] = figures["ours_auc"] - figures[f"{best}_auc"]
    figures["logloss_gap"] = figures["ours_logloss"] - figures["constant_logloss"]
    figures |= bootstrap(y, p, rounds)
    figures["not_significantly_worse"] = figures["auc_gap_ci95"][1] >= 0
    figures["ahead"] = figures["auc_gap"] > 0
    figures["significantly_ahead"] = figures["auc_gap_ci95"][0] > 0
    figures["beats_constant"] = figures["logloss_gap"] < 0
    figures["met"] = figures["not_significantly_worse"] and figures["beats_constant"]
    counts = training_set.frame.groupby("split")["click"].agg(["size", "sum"])
    figures["rows"] = {s: int(counts.loc[s, "size"]) for s in counts.index}
    figures["positives"] = {s: int(counts.loc[s, "sum"]) for s in counts.index}
    figures["split"] = training_set.splits.as_dict()
    figures["baseline_inputs"] = {
        "categorical": categorical,
        "numeric": numeric,
        "repeats": repeats,
    }
    figures["models"] = {"ours": ours_info, "lr_onehot": lr_info, "lightgbm": gbm_info}
    return figures


def quality_suite(training_set) -> dict:
    """The training-set suite ``adstack train`` runs first (it refuses a failing set
    unless --accept-failed-validation)."""
    from validation.gx import Runner
    from validation.quality import check_training_set

    result = check_training_set(Runner(run_name="byol"), training_set)
    return {"passed": result.passed, "failures": [c.describe() for c in result.failures]}


def goal(figures: dict) -> dict:
    samples = [figures[name] for name in SAMPLES if name in figures]
    ahead = sum(s["ahead"] for s in samples)
    return {
        "samples": len(samples),
        "not_significantly_worse_everywhere": all(s["not_significantly_worse"] for s in samples),
        "ahead_on": ahead,
        "beats_constant_everywhere": all(s["beats_constant"] for s in samples),
        "met": len(samples) == len(SAMPLES) and all(s["met"] for s in samples) and ahead >= 2,
    }


def rows(figures: dict) -> dict[str, tuple[str, str, str]]:
    """One BENCHMARKS.md row per sample, from the recorded figures alone."""
    overall = goal(figures)
    split = "/".join(f"{100 * f:g}" for f in figures.get("split_fractions", FRACTIONS))
    out = {}
    for name in SAMPLES:
        if name not in figures:
            continue
        s = figures[name]
        lo, hi = s["auc_gap_ci95"]
        best = {"lr_onehot": "one-hot LR", "lightgbm": "LightGBM"}[s["best_baseline"]]
        verdict = ", ".join(
            [
                "not significantly worse"
                if s["not_significantly_worse"]
                else "significantly worse",
                "ahead" if s["ahead"] else "behind",
                f"log loss {'below' if s['beats_constant'] else 'not below'} the constant's",
            ]
        )
        out[f"byol_{name}"] = (
            f"generic YAML mapping; the served CTR model (DCN, calibrated): test AUC "
            f"{s['ours_auc']:.4f} [{s['ours_auc_ci95'][0]:.4f}, {s['ours_auc_ci95'][1]:.4f}], "
            f"log loss {s['ours_logloss']:.4f} vs constant {s['constant_logloss']:.4f} "
            f"({s['rows']['test']:,} test rows, {s['positives']['test']:,} positives)",
            f"same raw fields, same {split} time split: one-hot LR AUC "
            f"{s['lr_onehot_auc']:.4f}, LightGBM AUC {s['lightgbm_auc']:.4f}",
            f"{s['auc_gap']:+.4f} AUC vs {best}, 95% bootstrap [{lo:+.4f}, {hi:+.4f}]: {verdict}; "
            f"sample {'met' if s['met'] else 'missed'}, issue goal "
            f"{'met' if overall['met'] else 'missed'} (ahead on {overall['ahead_on']} of "
            f"{overall['samples']} samples, 2 of {len(SAMPLES)} needed)",
        )
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        use_quick()
    torch.set_num_threads(THREADS)
    command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
    began = time.perf_counter()
    figures: dict = {"not_done": {}}
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-byol-")))
        root = args.workdir or scratch / "work"
        services = Services(stack, scratch)
        for name in args.samples:
            sample = SAMPLES[name]
            if not sample.present:
                figures["not_done"][name] = f"{SHARED} lacks the sample"
                log(f"{name}: skipped, the sample is absent")
                continue
            log(f"{name}: ingest, batch features, feast apply, training set")
            training_set, reports, timings = prepare(name, sample, root / name, services)
            log(f"{name}: training set {training_set.summary()['rows_by_split']}; models")
            started = time.perf_counter()
            result = compare(training_set, args.rounds)
            timings["models"] = time.perf_counter() - started
            result["adstack_train_suite"] = quality_suite(training_set)
            result["ingest"], result["seconds"] = reports, timings
            result["mappings"] = [f"bench/byol_mappings/{m}" for m in sample.mappings]
            figures[name] = result
            log(
                f"{name}: ours AUC {result['ours_auc']:.4f}, LR {result['lr_onehot_auc']:.4f}, "
                f"LightGBM {result['lightgbm_auc']:.4f}; log loss {result['ours_logloss']:.4f} "
                f"vs constant {result['constant_logloss']:.4f}"
            )
    figures["goal"] = goal(figures)
    figures["split_fractions"] = list(FRACTIONS)
    figures["total_seconds"] = time.perf_counter() - began
    path = save_rows("byol", {"command": command, **figures}, rows(figures), command=command)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
