"""TalkingData AdTracking: mobile ad clicks and the app installs they led to.

The log holds clicks only: every row is a click on an app's ad. Each row becomes an
impression and its click at the same instant (so CTR is 1 by construction: this source
serves the conversion model, not the click model). ``ip`` is the user proxy; ``app`` is
the ad, its campaign and its advertiser; ``channel`` the publisher (placement);
``device`` and ``os`` the device and the user's operating system. ``is_attributed = 1``
with ``attributed_time`` is a conversion (an install, value 1.0). No bids are logged.
Times are UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from pipelines.adapters.flatlog import synthetic_ids
from pipelines.adapters.reading import RawBatch, read_csv, require_columns, with_row_info

COLUMNS = ["ip", "app", "device", "os", "channel", "click_time", "attributed_time", "is_attributed"]


def files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.csv"))


def read(path: Path) -> Iterator[RawBatch]:
    for file in files(path):
        raw = read_csv(file)
        require_columns(raw, COLUMNS, file)
        impression_id = synthetic_ids(f"talkingdata/{file.name}", raw["_row"])
        flat = pd.DataFrame(
            {
                "impression_id": impression_id,
                "event_timestamp": raw["click_time"],
                "user_id": raw["ip"],
                "ad_id": raw["app"],
                "campaign_id": raw["app"],
                "advertiser_id": raw["app"],
                "placement": "channel_" + raw["channel"].astype("string"),
                "device": "device_" + raw["device"].astype("string"),
                "os": "os_" + raw["os"].astype("string"),
                "position": "1",
                "bid_type": "CPA",
                "click": "1",
                "click_timestamp": raw["click_time"],
                "conversion": raw["is_attributed"],
                "conversion_timestamp": raw["attributed_time"],
                "conversion_value": "1.0",
            }
        )
        yield RawBatch(file, with_row_info(flat, raw), raw, time_format="%Y-%m-%d %H:%M:%S")
