"""The online reader's protobuf decoding against Feast's own protobuf classes."""

from __future__ import annotations

import numpy as np
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from serving.online import (
    OnlineLayout,
    decode_numbers,
    decode_string,
    decode_timestamps,
)
from serving.online import _mmh3 as our_mmh3


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
    assert our_mmh3("ad_daily:ad_ctr_7d") == _mmh3("ad_daily:ad_ctr_7d")
    assert user.fields[user.views[0].ts_index] == b"_ts:user_daily"
