"""From an ad request to calibrated pCTR and pCVR per candidate.

fetch -> assemble -> score. The features the models read are the manifests' (the
feature services they were trained on), assembled with the request-time transforms of
``feature_repo/contract.py::request_features`` and encoded by the manifests' feature
maps: the code training used, so serving cannot compute a feature differently.

One pipelined Redis round trip reads the user, the candidates, their advertisers and
campaigns and the user-by-category rows. Which advertiser, campaign and category an ad
belongs to is in the ad's own profile, so the scorer keeps the ad -> (campaign,
advertiser, category, bid) mapping of every ad it has read; it is refreshed by every
read of the ad (the ad's hash holds its profile), and an ad not yet known, or whose
profile changed, costs one more round trip for its campaign, advertiser and category.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from artifact.feature_map import Masked
from artifact.runtime import LoadedModel
from core.context import PREFIX
from feature_repo import contract
from serving.online import GroupValues, OnlineLayout, OnlineReader

# Entity groups are named by their sorted join keys (serving/online.py): the user's is
# read once per request, the ad's per candidate; every other group's keys come from
# the request, the candidate or its profile (``Scorer.entity_rows``).
USER, AD = "user_id", "ad_id"
# Views the auction reads besides the models' features: the ad's bid and owner, its
# streamed delivery (exploration), the campaign's budget and spend today (pacing).
AUCTION_VIEWS = ("ad_profile", "ad_stream", "campaign_profile", "campaign_stream")
# Names from the contract: the ad profile's columns by their catalog source, the
# streamed 24-hour delivery (exploration), today's spend and the daily budget (pacing).
_AD = {f.source: f.name for f in contract.AD_PROFILE.features}
AD_CAMPAIGN, AD_ADVERTISER, AD_CATEGORY, AD_BID, AD_BID_TYPE = (
    _AD[column] for column in ("campaign_id", "advertiser_id", "category", "bid", "bid_type")
)
_DAY = contract.stream_window("24h")
AD_IMPRESSIONS_24H = contract.feature_name("ad", "impressions", _DAY)
AD_CLICKS_24H = contract.feature_name("ad", "clicks", _DAY)
CAMPAIGN_BUDGET = next(
    f.name for f in contract.CAMPAIGN_PROFILE.features if f.source == "daily_budget"
)
CAMPAIGN_SPEND_TODAY = contract.feature_name("campaign", "spend", contract.TODAY)
AUCTION_COLUMNS = (
    (contract.AD_STREAM.name, AD_IMPRESSIONS_24H),
    (contract.AD_STREAM.name, AD_CLICKS_24H),
    (contract.CAMPAIGN_PROFILE.name, CAMPAIGN_BUDGET),
    (contract.CAMPAIGN_STREAM.name, CAMPAIGN_SPEND_TODAY),
)


# Join keys a candidate's profile gives (the rest come from the request or the ad).
PROFILE_KEYS = ("campaign_id", "advertiser_id", "category")


def _key_value(key: str, request: Request, ad_id: int, profile: AdProfile | None) -> Any:
    if key == "user_id":
        return request.user_id
    if key == "ad_id":
        return ad_id
    if key.startswith(PREFIX):
        return request.context.get(key[len(PREFIX) :])
    return None if profile is None else getattr(profile, key)


@dataclass(frozen=True)
class AdProfile:
    campaign_id: int | None
    advertiser_id: int | None
    category: str | None
    bid: float | None
    bid_type: str | None


@dataclass
class Request:
    """One ad request, column-wise over its candidates (ad ids unique)."""

    user_id: int
    ad_ids: np.ndarray  # int64
    timestamp_micros: int
    position: int
    placement: str | None
    device: str | None
    country: str | None
    # Declared context fields by name (a request may leave any out: filled as missing).
    context: dict[str, str | float | None] = field(default_factory=dict)


@dataclass
class Fetched:
    """Online features of one request; ``degraded`` when Redis could not be read."""

    groups: dict[str, GroupValues]
    profiles: list[AdProfile | None]  # per candidate
    degraded: bool
    round_trips: int
    # Row of each entity in its group's values, by group and join-key values.
    index: dict[str, dict[tuple, int]] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    # Each candidate's entity in every group but the user's (``Scorer.entity_rows``).
    entities: dict[str, list[tuple | None]] = field(default_factory=dict)


@dataclass
class Scored:
    pctr: np.ndarray
    pcvr: np.ndarray
    missing: int  # values filled from the manifests, both models
    columns: dict[str, Any]  # what the models read (for the served-features log)


class Scorer:
    def __init__(self, ctr: LoadedModel, cvr: LoadedModel | None, project: str = "adstack") -> None:
        self.ctr, self.cvr = ctr, cvr
        self.features = {
            f["name"]: (f["view"], f["dtype"])
            for model in (ctr, cvr)
            if model is not None
            for f in model.manifest.features
        }
        dtypes = {f.name: f.dtype for spec in contract.ALL_VIEWS.values() for f in spec.features}
        self.features.update({name: (view, dtypes[name]) for view, name in AUCTION_COLUMNS})
        # Read only what the models and the auction use (the ad profile in full: it says
        # which campaign, advertiser and category to read next).
        wanted: dict[str, set[str]] = {view: set() for view in AUCTION_VIEWS}
        wanted["ad_profile"] = set(contract.AD_PROFILE.feature_names)
        for name, (view, _) in self.features.items():
            wanted.setdefault(view, set()).add(name)
        self.layout = OnlineLayout.of(wanted, project)
        # Declared context fields the models read: name -> kind.
        self.context = {
            f["name"]: f["kind"]
            for model in (ctr, cvr)
            if model is not None
            for f in model.manifest.context
        }
        self.reader = OnlineReader(self.layout)
        self.profiles: dict[int, AdProfile] = {}
        self.view_group = {
            v.name: g for g, group in self.layout.groups.items() for v in group.views
        }
        # Groups besides the user and the ad, and those keyed by a profile's fields.
        self.other_groups = [g for g in self.layout.groups if g not in (USER, AD)]
        self.profile_groups = [
            g for g in self.other_groups if set(self.layout.groups[g].join_keys) & set(PROFILE_KEYS)
        ]

    # ------------------------------------------------------------------ fetch

    def entity_rows(
        self, group: str, request: Request, profiles: Sequence[AdProfile | None]
    ) -> list[tuple | None]:
        """Each candidate's entity of ``group``: its join key values in the group's
        order, or None when one is unknown (an ad without a profile, a context field the
        request left out). Keys come from the request (user, declared context fields),
        the candidate (ad) or its profile (campaign, advertiser, category)."""
        keys = self.layout.groups[group].join_keys
        rows: list[tuple | None] = []
        for ad_id, profile in zip(request.ad_ids.tolist(), profiles, strict=True):
            values = tuple(_key_value(key, request, ad_id, profile) for key in keys)
            rows.append(None if None in values else values)
        return rows

    @staticmethod
    def _plan(entities: dict[str, list[tuple | None]]) -> dict[str, list]:
        """The distinct entities of each group over the candidates."""
        plan: dict[str, list] = {}
        for group, rows in entities.items():
            distinct = dict.fromkeys(r for r in rows if r)
            if distinct:
                plan[group] = [list(r) for r in distinct]
        return plan

    async def fetch(self, client: Any, request: Request) -> Fetched:
        """Read every group the models and the auction need; raises on Redis errors (the
        caller bounds it with its deadline and answers degraded). Groups keyed by a
        profile's fields are planned from the cached profiles and read again for the
        candidates whose profile turned out different."""
        cached = [self.profiles.get(int(a)) for a in request.ad_ids.tolist()]
        entities = {g: self.entity_rows(g, request, cached) for g in self.other_groups}
        first = {USER: [[request.user_id]], AD: [[a] for a in request.ad_ids.tolist()]}
        first.update(self._plan(entities))
        groups = await self.reader.read(client, first, request.timestamp_micros)
        profiles = self._profiles(groups[AD], request.ad_ids)
        round_trips = 1
        if profiles != cached:
            planned = {g: {tuple(r) for r in rows} for g, rows in first.items()}
            for g in self.profile_groups:
                entities[g] = self.entity_rows(g, request, profiles)
            more = {
                g: [r for r in rows if tuple(r) not in planned.get(g, set())]
                for g, rows in self._plan({g: entities[g] for g in self.profile_groups}).items()
            }
            more = {g: rows for g, rows in more.items() if rows}
            if more:
                extra = await self.reader.read(client, more, request.timestamp_micros)
                round_trips += 1
                for g, values in extra.items():
                    groups[g] = GroupValues.concat(groups[g], values) if g in groups else values
                    first[g] = [*first.get(g, []), *more[g]]
        index = {g: {tuple(r): i for i, r in enumerate(rows)} for g, rows in first.items()}
        expired = {
            view: count for g in groups.values() for view, count in g.expired.items() if count
        }
        entities[AD] = [(a,) for a in request.ad_ids.tolist()]
        return Fetched(groups, profiles, False, round_trips, index, expired, entities)

    def degraded(self, request: Request) -> Fetched:
        """No Redis: cached ad profiles, every feature missing (filled from the manifests)."""
        profiles = [self.profiles.get(int(a)) for a in request.ad_ids.tolist()]
        return Fetched({}, profiles, True, 0)

    def _profiles(self, ads: GroupValues, ad_ids: np.ndarray) -> list[AdProfile | None]:
        out: list[AdProfile | None] = []
        campaign, has_campaign = ads.integer(AD_CAMPAIGN)
        advertiser, has_advertiser = ads.integer(AD_ADVERTISER)
        bids = ads.number(AD_BID)
        for row, ad_id in enumerate(ad_ids.tolist()):
            if not (has_campaign[row] or has_advertiser[row]):
                out.append(None)
                continue
            profile = AdProfile(
                int(campaign[row]) if has_campaign[row] else None,
                int(advertiser[row]) if has_advertiser[row] else None,
                ads.strings[AD_CATEGORY][row],
                None if np.isnan(bids[row]) else float(bids[row]),
                ads.strings[AD_BID_TYPE][row],
            )
            self.profiles[ad_id] = profile
            out.append(profile)
        return out

    # ------------------------------------------------------------------ assemble

    def column(self, fetched: Fetched, name: str, taken: dict[str, GroupValues]) -> Any:
        """One feature over the candidates: a broadcast scalar for user-level features.
        ``taken[group]`` = the group's values gathered per candidate."""
        view, dtype = self.features[name]
        group = self.view_group[view]
        if group == USER:
            values = fetched.groups.get(USER)
            return None if values is None else values.value(name, 0)
        values = taken.get(group)
        if values is None:  # degraded, or no candidate has an entity of the group
            return None
        if dtype == contract.STRING:
            return values.strings[name]
        if dtype == contract.INT64:
            return Masked(*values.integer(name))
        return values.number(name)

    @staticmethod
    def _taken(fetched: Fetched, keys: dict[str, list]) -> dict[str, GroupValues]:
        """Each group's values gathered per candidate (one fancy index per group)."""
        out = {}
        for group, wanted in keys.items():
            index = fetched.index.get(group)
            values = fetched.groups.get(group)
            if index is None or values is None:
                continue
            at = np.array([index.get(k, -1) if k is not None else -1 for k in wanted], np.int64)
            out[group] = values.take(np.maximum(at, 0), at >= 0)
        return out

    def assemble(self, fetched: Fetched, request: Request) -> dict[str, Any]:
        """Every column either model reads, in the shape the feature maps encode."""
        profiles = fetched.profiles
        campaign = [p.campaign_id if p else None for p in profiles]
        advertiser = [p.advertiser_id if p else None for p in profiles]
        category = [p.category if p else None for p in profiles]
        # Planned by fetch with the final profiles; a degraded answer has none (and no
        # values to gather).
        keys = fetched.entities
        contextual = contract.request_features(
            np.array([request.timestamp_micros]),
            np.array([request.position]),
            np.array([request.placement], dtype=object),
            np.array([request.device], dtype=object),
            np.array([request.country], dtype=object),
        )
        columns: dict[str, Any] = {name: values[0] for name, values in contextual.items()}
        columns["hour_of_day"] = int(columns["hour_of_day"])
        columns["day_of_week"] = int(columns["day_of_week"])
        columns["position"] = int(columns["position"])
        columns["user_id"] = request.user_id
        columns["ad_id"] = request.ad_ids
        columns["campaign_id"] = _masked(campaign)
        columns["advertiser_id"] = _masked(advertiser)
        columns["category"] = np.array(category, dtype=object)
        for name in self.context:
            columns[PREFIX + name] = request.context.get(name)
        taken = self._taken(fetched, keys)
        for name in self.features:
            columns[name] = self.column(fetched, name, taken)
        return columns

    def score(
        self, columns: Mapping[str, Any], rows: int, cvr_rows: np.ndarray | None = None
    ) -> Scored:
        """pCTR for every row; pCVR for ``cvr_rows`` only (default all; NaN elsewhere,
        and everywhere without a conversion model)."""
        pctr, missing_ctr = self.ctr.predict(columns, rows)
        pcvr = np.full(rows, np.nan)
        missing = sum(missing_ctr.values())
        if self.cvr is None:
            pass
        elif cvr_rows is None or len(cvr_rows) == rows:
            pcvr, missing_cvr = self.cvr.predict(columns, rows)
            missing += sum(missing_cvr.values())
        elif len(cvr_rows):
            pcvr[cvr_rows], missing_cvr = self.cvr.predict(take(columns, cvr_rows), len(cvr_rows))
            missing += sum(missing_cvr.values())
        return Scored(pctr, pcvr, missing, dict(columns))

    def fill_cvr(self, scored: Scored, rows: np.ndarray) -> None:
        """pCVR for ``rows`` that were not scored yet (CPC winners, for the response)."""
        todo = rows[np.isnan(scored.pcvr[rows])]
        if len(todo) and self.cvr is not None:
            scored.pcvr[todo], _ = self.cvr.predict(take(scored.columns, todo), len(todo))


def take(columns: Mapping[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The given rows of assembled columns (scalars are broadcast, so kept)."""
    out: dict[str, Any] = {}
    for name, column in columns.items():
        if isinstance(column, Masked):
            out[name] = Masked(column.values[rows], column.present[rows])
        elif column is None or np.ndim(column) == 0:
            out[name] = column
        else:
            out[name] = column[rows]
    return out


def _masked(values: Sequence[int | None]) -> Masked:
    present = np.array([v is not None for v in values], dtype=bool)
    return Masked(np.array([v or 0 for v in values], dtype=np.int64), present)
