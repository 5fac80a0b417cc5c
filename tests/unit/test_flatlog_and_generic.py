import pandas as pd
import pytest

from adstack.flows import ingest
from core.ids import hash_ids
from pipelines.adapters import generic
from pipelines.adapters.flatlog import parse_flat


def test_hashed_ids_are_stable_63_bit_and_keep_nulls():
    ids = hash_ids(pd.Series(["a99f214a", "x", None, "x"]))
    assert ids[1] == ids[3] and ids[0] != ids[1]
    assert ids.dropna().between(0, 2**63 - 1).all()
    assert pd.isna(ids[2])
    assert hash_ids(pd.Series(["x"]))[0] == ids[1]


def test_parse_flags_present_but_unparsable_values_only():
    parsed = parse_flat(
        pd.DataFrame(
            {
                "impression_id": ["1", "2", "x", None, " "],
                "bid": ["0.5", "abc", "1", "", "2"],
                "event_timestamp": [
                    "2026-01-01 00:00:00",
                    "not a time",
                    None,
                    "2026-01-01",
                    "2026-01-02",
                ],
            }
        )
    )
    assert parsed.parse_failures["parse:impression_id"].tolist() == [
        False,
        False,
        True,
        False,
        False,
    ]
    assert parsed.parse_failures["parse:bid"].tolist() == [False, True, False, False, False]
    assert parsed.parse_failures["parse:event_timestamp"].tolist() == [
        False,
        True,
        False,
        False,
        False,
    ]
    assert str(parsed.frame["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_ids_beyond_float_precision_parse_exactly():
    parsed = parse_flat(pd.DataFrame({"impression_id": ["9007199254740993", "7"]}))
    assert parsed.frame["impression_id"].tolist() == [9007199254740993, 7]


MAPPING = """
source: shop_ads
format: csv
path: "logs/*.csv"
timestamp_unit: s
columns:
  event_timestamp: ts
  user_id: visitor
  ad_id: creative
  click: clicked
  bid: cpc
hash_ids: [user_id]
constants: {bid_type: CPC, placement: home}
"""


def test_generic_yaml_mapping_brings_your_own_log(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "day1.csv").write_text(
        "ts,visitor,creative,clicked,cpc\n"
        "1767600000,alice,10,1,0.4\n"
        "1767600060,bob,11,0,0.3\n"
        "yesterday,carol,10,0,0.3\n"
    )
    (tmp_path / "map.yaml").write_text(MAPPING)
    report = ingest("generic", tmp_path / "map.yaml", tmp_path / "data", tmp_path / "reports")
    assert report.name == "shop_ads"
    assert report.tables["impressions"].rows_written == 2
    assert report.tables["impressions"].reasons == {
        "parse:event_timestamp": 1,
        "event_timestamp is null": 1,
    }
    clicks = pd.read_parquet(tmp_path / "data" / "events" / "clicks")
    assert len(clicks) == 1
    imp = pd.read_parquet(tmp_path / "data" / "events" / "impressions")
    assert imp["event_timestamp"].min() == pd.Timestamp(1767600000, unit="s", tz="UTC")
    assert set(imp["placement"]) == {"home"}


def test_generic_mapping_errors_name_the_problem(tmp_path):
    (tmp_path / "bad.yaml").write_text(MAPPING.replace("click: clicked", "clikc: clicked"))
    with pytest.raises(ValueError, match="unknown flat columns"):
        generic.load_mapping(tmp_path / "bad.yaml")


def test_text_ids_follow_the_documented_formula():
    import hashlib

    from core.ids import as_id, text_id

    digest = hashlib.blake2b(b"u-1234", digest_size=8).digest()
    assert text_id("u-1234") == int.from_bytes(digest, "big") & (2**63 - 1)
    assert hash_ids(pd.Series(["u-1234"]))[0] == text_id("u-1234")
    assert as_id(42) == 42 and as_id("42") == text_id("42")


ROW_TIME_MAPPING = """
source: no_clock
path: "logs/*.tsv"
csv: {sep: "\\t", header: auto, names: [label, site, floor]}
row_time: {start: "2014-01-01T00:00:00Z", step_seconds: 0.4}
columns: {user_id: site, ad_id: site, click: label}
hash_ids: [user_id, ad_id]
context:
  site: {column: site, kind: categorical}
  floor: {column: floor, kind: numeric}
"""


def test_row_time_stamps_rows_in_file_order_across_files(tmp_path):
    (tmp_path / "logs").mkdir()
    # Only the first part kept its header line (header: auto); the second has none.
    (tmp_path / "logs" / "a.tsv").write_text("label\tsite\tfloor\n1\tx\t0.5\n0\ty\t\n")
    (tmp_path / "logs" / "b.tsv").write_text("0\tx\t1.5\n")
    (tmp_path / "map.yaml").write_text(ROW_TIME_MAPPING)
    report = ingest("generic", tmp_path / "map.yaml", tmp_path / "data", tmp_path / "reports")
    assert report.tables["impressions"].rows_written == 3 and report.rows_quarantined == 0
    imp = pd.read_parquet(tmp_path / "data" / "events" / "impressions")
    imp = imp.sort_values("event_timestamp")
    start = pd.Timestamp("2014-01-01", tz="UTC")
    steps = [start, start + pd.Timedelta(milliseconds=400), start + pd.Timedelta(milliseconds=800)]
    assert imp["event_timestamp"].tolist() == steps
    assert str(imp["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert imp["ctx_site"].tolist() == ["x", "y", "x"]
    assert imp["ctx_floor"].fillna(-1).tolist() == [0.5, -1, 1.5]


def test_row_time_is_refused_beside_a_time_column_and_auto_header_needs_names(tmp_path):
    both = ROW_TIME_MAPPING.replace("click: label}", "click: label, event_timestamp: floor}")
    (tmp_path / "both.yaml").write_text(both)
    with pytest.raises(ValueError, match="row_time or an event_timestamp column"):
        generic.load_mapping(tmp_path / "both.yaml")
    (tmp_path / "naive.yaml").write_text(ROW_TIME_MAPPING.replace("00:00:00Z", "00:00:00"))
    with pytest.raises(ValueError, match="time zone"):
        generic.load_mapping(tmp_path / "naive.yaml")
    (tmp_path / "auto.yaml").write_text(
        ROW_TIME_MAPPING.replace(", names: [label, site, floor]", "")
    )
    with pytest.raises(ValueError, match="csv.names"):
        generic.load_mapping(tmp_path / "auto.yaml")


def test_files_of_one_name_in_two_folders_get_distinct_impression_ids(tmp_path):
    for folder, rows in (("random", "1767600000,a,1,0\n"), ("bts", "1767600001,b,2,1\n")):
        (tmp_path / "logs" / folder).mkdir(parents=True)
        (tmp_path / "logs" / folder / "all.csv").write_text("ts,visitor,creative,clicked\n" + rows)
    mapping = MAPPING.replace('"logs/*.csv"', '"logs/*/all.csv"').replace("  bid: cpc\n", "")
    (tmp_path / "map.yaml").write_text(mapping)
    report = ingest("generic", tmp_path / "map.yaml", tmp_path / "data", tmp_path / "reports")
    assert report.tables["impressions"].rows_written == 2 and report.rows_quarantined == 0
