"""A simulated ad marketplace with a hidden ground truth.

The world: users with latent interests over ad categories, advertisers running
campaigns of ads (CPC or CPA, with bids and daily budgets), and new ads arriving every
day (cold start). Each request shows one to four ads in ranked slots. Whether an
impression is clicked comes from a hidden logistic model:

    logit P(click) = base + user-by-category affinity + ad quality + format
                     + log position bias + hour of day + device + placement
                     - fatigue * log(1 + earlier exposures of this user to this ad that day)

and a click converts with a second hidden model (advertiser quality, affinity, device),
after a heavy-tailed delay: lognormal with a one-hour median, so a few conversions
arrive days later. The log is observed at the end of the last simulated day: clicks
and conversions after that instant are not in it (delayed feedback), exactly as a real
log cut at that moment.

The true click probability and the true conversion probability given a click of every
impression go to a separate ground-truth table, never into the events.

Everything is vectorised numpy and deterministic for a seed: day ``d``, chunk ``c``
draws from ``default_rng([seed, d, c])``, so a day's events do not depend on how many
days were simulated before it. Days with more than ``chunk_size`` impressions are
generated in chunks; fatigue then counts exposures within the chunk.

The drift knob changes the world from ``drift_day`` on: ``interest`` moves every
user's affinity towards the first quarter of the categories, ``device`` moves the
device mix towards mobile, ``price`` raises every bid (and so every price paid) by
``PRICE_DRIFT`` (a market where bids went up: same ads, same users, dearer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import events
from core.units import MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_SECOND, instant_micros

DEVICES = ("mobile", "desktop", "tablet")
DEVICE_MIX = np.array([0.60, 0.32, 0.08])
DEVICE_MIX_DRIFTED = np.array([0.85, 0.10, 0.05])
PRICE_DRIFT = 1.5
DRIFT_KINDS = ("interest", "device", "price")
DEVICE_CLICK_EFFECT = np.array([0.15, -0.10, 0.0])
DEVICE_CONVERSION_EFFECT = np.array([-0.25, 0.35, 0.0])
PLACEMENTS = ("feed", "search", "article", "video_pre", "sidebar", "app_banner")
PLACEMENT_MIX = np.array([0.34, 0.22, 0.18, 0.10, 0.08, 0.08])
PLACEMENT_CLICK_EFFECT = np.array([0.0, 0.45, -0.15, 0.10, -0.55, -0.30])
FORMATS = ("banner", "native", "video")
FORMAT_CLICK_EFFECT = np.array([-0.30, 0.15, 0.25])
COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "ES", "IT")
COUNTRY_MIX = np.array([0.30, 0.10, 0.10, 0.08, 0.12, 0.08, 0.07, 0.06, 0.05, 0.04])
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("female", "male", "unknown")
OPERATING_SYSTEMS = ("android", "ios", "windows", "macos", "linux")
# Relative click-through by slot: the ranked list's first slot is seen most.
POSITION_BIAS = np.array([1.0, 0.68, 0.48, 0.34])
SLOTS_PER_REQUEST = np.array([0.30, 0.30, 0.25, 0.15])
# Traffic by hour of day (UTC), a diurnal curve peaking in the evening.
HOUR_TRAFFIC = 1.0 + 0.8 * np.sin((np.arange(24) - 9) / 24 * 2 * np.pi)
HOUR_CLICK_EFFECT = 0.12 * np.cos((np.arange(24) - 21) / 24 * 2 * np.pi)
LATENT_DIM = 4


@dataclass(frozen=True)
class SimulationConfig:
    days: int = 14
    users: int = 20_000
    ads: int = 1_000
    impressions_per_day: int = 100_000
    seed: int = 7
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    categories: int = 16
    new_ads_per_day: float = 0.04
    drift_day: int | None = None
    drift_kind: Literal["interest", "device", "price"] = "interest"
    chunk_size: int = 2_000_000
    base_click_logit: float = -3.4
    base_conversion_logit: float = -2.5
    fatigue: float = 0.35
    max_conversion_delay_days: float = 30.0

    def __post_init__(self) -> None:
        if self.days < 1 or self.users < 1 or self.ads < 1 or self.impressions_per_day < 1:
            raise ValueError("days, users, ads and impressions_per_day must all be at least 1")
        if self.categories < 1:
            raise ValueError("categories must be at least 1")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if self.drift_kind not in DRIFT_KINDS:
            raise ValueError(
                f"drift_kind must be one of {', '.join(DRIFT_KINDS)}, not {self.drift_kind!r}"
            )

    def drifts(self, kind: str, day: int) -> bool:
        """Whether the ``kind`` drift knob has changed the world on ``day``."""
        return self.drift_day is not None and day >= self.drift_day and self.drift_kind == kind

    @property
    def start_micros(self) -> int:
        return instant_micros(self.start)

    @property
    def end_micros(self) -> int:
        """The instant the log is observed: the end of the last simulated day."""
        return self.start_micros + self.days * MICROS_PER_DAY

    @property
    def total_ads(self) -> int:
        return self.ads + int(round(self.ads * self.new_ads_per_day)) * self.days


@dataclass
class World:
    """The hidden state the events are drawn from. Arrays are indexed by id - 1."""

    config: SimulationConfig
    user_affinity: np.ndarray  # (users, categories) float32
    user_activity_cdf: np.ndarray  # (users,) float64
    user_device: np.ndarray  # (users,) int8 preferred device
    user_country: np.ndarray  # (users,) int8
    user_age: np.ndarray
    user_gender: np.ndarray
    user_os: np.ndarray
    ad_campaign: np.ndarray  # (ads,) int64 campaign id
    ad_advertiser: np.ndarray
    ad_category: np.ndarray  # (ads,) int16
    ad_format: np.ndarray
    ad_quality: np.ndarray  # (ads,) float32, the hidden click quality
    ad_bid_type: np.ndarray  # (ads,) 0 = CPC, 1 = CPA
    ad_bid: np.ndarray
    ad_created_micros: np.ndarray
    campaign_advertiser: np.ndarray
    campaign_budget: np.ndarray
    campaign_created_micros: np.ndarray
    advertiser_conversion_quality: np.ndarray
    # Ads sorted by (category, creation time): the index the ad picker searches.
    ads_by_category: np.ndarray = field(init=False)
    category_keys: np.ndarray = field(init=False)
    category_start: np.ndarray = field(init=False)
    created_sorted: np.ndarray = field(init=False)
    ads_by_created: np.ndarray = field(init=False)
    _category_cdf: dict[bool, np.ndarray] = field(init=False, default_factory=dict)
    _drifted_affinity: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        span = np.int64(2**52)
        keys = self.ad_category.astype(np.int64) * span + (
            self.ad_created_micros - self.config.start_micros + span // 2
        )
        self.ads_by_category = np.argsort(keys, kind="stable")
        self.category_keys = keys[self.ads_by_category]
        self.category_start = np.searchsorted(
            self.category_keys, np.arange(self.config.categories + 1, dtype=np.int64) * span
        )
        self.ads_by_created = np.argsort(self.ad_created_micros, kind="stable")
        self.created_sorted = self.ad_created_micros[self.ads_by_created]

    def affinity_on(self, day: int) -> np.ndarray:
        cfg = self.config
        if not cfg.drifts("interest", day):
            return self.user_affinity
        if self._drifted_affinity is None:
            shifted = self.user_affinity.copy()
            boosted = max(1, cfg.categories // 4)
            shifted[:, :boosted] += 1.2
            shifted[:, boosted:] -= 0.3
            self._drifted_affinity = shifted
        return self._drifted_affinity

    def category_cdf_on(self, day: int) -> np.ndarray:
        """Users' interest distributions over categories (softmax of affinity), flattened.

        Row ``u`` holds ``u + cumulative probabilities``, so the whole array is sorted.
        """
        drifted = self.affinity_on(day) is not self.user_affinity
        if drifted not in self._category_cdf:
            affinity = self.affinity_on(day).astype(np.float64)
            weights = np.exp(affinity - affinity.max(axis=1, keepdims=True))
            cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
            cdf[:, -1] = 1.0
            self._category_cdf[drifted] = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()
        return self._category_cdf[drifted]

    def device_mix_on(self, day: int) -> np.ndarray:
        return DEVICE_MIX_DRIFTED if self.config.drifts("device", day) else DEVICE_MIX

    def bid_factor_on(self, day: int) -> float:
        return PRICE_DRIFT if self.config.drifts("price", day) else 1.0


def build_world(config: SimulationConfig) -> World:
    rng = np.random.default_rng([config.seed, 1_000_003])
    n_users, n_ads, n_cats = config.users, config.total_ads, config.categories
    n_campaigns = max(1, config.ads // 8)
    n_advertisers = max(1, config.ads // 25)

    user_latent = rng.normal(0.0, 1.0, (n_users, LATENT_DIM))
    category_latent = rng.normal(0.0, 1.0, (n_cats, LATENT_DIM))
    affinity = (user_latent @ category_latent.T) / math.sqrt(LATENT_DIM)
    activity = rng.lognormal(0.0, 1.0, n_users)

    advertiser_category = rng.integers(0, n_cats, n_advertisers)
    campaign_advertiser = rng.integers(0, n_advertisers, n_campaigns)
    campaign_bid_type = (rng.random(n_campaigns) < 0.3).astype(np.int8)
    ad_campaign = rng.integers(0, n_campaigns, n_ads)
    ad_advertiser = campaign_advertiser[ad_campaign]
    own_category = rng.random(n_ads) < 0.8
    ad_category = np.where(
        own_category, advertiser_category[ad_advertiser], rng.integers(0, n_cats, n_ads)
    )
    ad_bid_type = campaign_bid_type[ad_campaign]
    ad_bid = np.where(
        ad_bid_type == 0, rng.lognormal(math.log(0.6), 0.4, n_ads), rng.lognormal(3.0, 0.5, n_ads)
    ).round(4)
    # The first `ads` exist before the start; the rest arrive evenly, one batch a day.
    per_day = int(round(config.ads * config.new_ads_per_day))
    created = np.empty(n_ads, dtype=np.int64)
    created[: config.ads] = config.start_micros - rng.integers(
        MICROS_PER_DAY, 60 * MICROS_PER_DAY, config.ads
    )
    if per_day:
        arrival_day = np.repeat(np.arange(config.days, dtype=np.int64), per_day)
        created[config.ads :] = (
            config.start_micros
            + arrival_day * MICROS_PER_DAY
            + rng.integers(0, MICROS_PER_DAY, arrival_day.size)
        )
    campaign_created = np.full(n_campaigns, config.start_micros - 60 * MICROS_PER_DAY)
    np.minimum.at(campaign_created, ad_campaign, created)
    return World(
        config=config,
        user_affinity=affinity.astype(np.float32),
        user_activity_cdf=np.cumsum(activity) / activity.sum(),
        user_device=rng.choice(3, n_users, p=DEVICE_MIX).astype(np.int8),
        user_country=rng.choice(len(COUNTRIES), n_users, p=COUNTRY_MIX).astype(np.int8),
        user_age=rng.integers(0, len(AGE_BUCKETS), n_users).astype(np.int8),
        user_gender=rng.choice(3, n_users, p=[0.48, 0.47, 0.05]).astype(np.int8),
        user_os=rng.integers(0, len(OPERATING_SYSTEMS), n_users).astype(np.int8),
        ad_campaign=ad_campaign.astype(np.int64) + 1,
        ad_advertiser=ad_advertiser.astype(np.int64) + 1,
        ad_category=ad_category.astype(np.int16),
        ad_format=rng.choice(3, n_ads, p=[0.5, 0.35, 0.15]).astype(np.int8),
        ad_quality=rng.normal(0.0, 0.45, n_ads).astype(np.float32),
        ad_bid_type=ad_bid_type,
        ad_bid=ad_bid,
        ad_created_micros=created,
        campaign_advertiser=campaign_advertiser.astype(np.int64) + 1,
        campaign_budget=rng.lognormal(math.log(400.0), 0.7, n_campaigns).round(2),
        campaign_created_micros=campaign_created,
        advertiser_conversion_quality=rng.normal(0.0, 0.5, n_advertisers).astype(np.float32),
    )


@dataclass
class DayEvents:
    """One generated chunk: canonical impressions, clicks, conversions and ground truth."""

    impressions: pa.Table
    clicks: pa.Table
    conversions: pa.Table
    ground_truth: pa.Table


def _strings(codes: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), pa.array(names)).cast(
        pa.string()
    )


def _timestamps(micros: np.ndarray) -> pa.Array:
    return pa.array(micros, type=pa.int64()).cast(events.TIMESTAMP)


def _pick_ads(
    world: World, rng: np.random.Generator, users: np.ndarray, ts: np.ndarray, day: int
) -> np.ndarray:
    """Pick an active ad (created before ``ts``) per impression, half of them targeted.

    Targeted picks draw a category from the user's interests (softmax of affinity), then
    an ad of that category; the rest draw uniformly from all active ads.
    """
    n = users.size
    cdf = world.category_cdf_on(day)
    k = world.config.categories
    # Rows of the flattened CDF are offset by the user index, so one sorted search
    # inverts every user's own distribution at once.
    found = np.searchsorted(cdf, users + rng.random(n), side="right")
    category = np.minimum(found - users * k, k - 1).astype(np.int64)
    span = np.int64(2**52)
    start = world.category_start[category]
    end = np.searchsorted(
        world.category_keys, category * span + (ts - world.config.start_micros + span // 2)
    )
    count = end - start
    active_all = np.searchsorted(world.created_sorted, ts)
    u = rng.random(n)
    targeted = (rng.random(n) < 0.5) & (count > 0)
    from_category = world.ads_by_category[np.minimum(start + (u * count).astype(np.int64), end - 1)]
    anywhere = world.ads_by_created[np.minimum((u * active_all).astype(np.int64), active_all - 1)]
    return np.where(targeted, from_category, anywhere)


def _earlier_exposures(users: np.ndarray, ads: np.ndarray, n_ads: int) -> np.ndarray:
    """For each impression (in time order), how often this user saw this ad before it."""
    pair = users.astype(np.int64) * n_ads + ads
    order = np.argsort(pair, kind="stable")
    sorted_pairs = pair[order]
    group_start = np.r_[True, sorted_pairs[1:] != sorted_pairs[:-1]]
    starts = np.flatnonzero(group_start)
    run_index = np.arange(pair.size) - np.repeat(starts, np.diff(np.r_[starts, pair.size]))
    exposures = np.empty(pair.size, dtype=np.int64)
    exposures[order] = run_index
    return exposures


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Shown:
    """A chunk's impressions before their outcomes: who saw which ad, when and where."""

    day_start: int
    ts: np.ndarray  # UTC micros, in request order
    request_index: np.ndarray  # the request of each impression (0-based in the chunk)
    position: np.ndarray  # 0-based slot within the request
    users: np.ndarray  # 0-based user index
    device: np.ndarray
    placement: np.ndarray
    ads: np.ndarray  # 0-based ad index


