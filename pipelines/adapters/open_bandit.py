"""Open Bandit Dataset (ZOZOTOWN): logged recommendations in three slots.

Each row is one impression of an item at a position (1 to 3), with its click and the
logging policy's propensity (kept as ``logging_propensity`` for off-policy evaluation).
Campaign folders (``all``, ``men``, ``women``) hold separate item sets, so an ad is
``campaign * 1_000_000 + item_id``; the campaign is the folder, the advertiser is the
shop (one advertiser) and the placement is the folder name. The four hashed user
features together stand in for the user id. A click is stamped at the impression time
(the log has no click times). ``item_feature_1`` of ``item_context.csv`` is the ad
category. Both logging policies (``random``, ``bts``) are read; their rows differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from core.ids import hash_ids
from pipelines.adapters.flatlog import synthetic_ids
from pipelines.adapters.reading import RawBatch, read_csv, require_columns, with_row_info

CAMPAIGNS = {"all": 1, "men": 2, "women": 3}
ADVERTISER_ID = 1
COLUMNS = ["timestamp", "item_id", "position", "click", "propensity_score"]
USER_FEATURES = ["user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3"]


def files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*.csv") if p.name != "item_context.csv")


def read(path: Path) -> Iterator[RawBatch]:
    for file in files(path):
        campaign = file.parent.name
        if campaign not in CAMPAIGNS:
            raise ValueError(f"{file}: expected a campaign folder in {sorted(CAMPAIGNS)}")
        campaign_id = CAMPAIGNS[campaign]
        raw = read_csv(file)
        require_columns(raw, COLUMNS + USER_FEATURES, file)
        item = pd.to_numeric(raw["item_id"], errors="coerce")
        ad_id = (campaign_id * 1_000_000 + item).astype("Int64").astype("string")
        categories = _item_categories(file.parent / "item_context.csv")
        user_key = raw[USER_FEATURES[0]].astype("string")
        for feature in USER_FEATURES[1:]:
            user_key = user_key + "|" + raw[feature].astype("string")
        flat = pd.DataFrame(
            {
                "impression_id": synthetic_ids(
                    f"open_bandit/{file.parent.parent.name}/{campaign}/{file.name}", raw["_row"]
                ),
                "event_timestamp": raw["timestamp"],
                "user_id": hash_ids(user_key),
                "ad_id": ad_id.fillna(raw["item_id"]),
                "campaign_id": str(campaign_id),
                "advertiser_id": str(ADVERTISER_ID),
                "category": item.map(categories).astype("string"),
                "format": "native",
                "bid_type": "CPC",
                "placement": campaign,
                "position": raw["position"],
                "click": raw["click"],
                "logging_propensity": raw["propensity_score"],
            }
        )
        yield RawBatch(file, with_row_info(flat, raw), raw)


def _item_categories(path: Path) -> dict[float, str]:
    if not path.is_file():
        return {}
    items = pd.read_csv(path, dtype=str)
    return dict(zip(pd.to_numeric(items["item_id"]), items["item_feature_1"], strict=True))
