"""The serving benchmark's baseline: the same app, models and auction, reading online
features through Feast's SDK (``FeatureStore.get_online_features``) as a Feast user
would, instead of the column-wise reader. It is held to ours' rules:

- **Read deadline.** The service bounds this ``fetch`` as it bounds ours: past
  ``redis_deadline_ms + redis_deadline_per_candidate_ms * candidates`` the request is
  answered degraded (cached profiles, no features) and counted degraded in the answer
  and the metrics. ``bench.serving`` starts both servers with the same settings.
- **Caching.** Like ours (``serving/scoring.py``), the ad -> (campaign, advertiser,
  category, bid, bid type) mapping of every ad read is kept in process and refreshed by
  every read of the ad. One SDK call per auction reads the candidates' profiles with
  every feature of both feature services and the auction's columns, its entity rows
  completed from that mapping; candidates whose profile was unknown or has changed cost
  a second call for the views keyed by campaign, advertiser or category (ours' second
  round trip). Feature view definitions are read once per process (registry
  ``cache_ttl_seconds: 0``), as ours reads its layout once from the manifests.

What still differs, each measured or argued small:

- The SDK is synchronous, so the call runs in a thread, which cannot be cancelled: a
  call past the deadline runs to its end (its features unused; the profiles it read are
  cached, the second call is skipped), where ours is cancelled at once. Under overload
  that spent CPU is the baseline's; ours does not spend it.
- Every row of one call needs every join key: a candidate whose profile is not known
  yet carries campaign 0, advertiser 0 and category "" (no such rows; Feast reads each
  distinct key once, so at most three extra keys per call). A changed candidate's
  second call may re-read a campaign or advertiser another candidate already read;
  ours reads each once.
- Feast checks the registry file's modification time on every call (a ``stat``).
- Feast's online read ignores the views' TTLs; ours drops expired rows. No row of the
  benchmark's data is past its TTL at the requests' time, so nothing differs there.

    uvicorn bench.feast_scorer:app
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
from fastapi import FastAPI

from feature_repo import contract
from serving import app as serving_app
from serving import scoring
from serving.scoring import AdProfile, Fetched, Request, Scorer
from serving.service import Service

PROFILE = [f"{contract.AD_PROFILE.name}:{f.name}" for f in contract.AD_PROFILE.features]
# Join keys known only once the ad's profile is: views keyed by them need the profile.
PROFILE_KEYS = {"advertiser_id", "campaign_id", "category"}


@dataclass
class SdkFetched(Fetched):
    values: dict = field(default_factory=dict)  # Feast's to_dict() of every feature


class FeastSdkScorer(Scorer):
    """Scorer whose fetch and assembly go through Feast's SDK."""

    store = None

    def __init__(self, ctr, cvr, project: str = "adstack") -> None:
        super().__init__(ctr, cvr, project)
        views = {name: view for name, (view, _) in self.features.items()}
        views.update({f.name: contract.AD_PROFILE.name for f in contract.AD_PROFILE.features})
        self.refs = [f"{view}:{name}" for name, view in views.items()]
        # Read again, by the fresh keys, for candidates whose profile was unknown or changed.
        self.keyed = [n for n, view in views.items() if PROFILE_KEYS & set(_join_keys(view))]
        self.keyed_refs = [f"{views[name]}:{name}" for name in self.keyed]

    def _store(self):
        if self.store is None:
            from feast import FeatureStore
            from feast.repo_config import load_repo_config

            from core.settings import get_settings

            repo = get_settings().feature_repo
            config = load_repo_config(repo, repo / "feature_store.yaml")
            config.registry.cache_ttl_seconds = 0  # 0: cached for the process's life
            self.store = FeatureStore(repo_path=str(repo), config=config)
        return self.store

    async def fetch(self, client, request: Request) -> Fetched:
        # The SDK is synchronous: run it off the event loop, as a FastAPI user would.
        answered = threading.Event()  # set once the service has answered degraded
        try:
            return await asyncio.to_thread(self._fetch, request, answered)
        except asyncio.CancelledError:
            answered.set()
            raise

    def _fetch(self, request: Request, answered: threading.Event) -> SdkFetched:
        store = self._store()
        ads = request.ad_ids.tolist()
        cached = [self.profiles.get(a) for a in ads]
        rows = _entity_rows(request.user_id, ads, cached)
        values = store.get_online_features(features=self.refs, entity_rows=rows).to_dict()
        profiles = self._profiles_of(values, ads)
        changed = [
            i
            for i, (fresh, old) in enumerate(zip(profiles, cached, strict=True))
            if fresh is not None and fresh != old
        ]
        calls = 1
        if changed and self.keyed_refs and not answered.is_set():
            rows = _entity_rows(
                request.user_id, [ads[i] for i in changed], [profiles[i] for i in changed]
            )
            more = store.get_online_features(features=self.keyed_refs, entity_rows=rows).to_dict()
            for name in self.keyed:
                column = values[name]
                for row, i in enumerate(changed):
                    column[i] = more[name][row]
            calls = 2
        return SdkFetched({}, profiles, False, calls, values=values)

    def _profiles_of(self, values: dict, ads: list[int]) -> list[AdProfile | None]:
        """The candidates' profiles from a call's values, cached as ours caches them."""
        out: list[AdProfile | None] = []
        for ad_id, campaign, advertiser, category, bid, bid_type in zip(
            ads,
            values[scoring.AD_CAMPAIGN],
            values[scoring.AD_ADVERTISER],
            values[scoring.AD_CATEGORY],
            values[scoring.AD_BID],
            values[scoring.AD_BID_TYPE],
            strict=True,
        ):
            if campaign is None and advertiser is None:
                out.append(None)
                continue
            profile = AdProfile(campaign, advertiser, category, bid, bid_type)
            self.profiles[ad_id] = profile
            out.append(profile)
        return out

    def assemble(self, fetched: Fetched, request: Request) -> dict:
        if not isinstance(fetched, SdkFetched):  # degraded: no features, as ours
            return super().assemble(fetched, request)
        frame = pd.DataFrame(fetched.values)
        columns = super().assemble(Fetched({}, fetched.profiles, False, 0), request)
        for name in self.features:
            columns[name] = frame[name].to_numpy() if name in frame else None
        return columns


def _join_keys(view: str) -> list[str]:
    return contract.ALL_VIEWS[view].join_keys


def _entity_rows(
    user_id: int, ads: Sequence[int], profiles: Sequence[AdProfile | None]
) -> list[dict]:
    """Complete entity rows (every join key of every view read); an unknown profile's
    keys are placeholders that match no row."""
    return [
        {
            "user_id": user_id,
            "ad_id": a,
            "advertiser_id": (p.advertiser_id if p else None) or 0,
            "campaign_id": (p.campaign_id if p else None) or 0,
            "category": (p.category if p else None) or "",
        }
        for a, p in zip(ads, profiles, strict=True)
    ]


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
