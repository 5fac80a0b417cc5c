"""Materialisation of the batch feature views into the online store.

``materialize_incremental`` keeps ``feast materialize-incremental`` semantics: each
view is loaded from where its last materialisation ended (or ``end - ttl`` the first
time) up to ``end`` inclusive, the newest row per entity wins, rows older than what
Redis holds are skipped, and the interval is recorded in the registry so the next
incremental run, from either tool, continues from it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from feast import FeatureStore


def materialize_incremental(repo_path: Path, end: datetime, views: list[str] | None = None) -> None:
    store = FeatureStore(repo_path=str(repo_path))
    store.materialize_incremental(end_date=end, feature_views=views)
