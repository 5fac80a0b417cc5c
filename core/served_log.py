"""The served log: a sample of auction winners with the features and scores served.

The scorer appends entries to the Redis stream :data:`SERVED_STREAM` (one JSON document
per winner, field ``entry``); the skew check reads the newest ones back and recomputes
their features through Feast. Both sides go through this module.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

SERVED_STREAM = "adstack:served"
FIELD = "entry"


def encode(entry: dict[str, Any]) -> dict[str, str]:
    """The stream fields of one logged winner."""
    return {FIELD: json.dumps(entry, default=_json)}


def read(client: Any, limit: int = 10_000) -> list[dict[str, Any]]:
    """The newest ``limit`` logged entries through a redis-py client, oldest first."""
    entries = client.xrevrange(SERVED_STREAM, count=limit)
    return [json.loads(fields[FIELD.encode()]) for _, fields in reversed(entries)]


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
