"""Feast's Redis layout: the codec against Feast's own protobuf classes, and one round
trip through its column-wise encoders and its decoders."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from core import feast_codec
from core.feast_codec import (
    RowLayout,
    decode_numbers,
    decode_string,
    decode_timestamps,
    field_hash,
    hset_commands,
    redis_keys,
    stored_nanos,
)
from serving.online import OnlineLayout


def test_numbers_match_protobuf_for_every_numeric_type_and_null() -> None:
    protos = [
        Value(int64_val=0),
        Value(int64_val=1),
        Value(int64_val=300),
        Value(int64_val=-5),
        Value(int64_val=2**62 + 12345),
        Value(int64_val=-(2**63)),
        Value(int32_val=77),
        Value(double_val=0.25),
        Value(double_val=-1e-300),
        Value(double_val=0.0),
        Value(float_val=1.5),
        Value(),
        Value(string_val="x"),
    ]
    raw = [p.SerializeToString() for p in protos]
    floats, ints, is_int = decode_numbers(raw)
    for proto, number, integer, flag in zip(protos, floats, ints, is_int, strict=True):
        kind = proto.WhichOneof("val")
        if kind in ("int64_val", "int32_val"):
            assert flag and integer == getattr(proto, kind)
            assert number == float(getattr(proto, kind))
        elif kind in ("double_val", "float_val"):
            assert not flag and number == getattr(proto, kind)
        else:
            assert not flag and np.isnan(number)


def test_strings_and_timestamps_match_protobuf() -> None:
    for text in ["", "CPC", "é" * 100]:
        assert decode_string(Value(string_val=text).SerializeToString()) == text
    assert decode_string(b"") is None
    stamps = [
        Timestamp(seconds=1_767_225_600, nanos=123_456_000),
        Timestamp(seconds=5),
        Timestamp(),
    ]
    decoded = decode_timestamps([t.SerializeToString() for t in stamps] + [b""])
    assert decoded.tolist() == [1_767_225_600_123_456, 5_000_000, 0, 0]


def test_keys_and_fields_are_feasts() -> None:
    layout = OnlineLayout.of(["user_daily", "user_category_daily", "user_profile"])
    user = layout.groups["user_id"]
    assert [v.name for v in user.views] == ["user_daily", "user_profile"]
    expected = serialize_entity_key(
        EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=42)]), 3
    )
    assert user.key([42], layout.project) == expected + b"adstack"
    pair = layout.groups["category+user_id"]
    expected = serialize_entity_key(
        EntityKey(
            join_keys=["category", "user_id"],
            entity_values=[Value(string_val="shoes"), Value(int64_val=-7)],
        ),
        3,
    )
    assert pair.key(["shoes", -7], layout.project) == expected + b"adstack"
    assert user.fields[0] == _mmh3("user_daily:user_impressions_1d")
    assert field_hash("ad_daily", "ad_ctr_7d") == _mmh3("ad_daily:ad_ctr_7d")
    assert user.fields[user.views[0].ts_index] == b"_ts:user_daily"


def test_value_codes_are_feasts() -> None:
    for name in ("STRING", "INT32", "INT64", "DOUBLE", "FLOAT", "BOOL"):
        assert getattr(feast_codec, name) == ValueType[name].value


def _parse_hset(command: bytes) -> list[bytes]:
    """The arguments of one RESP command (bulk strings only)."""
    lines = command.split(b"\r\n")
    count, args, at = int(lines[0][1:]), [], 1
    while len(args) < count:
        args.append(lines[at + 1])
        at += 2
    return args


def test_encoded_rows_decode_to_the_same_values() -> None:
    """What materialisation writes is what the online reader reads, value for value."""
    layout = RowLayout(
        name="ad_daily",
        project=b"adstack",
        join_keys={"ad_id": feast_codec.INT64},
        timestamp_column="event_timestamp",
        features=[
            ("clicks", feast_codec.INT64, field_hash("ad_daily", "clicks")),
            ("ctr", feast_codec.DOUBLE, field_hash("ad_daily", "ctr")),
            ("bid_type", feast_codec.STRING, field_hash("ad_daily", "bid_type")),
        ],
        key_ttl_seconds=None,
    )
    micros = np.array([1_767_225_600_123_456, 5_000_000, 1], np.int64)
    batch = pa.record_batch(
        {
            "ad_id": pa.array([7, -3, 2**40], pa.int64()),
            "clicks": pa.array([0, None, -(2**62)], pa.int64()),
            "ctr": pa.array([0.25, float("nan"), None], pa.float64()),
            "bid_type": pa.array(["CPC", None, "é"], pa.string()),
            "event_timestamp": pa.array(micros, pa.timestamp("us", tz="UTC")),
        }
    )
    keys = redis_keys(layout, batch)
    commands = hset_commands(layout, keys, batch, micros).to_pylist()
    prefix = feast_codec.key_prefix(["ad_id"])
    for row, command in enumerate(commands):
        args = _parse_hset(command)
        assert args[0] == b"HSET"
        ad_id = batch.column("ad_id")[row].as_py()
        assert args[1] == feast_codec.entity_key(prefix, [feast_codec.INT64], [ad_id], b"adstack")
        fields = dict(zip(args[2::2], args[3::2], strict=True))
        assert stored_nanos([fields[b"_ts:ad_daily"]])[0] == micros[row] * 1000
        assert decode_timestamps([fields[b"_ts:ad_daily"]])[0] == micros[row]
        values = [fields[f] for _, _, f in layout.features]
        floats, ints, is_int = decode_numbers(values[:2])
        clicks = batch.column("clicks")[row].as_py()
        assert (bool(is_int[0]), int(ints[0])) == (
            (True, clicks) if clicks is not None else (False, 0)
        )
        ctr = batch.column("ctr")[row].as_py()
        assert floats[1] == ctr if ctr == ctr and ctr is not None else np.isnan(floats[1])
        assert decode_string(values[2]) == batch.column("bid_type")[row].as_py()
