"""Data preparation: the working folder, Spark and Redis, the simulator and the real logs
turned into saved training sets, and their encoded views."""

from __future__ import annotations

import argparse
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from artifact.feature_map import Encoded, FeatureMap
from bench.harness import ROOT
from bench.quality.plan import OPEN_BANDIT, START, TALKINGDATA, Scale, log
from bench.stream import feast_apply
from training import dataset
from training.dataset import Split, TrainingSet, service_features
from training.labels import labelled_impressions
from training.train import fit_feature_map


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


def prepare_simulator(prepared: Prepared, services: Services, scale: Scale) -> dict:
    from pipelines.simulator import SimulationConfig, write_simulation

    data, timings, days = prepared.sim_data, {}, scale.days
    began = time.perf_counter()
    config = SimulationConfig(**scale.simulation, start=START)
    write_simulation(config, data / "events", data / "ground_truth")
    timings["simulate"] = time.perf_counter() - began
    began = time.perf_counter()
    first_end = START.date() + timedelta(days=1)
    last_end = START.date() + timedelta(days=days)
    from pipelines import batch_features

    batch_features.run(services.spark, data, first_end, last_end)
    timings["batch_features"] = time.perf_counter() - began
    began = time.perf_counter()
    store = applied_store(prepared.root / "sim_repo", data, services.redis_url)
    timings["feast_apply"] = time.perf_counter() - began
    start, end = START, START + timedelta(days=days)
    for task in ("ctr", "cvr"):
        began = time.perf_counter()
        built = dataset.build(store, data, task, start, end)
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
    splits = Split(
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


def ground_truth(data: Path, columns: list[str]) -> pd.DataFrame:
    return (
        pads.dataset(data / "ground_truth", format="parquet")
        .to_table(columns=["impression_id", *columns])
        .to_pandas()
    )


REAL = {
    "talkingdata": ("talkingdata", TALKINGDATA, "cvr_v1", "conversion"),
    "open_bandit": ("open_bandit", OPEN_BANDIT, "ctr_v1", "click"),
}


def prepare(
    args: argparse.Namespace,
    prepared: Prepared,
    services: Services,
    scale: Scale,
    not_done: list[dict],
) -> dict:
    """Whatever the chosen parts need and ``--reuse`` does not already hold."""
    timings: dict = {}
    if {"sim_ctr", "sim_cvr"} & set(args.parts) and not prepared.sim_set("cvr").exists():
        log("preparing the simulator data")
        timings["simulator"] = prepare_simulator(prepared, services, scale)
    for part, (source, path, service, label) in REAL.items():
        if part in args.parts and path.exists() and not prepared.real_set(part).exists():
            log(f"preparing {part}")
            try:
                timings[part] = prepare_real(prepared, services, source, path, service, label)
            except Exception as error:  # the other parts still run
                not_done.append({"what": f"{part} preparation", "reason": repr(error)[:500]})
                log(f"preparing {part} failed: {error!r}"[:500])
    return timings
