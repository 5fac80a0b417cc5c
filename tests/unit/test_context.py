"""Declared context: from a mapping's ``context`` section through ingest into typed
impressions columns, the declarations kept next to the events, and the scorer's check
of a request's context."""

import pandas as pd
import pytest

from adstack.flows import ingest
from core import context, events
from core.context import ContextField
from serving import schemas
from serving.service import ContextRefused, declared_context

MAPPING = """
source: rtb
path: "logs/*.csv"
columns:
  event_timestamp: ts
  user_id: visitor
  ad_id: creative
  click: clicked
hash_ids: [user_id, ad_id]
context:
  domain: {column: site, kind: categorical}
  floor_price: {column: floor, kind: numeric}
"""


def write(folder, rows: str) -> None:
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs" / "day.csv").write_text("ts,visitor,creative,clicked,site,floor\n" + rows)
    (folder / "map.yaml").write_text(MAPPING)


def test_context_fields_become_typed_impression_columns(tmp_path):
    write(
        tmp_path,
        "2026-03-02T10:00:00Z,u1,cr-1,1,news.example,0.25\n"
        "2026-03-02T10:01:00Z,u2,cr-2,0,games.example,\n"
        "2026-03-02T10:02:00Z,u3,cr-1,0,news.example,cheap\n",
    )
    report = ingest("generic", tmp_path / "map.yaml", tmp_path / "data", tmp_path / "reports")
    # A numeric field that does not parse quarantines its row; an empty one is missing.
    assert report.tables["impressions"].rows_written == 2
    assert report.tables["impressions"].reasons == {"parse:ctx_floor_price": 1}
    fields = context.declared(tmp_path / "data")
    assert fields == (ContextField("domain", "categorical"), ContextField("floor_price", "numeric"))
    table = events.read_table(context.impressions_table(fields), tmp_path / "data" / "events")
    assert table.schema.field("ctx_domain").type == "string"
    assert table.schema.field("ctx_floor_price").type == "double"
    frame = table.to_pandas().sort_values("event_timestamp")
    assert frame["ctx_domain"].tolist() == ["news.example", "games.example"]
    assert frame["ctx_floor_price"].iloc[0] == 0.25 and pd.isna(frame["ctx_floor_price"].iloc[1])
    # The canonical reader without the declarations still reads the base columns.
    assert events.read_table(events.IMPRESSIONS, tmp_path / "data" / "events").num_rows == 2


def test_a_field_cannot_change_its_kind(tmp_path):
    context.declare(tmp_path, (ContextField("domain", "categorical"),))
    context.declare(tmp_path, (ContextField("exchange", "categorical"),))
    with pytest.raises(ValueError, match="'domain' is declared categorical"):
        context.declare(tmp_path, (ContextField("domain", "numeric"),))
    assert [f.name for f in context.declared(tmp_path)] == ["domain", "exchange"]
    for bad in ("Domain", "device", "9lives"):
        with pytest.raises(ValueError, match="context field"):
            ContextField(bad, "categorical")


def test_the_scorer_takes_declared_fields_by_name_and_refuses_the_rest():
    declared = {"domain": "categorical", "floor_price": "numeric"}
    request = schemas.Context(device="phone", domain="news.example", floor_price=2)
    assert declared_context(request, declared) == {"domain": "news.example", "floor_price": 2.0}
    assert declared_context(schemas.Context(domain=7), declared) == {"domain": "7"}
    with pytest.raises(ContextRefused, match=r"unknown context fields \['city'\]"):
        declared_context(schemas.Context(city="Oslo"), declared)
    with pytest.raises(ContextRefused, match="floor_price' is numeric"):
        declared_context(schemas.Context(floor_price="high"), declared)
    with pytest.raises(ContextRefused, match="domain' is categorical"):
        declared_context(schemas.Context(domain=["a"]), declared)