@dataclass(frozen=True)
class Outcomes:
    """True probabilities and the sampled clicks and conversions of a chunk."""

    p_click: np.ndarray
    p_conversion: np.ndarray
    click_index: np.ndarray  # impressions clicked
    click_ts: np.ndarray
    converts: np.ndarray  # per click
    conversion_ts: np.ndarray  # per converting click
    conversion_value: np.ndarray
    click_seen: np.ndarray  # before the end of the log
    conversion_seen: np.ndarray


def simulate_chunk(
    world: World, day: int, chunk: int, n_impressions: int, first_id: int
) -> DayEvents:
    """Generate ``n_impressions`` impressions of ``day`` with ids from ``first_id``.

    The chunk's draws come from one generator seeded by (seed, day, chunk), in a fixed
    order: requests, outcomes, then prices."""
    rng = np.random.default_rng([world.config.seed, day, chunk])
    shown = simulate_requests(world, rng, day, n_impressions)
    outcomes = simulate_outcomes(world, rng, day, shown)
    return chunk_tables(world, rng, shown, outcomes, first_id, world.bid_factor_on(day))


def simulate_requests(
    world: World, rng: np.random.Generator, day: int, n_impressions: int
) -> Shown:
    """Requests with 1-4 ranked slots each, at diurnal times; impressions follow request
    order."""
    cfg = world.config
    day_start = cfg.start_micros + day * MICROS_PER_DAY
    slots = rng.choice(4, n_impressions // 2 + 8, p=SLOTS_PER_REQUEST) + 1
    ends = np.cumsum(slots)
    n_requests = int(np.searchsorted(ends, n_impressions)) + 1
    slots = slots[:n_requests]
    slots[-1] -= ends[n_requests - 1] - n_impressions
    ends = np.cumsum(slots)
    hour = rng.choice(24, n_requests, p=HOUR_TRAFFIC / HOUR_TRAFFIC.sum())
    request_ts = np.sort(
        day_start + hour * MICROS_PER_HOUR + rng.integers(0, MICROS_PER_HOUR, n_requests)
    )
    request_user = np.searchsorted(world.user_activity_cdf, rng.random(n_requests))
    request_user = np.minimum(request_user, cfg.users - 1)
    # Users mostly keep their own device; the rest follow the day's mix (the drift knob).
    device_mix = world.device_mix_on(day)
    own_device = rng.random(n_requests) < (0.8 if device_mix is DEVICE_MIX else 0.2)
    request_device = np.where(
        own_device, world.user_device[request_user], rng.choice(3, n_requests, p=device_mix)
    )
    request_placement = rng.choice(len(PLACEMENTS), n_requests, p=PLACEMENT_MIX)

    request_index = np.repeat(np.arange(n_requests), slots)
    ts = request_ts[request_index]
    users = request_user[request_index]
    return Shown(
        day_start=day_start,
        ts=ts,
        request_index=request_index,
        position=np.arange(n_impressions) - np.repeat(ends - slots, slots),
        users=users,
        device=request_device[request_index],
        placement=request_placement[request_index],
        ads=_pick_ads(world, rng, users, ts, day),
    )


def simulate_outcomes(world: World, rng: np.random.Generator, day: int, shown: Shown) -> Outcomes:
    """The true click and conversion probabilities of each impression, and draws from
    them; delays and values only for the few impressions that need them."""
    cfg = world.config
    ads, users, device = shown.ads, shown.users, shown.device
    hours = (shown.ts - shown.day_start) // MICROS_PER_HOUR
    affinity = world.affinity_on(day)[users, world.ad_category[ads]]
    exposures = _earlier_exposures(users, ads, cfg.total_ads)
    click_logit = (
        cfg.base_click_logit
        + 0.9 * affinity
        + world.ad_quality[ads]
        + FORMAT_CLICK_EFFECT[world.ad_format[ads]]
        + np.log(POSITION_BIAS[shown.position])
        + HOUR_CLICK_EFFECT[hours]
        + DEVICE_CLICK_EFFECT[device]
        + PLACEMENT_CLICK_EFFECT[shown.placement]
        - cfg.fatigue * np.log1p(exposures)
    )
    p_click = _sigmoid(click_logit)
    conversion_logit = (
        cfg.base_conversion_logit
        + world.advertiser_conversion_quality[world.ad_advertiser[ads] - 1]
        + 0.5 * affinity
        + DEVICE_CONVERSION_EFFECT[device]
    )
    p_conversion = _sigmoid(conversion_logit)

    click_index = np.flatnonzero(rng.random(len(ads)) < p_click)
    click_delay = rng.exponential(20.0, click_index.size) + 1.0
    click_ts = shown.ts[click_index] + (click_delay * MICROS_PER_SECOND).astype(np.int64)
    converts = rng.random(click_index.size) < p_conversion[click_index]
    delay_s = np.minimum(
        rng.lognormal(math.log(3_600.0), 1.8, int(converts.sum())),
        cfg.max_conversion_delay_days * 86_400,
    )
    conversion_ts = click_ts[converts] + (delay_s * MICROS_PER_SECOND).astype(np.int64)
    conversion_value = rng.lognormal(math.log(30.0), 0.8, conversion_ts.size).round(2)
    # The log is cut at the end of the simulation: later clicks and conversions are unseen.
    click_seen = click_ts < cfg.end_micros
    return Outcomes(
        p_click=p_click,
        p_conversion=p_conversion,
        click_index=click_index,
        click_ts=click_ts,
        converts=converts,
        conversion_ts=conversion_ts,
        conversion_value=conversion_value,
        click_seen=click_seen,
        conversion_seen=(conversion_ts < cfg.end_micros) & click_seen[converts],
    )


def chunk_tables(
    world: World,
    rng: np.random.Generator,
    shown: Shown,
    outcomes: Outcomes,
    first_id: int,
    bid_factor: float = 1.0,
) -> DayEvents:
    """The chunk's canonical tables and its ground truth; prices drawn last."""
    n_impressions = len(shown.ads)
    bid = world.ad_bid[shown.ads] * bid_factor
    price = (bid * (0.55 + 0.45 * rng.random(n_impressions))).round(4)
    impression_id = first_id + np.arange(n_impressions, dtype=np.int64)
    clicked = outcomes.click_index
    converted = clicked[outcomes.converts]
    impressions = pa.table(
        {
            "impression_id": impression_id,
            "request_id": (first_id + shown.request_index).astype(np.int64),
            "event_timestamp": _timestamps(shown.ts),
            "user_id": shown.users.astype(np.int64) + 1,
            "ad_id": shown.ads.astype(np.int64) + 1,
            "position": (shown.position + 1).astype(np.int32),
            "placement": _strings(shown.placement, PLACEMENTS),
            "device": _strings(shown.device, DEVICES),
            "country": _strings(world.user_country[shown.users], COUNTRIES),
            "bid": bid,
            "price_paid": price,
            "logging_propensity": pa.nulls(n_impressions, pa.float64()),
        },
        schema=events.IMPRESSIONS.schema,
    )
    clicks = pa.table(
        {
            "impression_id": impression_id[clicked[outcomes.click_seen]],
            "event_timestamp": _timestamps(outcomes.click_ts[outcomes.click_seen]),
        },
        schema=events.CLICKS.schema,
    )
    seen = outcomes.conversion_seen
    conversions = pa.table(
        {
            "impression_id": impression_id[converted[seen]],
            "event_timestamp": _timestamps(outcomes.conversion_ts[seen]),
            "value": outcomes.conversion_value[seen],
        },
        schema=events.CONVERSIONS.schema,
    )
    ground_truth = pa.table(
        {
            "impression_id": impression_id,
            "event_timestamp": _timestamps(shown.ts),
            "p_click": outcomes.p_click,
            "p_conversion_given_click": outcomes.p_conversion,
        },
        schema=GROUND_TRUTH_SCHEMA,
    )
    return DayEvents(impressions, clicks, conversions, ground_truth)


GROUND_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("impression_id", pa.int64(), nullable=False),
        pa.field("event_timestamp", events.TIMESTAMP, nullable=False),
        pa.field("p_click", pa.float64(), nullable=False),
        pa.field("p_conversion_given_click", pa.float64(), nullable=False),
    ]
)


