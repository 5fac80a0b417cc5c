"""Each kind of corrupted input is quarantined (or rejected) with a clear reason,
and every good row still reaches the events. Real Great Expectations runs each time.
Above the allowed fraction of bad rows the run fails: ``adstack ingest`` exits 1, so a
scheduler stops the pipeline, yet the good rows are written and the bad ones kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from adstack.flows import ingest
from core import events
from pipelines.ingest import UnreadableFile
from pipelines.simulator import SimulationConfig, write_simulation

CONFIG = SimulationConfig(days=2, users=300, ads=40, impressions_per_day=3_000, seed=21)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    write_simulation(CONFIG, root / "landing", root / "ground_truth")
    return root / "landing"


@pytest.fixture
def landing(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "landing"
    shutil.copytree(pristine, copy)
    return copy


def table_files(landing: Path, table: str) -> list[Path]:
    return sorted((landing / table).glob("date=*/*.parquet"))


def edit_first_file(landing: Path, table: str, edit) -> pd.DataFrame:
    """Apply ``edit`` to the first file of ``table``; returns the edited frame."""
    path = table_files(landing, table)[0]
    frame = pq.read_table(path).to_pandas()
    frame = edit(frame)
    frame.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=False)
    return frame


def run(landing: Path, tmp_path: Path, **kwargs):
    return ingest("simulator", landing, tmp_path / "data", tmp_path / "reports", **kwargs)


def written(tmp_path: Path, table: str) -> pd.DataFrame:
    return events.read_table(events.TABLES[table], tmp_path / "data" / "events").to_pandas()


def quarantined(tmp_path: Path, table: str) -> pd.DataFrame:
    files = sorted((tmp_path / "data" / "quarantine" / "simulator").glob(f"{table}-*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]) if files else pd.DataFrame()


def all_impression_ids(landing: Path) -> set[int]:
    return set(
        pd.concat([pd.read_parquet(f) for f in table_files(landing, "impressions")])[
            "impression_id"
        ]
    )


def test_clean_input_is_written_whole(landing, tmp_path):
    report = run(landing, tmp_path)
    assert report.rows_quarantined == 0 and report.passed
    assert set(written(tmp_path, "impressions")["impression_id"]) == all_impression_ids(landing)
    assert len(written(tmp_path, "clicks")) == report.tables["clicks"].rows_in > 0


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("user_id", None, "user_id is null"),
        ("bid", -1.0, "bid below 0"),
        ("ad_id", 987_654_321, "ad_id not in the ad catalog"),
        ("event_timestamp", pd.Timestamp("2099-01-01", tz="UTC"), "event_timestamp outside"),
        ("position", 0, "position below 1"),
    ],
)
def test_bad_impression_values_are_quarantined_and_the_rest_kept(
    landing, tmp_path, column, value, reason
):
    bad_rows = [3, 17, 40]

    def corrupt(frame):
        if value is None:
            frame[column] = frame[column].astype("Int64")
        frame.loc[bad_rows, column] = value
        return frame

    edited = edit_first_file(landing, "impressions", corrupt)
    bad_ids = set(edited.loc[bad_rows, "impression_id"])
    report = run(landing, tmp_path)
    kept = set(written(tmp_path, "impressions")["impression_id"])
    assert kept == all_impression_ids(landing) - bad_ids
    q = quarantined(tmp_path, "impressions")
    assert set(q["impression_id"].astype("int64")) == bad_ids
    assert q["_reasons"].str.contains(reason, regex=False).all()
    assert report.tables["impressions"].rows_quarantined == 3


def test_duplicate_ids_keep_the_first_copy(landing, tmp_path):
    edited = edit_first_file(landing, "impressions", lambda f: pd.concat([f, f.iloc[[5, 6]]]))
    report = run(landing, tmp_path)
    kept = written(tmp_path, "impressions")
    assert kept["impression_id"].is_unique
    assert set(kept["impression_id"]) == all_impression_ids(landing)
    q = quarantined(tmp_path, "impressions")
    assert sorted(q["impression_id"].astype("int64")) == sorted(
        edited.iloc[[5, 6]]["impression_id"]
    )
    assert (q["_reasons"] == "duplicate impression_id").all()
    assert report.tables["impressions"].rows_written == len(edited) - 2 + sum(
        len(pd.read_parquet(f)) for f in table_files(landing, "impressions")[1:]
    )


def test_wrong_types_quarantine_only_the_unparsable_rows(landing, tmp_path):
    def as_text(frame):
        frame["bid"] = frame["bid"].astype(str)
        frame.loc[7, "bid"] = "twelve"
        frame["user_id"] = frame["user_id"].astype(str)
        frame.loc[9, "user_id"] = "12.5"
        return frame

    edited = edit_first_file(landing, "impressions", as_text)
    run(landing, tmp_path)
    q = quarantined(tmp_path, "impressions")
    reasons = dict(zip(q["impression_id"].astype("int64"), q["_reasons"], strict=True))
    assert "parse:bid" in reasons[edited.loc[7, "impression_id"]]
    assert "parse:user_id" in reasons[edited.loc[9, "impression_id"]]
    assert (
        q.loc[q["impression_id"].astype("int64") == edited.loc[7, "impression_id"], "bid"].item()
        == "twelve"
    )
    kept = written(tmp_path, "impressions").set_index("impression_id")
    row = edited.iloc[0]
    assert kept.loc[row["impression_id"], "bid"] == pytest.approx(float(row["bid"]))
    assert len(kept) == len(all_impression_ids(landing)) - 2


def test_shuffled_columns_change_nothing(landing, pristine, tmp_path):
    for path in table_files(landing, "impressions"):
        frame = pd.read_parquet(path)
        frame[frame.columns[::-1]].to_parquet(path, index=False)
    run(landing, tmp_path / "shuffled")
    run(pristine, tmp_path / "original")
    a = written(tmp_path / "shuffled", "impressions").sort_values(
        "impression_id", ignore_index=True
    )
    b = written(tmp_path / "original", "impressions").sort_values(
        "impression_id", ignore_index=True
    )
    pd.testing.assert_frame_equal(a, b)


def test_truncated_parquet_is_rejected_naming_the_file(landing, tmp_path):
    path = table_files(landing, "impressions")[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UnreadableFile, match=str(path.name)):
        run(landing, tmp_path)


def test_click_before_its_impression_and_conversion_before_its_click(landing, tmp_path):
    def backdate(row: int):
        early = pd.Timestamp("2025-01-01", tz="UTC")
        return lambda f: f.assign(event_timestamp=f["event_timestamp"].where(f.index != row, early))

    clicks = edit_first_file(landing, "clicks", backdate(2))
    conversions = edit_first_file(landing, "conversions", backdate(0))
    run(landing, tmp_path)
    q_clicks, q_conv = quarantined(tmp_path, "clicks"), quarantined(tmp_path, "conversions")
    assert q_clicks.iloc[0]["impression_id"] == str(clicks.loc[2, "impression_id"])
    assert "click before its impression" in q_clicks.iloc[0]["_reasons"]
    bad_conversion = q_conv[q_conv["impression_id"] == str(conversions.loc[0, "impression_id"])]
    assert "conversion before its click" in bad_conversion.iloc[0]["_reasons"]
    assert clicks.loc[2, "impression_id"] not in set(written(tmp_path, "clicks")["impression_id"])


# --- flat logs (TalkingData's shape, small literal files) ---------------------------

HEADER = "ip,app,device,os,channel,click_time,attributed_time,is_attributed\n"
ROWS = [
    "1,12,1,13,497,2017-11-07 09:30:38,,0",
    "2,25,1,17,259,2017-11-07 13:40:27,,0",
    "3,12,1,19,212,2017-11-07 18:05:24,2017-11-07 18:10:00,1",
    "4,13,1,13,477,2017-11-07 04:58:08,,0",
    "5,12,1,1,178,2017-11-09 09:00:09,,0",
]


def talkingdata_file(tmp_path: Path, lines: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "td" / "train_sample.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def flat_run(path: Path, tmp_path: Path, **kwargs):
    return ingest("talkingdata", path, tmp_path / "data", tmp_path / "reports", **kwargs)


def flat_quarantine(tmp_path: Path) -> pd.DataFrame:
    return pd.concat(
        pd.read_parquet(f)
        for f in (tmp_path / "data" / "quarantine" / "talkingdata").glob("*.parquet")
    )


def test_truncated_csv_quarantines_the_cut_line_and_keeps_the_rest(tmp_path):
    text = HEADER + "\n".join(ROWS)
    path = tmp_path / "td.csv"
    path.write_text(text[: len(text) - 25])  # the last line loses its time and labels
    report = flat_run(path, tmp_path)
    assert report.tables["impressions"].rows_written == 4
    q = flat_quarantine(tmp_path)
    assert q["ip"].tolist() == ["5"]
    assert "event_timestamp is null" in q.iloc[0]["_reasons"]


def test_malformed_line_is_quarantined_with_its_text(tmp_path):
    lines = [*ROWS[:2], "9,9,9,9,9,2017-11-07 09:30:38,,0,extra,fields", *ROWS[2:]]
    report = flat_run(talkingdata_file(tmp_path, lines), tmp_path)
    assert report.tables["impressions"].rows_written == 5
    q = flat_quarantine(tmp_path)
    assert q["_bad_line"].tolist() == ["9,9,9,9,9,2017-11-07 09:30:38,,0,extra,fields"]
    assert "malformed line" in q.iloc[0]["_reasons"]


def test_labels_outside_zero_one_and_bad_conversion_times(tmp_path):
    lines = [
        ROWS[0].replace(",0", ",2"),
        "3,12,1,19,212,2017-11-07 18:05:24,2017-11-07 18:00:00,1",
        *ROWS[1:],
    ]
    flat_run(talkingdata_file(tmp_path, lines), tmp_path)
    q = flat_quarantine(tmp_path).set_index("_row")
    assert "conversion not 0/1" in q.loc["1", "_reasons"]
    assert "conversion before its click" in q.loc["2", "_reasons"]
    assert len(q) == 2


def test_shuffled_csv_header_ingests_the_same(tmp_path):
    names = HEADER.strip().split(",")
    order = names[::-1]
    shuffled = [
        ",".join(dict(zip(names, row.split(","), strict=True))[n] for n in order) for row in ROWS
    ]
    flat_run(talkingdata_file(tmp_path / "a", ROWS), tmp_path / "a")
    flat_run(talkingdata_file(tmp_path / "b", shuffled, ",".join(order) + "\n"), tmp_path / "b")
    for table in ("impressions", "clicks", "conversions", "ads", "users"):
        a = written(tmp_path / "a", table)
        b = written(tmp_path / "b", table)
        pd.testing.assert_frame_equal(a, b)


def landed(landing: Path, table: str) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in table_files(landing, table)], ignore_index=True)


def test_ingest_command_exits_1_above_the_threshold_and_keeps_every_good_row(
    landing, settings_env, monkeypatch
):
    from typer.testing import CliRunner

    from adstack.cli import app

    clicked = set(landed(landing, "clicks")["impression_id"])

    def corrupt(frame):
        # Impressions nobody clicked, so no click or conversion loses its impression.
        rows = frame.index[~frame["impression_id"].isin(clicked)][:20]
        frame["user_id"] = frame["user_id"].astype("Int64")
        frame.loc[rows[:10], "user_id"] = None
        frame.loc[rows[10:], "bid"] = -1.0
        return frame

    edited = edit_first_file(landing, "impressions", corrupt)
    expected_reasons = {
        **dict.fromkeys(edited.loc[edited["user_id"].isna(), "impression_id"], "user_id is null"),
        **dict.fromkeys(edited.loc[edited["bid"] < 0, "impression_id"], "bid below 0"),
    }
    assert len(expected_reasons) == 20
    monkeypatch.setenv("ADSTACK_DATA", str(settings_env / "data"))
    result = CliRunner().invoke(
        app,
        ["ingest", "--source", "simulator", "--path", str(landing), "--max-bad-fraction", "0.001"],
    )
    assert result.exit_code == 1, result.output
    assert "above the threshold" in result.output
    report = json.loads((settings_env / "reports" / "ingest" / "simulator.json").read_text())
    assert not report["passed"] and report["rows_quarantined"] == 20
    q = quarantined(settings_env, "impressions")
    reasons = dict(zip(q["impression_id"].astype("int64"), q["_reasons"], strict=True))
    assert reasons.keys() == expected_reasons.keys()
    assert all(expected in reasons[i] for i, expected in expected_reasons.items()), reasons
    for name, table in events.TABLES.items():
        key = list(table.key)
        good = landed(landing, name)[key].drop_duplicates()
        if name == "impressions":
            good = good[~good["impression_id"].isin(expected_reasons)]
        kept = written(settings_env, name)[key]
        assert len(kept) == len(good), name
        assert set(kept.itertuples(index=False)) == set(good.itertuples(index=False)), name


def test_bad_fraction_above_threshold_fails_the_run_but_keeps_good_rows(tmp_path):
    lines = [
        row.replace("2017-11-07", "2099-11-07") if i < 2 else row for i, row in enumerate(ROWS)
    ]
    report = flat_run(talkingdata_file(tmp_path, lines), tmp_path, max_bad_fraction=0.2)
    assert not report.passed and report.bad_fraction == pytest.approx(0.4)
    assert report.tables["impressions"].rows_written == 3


def test_reingest_is_idempotent(landing, tmp_path):
    run(landing, tmp_path)
    first = {t: written(tmp_path, t) for t in events.TABLES}
    run(landing, tmp_path)
    for table, frame in first.items():
        pd.testing.assert_frame_equal(written(tmp_path, table), frame)
