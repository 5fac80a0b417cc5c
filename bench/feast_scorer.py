"""The serving benchmark's baseline: the same app, models and auction, reading online
features through Feast's SDK (``FeatureStore.get_online_features``) as a Feast user
would, instead of the column-wise reader.

Per auction: one SDK call for the candidates' profiles (to learn their campaign,
advertiser and category), then one for every feature of both feature services and the
auction's views with complete entity rows. Feast's online path ignores TTLs; that is
kept (the baseline is Feast as shipped).

    uvicorn bench.feast_scorer:app
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pandas as pd
from fastapi import FastAPI

from feature_repo import contract
from serving import app as serving_app
from serving import scoring
from serving.scoring import AUCTION_COLUMNS, AdProfile, Fetched, Request, Scorer
from serving.service import Service

PROFILE = [f"{contract.AD_PROFILE.name}:{f.name}" for f in contract.AD_PROFILE.features]


@dataclass
class SdkFetched(Fetched):
    values: dict = field(default_factory=dict)  # Feast's to_dict() of every feature


class FeastSdkScorer(Scorer):
    """Scorer whose fetch and assembly go through Feast's SDK."""

    store = None

    def _store(self):
        if self.store is None:
            from feast import FeatureStore

            from core.settings import get_settings

            self.store = FeatureStore(repo_path=str(get_settings().feature_repo))
        return self.store

    async def fetch(self, client, request: Request) -> Fetched:
        # The SDK is synchronous: run it off the event loop, as a FastAPI user would.
        return await asyncio.to_thread(self._fetch, request)

    def _fetch(self, request: Request) -> SdkFetched:
        store = self._store()
        ads = request.ad_ids.tolist()
        profiles = store.get_online_features(
            features=PROFILE, entity_rows=[{"ad_id": a} for a in ads]
        ).to_dict()
        known = [
            AdProfile(c, v, cat, b, t)
            for c, v, cat, b, t in zip(
                profiles[scoring.AD_CAMPAIGN],
                profiles[scoring.AD_ADVERTISER],
                profiles[scoring.AD_CATEGORY],
                profiles[scoring.AD_BID],
                profiles[scoring.AD_BID_TYPE],
                strict=True,
            )  # fmt: skip
        ]
        refs = list(
            dict.fromkeys(
                [f"{view}:{name}" for name, (view, _) in self.features.items()]
                + [f"{view}:{name}" for view, name in AUCTION_COLUMNS]
            )
        )
        rows = [
            {
                "user_id": request.user_id,
                "ad_id": a,
                "advertiser_id": p.advertiser_id or 0,
                "campaign_id": p.campaign_id or 0,
                "category": p.category or "",
            }
            for a, p in zip(ads, known, strict=True)
        ]
        values = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        profiles = [p if p.campaign_id is not None else None for p in known]
        return SdkFetched({}, profiles, False, 2, values=values)

    def assemble(self, fetched: Fetched, request: Request) -> dict:
        assert isinstance(fetched, SdkFetched)
        frame = pd.DataFrame(fetched.values)
        columns = super().assemble(Fetched({}, fetched.profiles, False, 0), request)
        for name in self.features:
            columns[name] = frame[name].to_numpy() if name in frame else None
        return columns


class FeastSdkService(Service):
    def __init__(self, settings, client, ctr, cvr) -> None:
        super().__init__(settings, client, ctr, cvr)
        self.scorer = _scorer(self.scorer)

    def swap_models(self, ctr, cvr) -> None:
        super().swap_models(ctr, cvr)
        self.scorer = _scorer(self.scorer)


def _scorer(scorer: Scorer) -> FeastSdkScorer:
    sdk = FeastSdkScorer(scorer.ctr, scorer.cvr, scorer.layout.project.decode())
    sdk.profiles = scorer.profiles
    return sdk


def create_app() -> FastAPI:
    return serving_app.create_app(service=FeastSdkService)


app = create_app()