def chunks_of_day(config: SimulationConfig, day: int) -> list[tuple[int, int, int]]:
    """(chunk, size, first impression id) for every chunk of ``day``."""
    per_day = config.impressions_per_day
    n_chunks = max(1, math.ceil(per_day / config.chunk_size))
    sizes = [per_day // n_chunks + (1 if c < per_day % n_chunks else 0) for c in range(n_chunks)]
    first = 1 + day * per_day
    out = []
    for chunk, size in enumerate(sizes):
        out.append((chunk, size, first))
        first += size
    return out


def catalog_tables(world: World) -> dict[str, pa.Table]:
    """The ads, campaigns and users tables of the world."""
    cfg = world.config
    n_ads, n_campaigns = cfg.total_ads, world.campaign_advertiser.size
    ads = pa.table(
        {
            "ad_id": np.arange(1, n_ads + 1, dtype=np.int64),
            "campaign_id": world.ad_campaign,
            "advertiser_id": world.ad_advertiser,
            "category": _strings(
                world.ad_category, tuple(f"cat_{k:02d}" for k in range(cfg.categories))
            ),
            "format": _strings(world.ad_format, FORMATS),
            "bid_type": _strings(world.ad_bid_type, events.BID_TYPES),
            "bid": world.ad_bid,
            "created_at": _timestamps(world.ad_created_micros),
        },
        schema=events.ADS.schema,
    )
    campaigns = pa.table(
        {
            "campaign_id": np.arange(1, n_campaigns + 1, dtype=np.int64),
            "advertiser_id": world.campaign_advertiser,
            "daily_budget": world.campaign_budget,
            "created_at": _timestamps(world.campaign_created_micros),
        },
        schema=events.CAMPAIGNS.schema,
    )
    users = pa.table(
        {
            "user_id": np.arange(1, cfg.users + 1, dtype=np.int64),
            "age_bucket": _strings(world.user_age, AGE_BUCKETS),
            "gender": _strings(world.user_gender, GENDERS),
            "country": _strings(world.user_country, COUNTRIES),
            "os": _strings(world.user_os, OPERATING_SYSTEMS),
            "updated_at": _timestamps(np.full(cfg.users, cfg.start_micros - 30 * MICROS_PER_DAY)),
        },
        schema=events.USERS.schema,
    )
    return {"ads": ads, "campaigns": campaigns, "users": users}


def write_simulation(
    config: SimulationConfig,
    landing: Path,
    ground_truth: Path,
    on_day: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Simulate and write canonical tables under ``landing`` and ground truth apart.

    Impressions and ground truth are written day by day; clicks and conversions (a few
    percent of impressions) are gathered and written at the end, because they spill
    into later dates than the impression that caused them.
    """
    world = build_world(config)
    counts = {name: 0 for name in events.TABLES} | {"ground_truth": 0}
    clicks, conversions = [], []
    for day in range(config.days):
        for chunk, size, first_id in chunks_of_day(config, day):
            day_events = simulate_chunk(world, day, chunk, size, first_id)
            source = f"simulator-{chunk:03d}"
            events.write_partitions(events.IMPRESSIONS, day_events.impressions, landing, source)
            _write_ground_truth(day_events.ground_truth, ground_truth, source)
            clicks.append(day_events.clicks)
            conversions.append(day_events.conversions)
            counts["impressions"] += day_events.impressions.num_rows
            counts["ground_truth"] += day_events.ground_truth.num_rows
        if on_day is not None:
            on_day(day)
    for table, parts in ((events.CLICKS, clicks), (events.CONVERSIONS, conversions)):
        data = pa.concat_tables(parts)
        events.write_partitions(table, data, landing, "simulator-000")
        counts[table.name] = data.num_rows
    for name, data in catalog_tables(world).items():
        events.write_partitions(events.TABLES[name], data, landing, "simulator-000")
        counts[name] = data.num_rows
    return counts


def _write_ground_truth(data: pa.Table, root: Path, source: str) -> None:
    day = np.datetime64(int(data.column("event_timestamp").cast(pa.int64())[0].as_py()), "us")
    directory = root / f"date={day.astype('datetime64[D]')}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, directory / f"{source}.parquet", coerce_timestamps="us")
