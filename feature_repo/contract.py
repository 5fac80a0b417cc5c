"""The feature contract: window lengths, feature names and types, label clocks.

Everything that names a feature is generated here, from one tuple of windows and one
naming helper: the Spark batch job selects its output columns from these specs, the
Feast feature views build their schemas from them, and training and serving import
them. The feature services (``feature_services.py``) choose which views each model
version reads; no other module writes a feature list.

Time semantics. A batch feature row for window end ``E`` (a UTC midnight) is stamped
``event_timestamp = E`` and counts only events strictly before ``E``: the 7-day window
covers ``[E - 7 days, E)``. Feast's point-in-time join takes rows stamped at or before
the entity timestamp, so a row never includes the instant it is joined at.

Events are counted at their own time and credited to the impression they belong to: a
click on day ``d`` counts on day ``d`` even if its impression was the day before. A
click counts only if it came within ``CLICK_WINDOW`` of its impression and a conversion
only within ``ATTRIBUTION_WINDOW`` of its click, the same clocks the labels use, so a
feature never counts an event that the label definition would not.

This module is pure declarations: Feast imports every file of the repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

# Time is int64 microseconds since the epoch, UTC, everywhere (core/units.py builds on
# these two).
MICROS_PER_HOUR = 3_600_000_000
MICROS_PER_DAY = 24 * MICROS_PER_HOUR


@dataclass(frozen=True)
class Window:
    label: str
    length: timedelta

    @property
    def days(self) -> int:
        """Whole days, for the batch windows (which are rolled over daily partials)."""
        return self.length // timedelta(days=1)


BATCH_WINDOWS = (
    Window("1d", timedelta(days=1)),
    Window("7d", timedelta(days=7)),
    Window("30d", timedelta(days=30)),
)
LONGEST_BATCH_WINDOW = max(BATCH_WINDOWS, key=lambda w: w.length)

# Label clocks (DESIGN.md, time semantics). The simulator's clicks come seconds after
# the impression and its conversions after a lognormal delay with a one-hour median.
CLICK_WINDOW = timedelta(hours=1)
ATTRIBUTION_WINDOW = timedelta(days=7)

# Batch views are recomputed once a day; a row stays valid until the next day's row. The
# TTL allows one missed daily run before the offline join treats the entity as unknown.
BATCH_REFRESH = timedelta(days=1)
BATCH_TTL = 2 * BATCH_REFRESH
# Profiles (ad catalog, user profile) hold until replaced: no TTL.
PROFILE_TTL = timedelta(0)

# Beta priors for smoothed rates: the prior mean is the category's rate over the same
# window, its weight is this many pseudo-impressions (CTR) or pseudo-clicks (CVR). A new
# ad therefore starts at its category's rate and moves to its own after a few hundred
# impressions.
CTR_PRIOR_STRENGTH = 200.0
CVR_PRIOR_STRENGTH = 20.0


INT64 = "int64"
FLOAT64 = "float64"
STRING = "string"


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    # For profile features: the canonical catalog column the value is copied from.
    source: str | None = None
    # Valid values, inclusive (None: unbounded on that side); the quality suites check them.
    bounds: tuple[float | None, float | None] | None = None
    # For windowed features: what is measured ("clicks") and over which window ("7d").
    measure: str | None = None
    window: str | None = None


@dataclass(frozen=True)
class Entity:
    name: str
    join_key: str
    dtype: str
    description: str


USER = Entity("user", "user_id", INT64, "A person who sees ads (hashed id).")
AD = Entity("ad", "ad_id", INT64, "One creative of a campaign.")
ADVERTISER = Entity("advertiser", "advertiser_id", INT64, "Who pays; owns campaigns.")
CAMPAIGN = Entity("campaign", "campaign_id", INT64, "A budgeted group of ads.")
CATEGORY = Entity("category", "category", STRING, "The ad's product category.")
ENTITIES: tuple[Entity, ...] = (USER, AD, ADVERTISER, CAMPAIGN, CATEGORY)  # + context keys


@dataclass(frozen=True)
class ViewSpec:
    """One feature view: its entities, its features in order, and how long rows hold."""

    name: str
    entities: tuple[Entity, ...]
    features: tuple[Feature, ...]
    ttl: timedelta
    description: str

    @property
    def join_keys(self) -> list[str]:
        return [e.join_key for e in self.entities]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def feature_name(prefix: str, measure: str, window: Window | StreamWindow | None = None) -> str:
    """``user_clicks_7d``: entity prefix, measure, window label."""
    return f"{prefix}_{measure}" if window is None else f"{prefix}_{measure}_{window.label}"


def windowed(
    prefix: str,
    measures: tuple[tuple[str, str], ...],
    windows: tuple[Window, ...] | tuple[StreamWindow, ...],
) -> tuple[Feature, ...]:
    """Every measure over every window, window-major: ``x_1d, y_1d, x_7d, ...``."""
    return tuple(
        Feature(
            feature_name(prefix, measure, w), dtype, bounds=MEASURE_BOUNDS.get(measure),
            measure=measure, window=w.label,
        )
        for w in windows
        for measure, dtype in measures
    )  # fmt: skip


NON_NEGATIVE = (0.0, None)
PROBABILITY = (0.0, 1.0)
MEASURE_BOUNDS = {
    "impressions": NON_NEGATIVE,
    "clicks": NON_NEGATIVE,
    "conversions": NON_NEGATIVE,
    "distinct_ads": NON_NEGATIVE,
    "spend": NON_NEGATIVE,
    "ctr": PROBABILITY,
    "cvr": PROBABILITY,
    "click_share": PROBABILITY,
}
# A rate's denominator in the same view and window: where the denominator is positive a
# rate must be present (raw rates are null only without a denominator).
RATE_DENOMINATORS = {"ctr": "impressions", "cvr": "clicks"}


# ---------------------------------------------------------------- declared aggregates
#
# Every daily windowed view is a group-by declared here, in the style of Chronon's
# GroupBy: the keys it groups the attributed events by, the aggregations it computes,
# and the windows (BATCH_WINDOWS). The Spark batch job (pipelines/batch_features.py),
# the Feast feature views, the quality suites and the leakage audit all read these
# declarations; none of them names a daily view's features itself.
#
# Aggregations, each computed over every window (window-major in the view):
# - Sum(measure): a count of impressions, clicks or conversions, or spend (money,
#   billed at the click for CPC and at the conversion for CPA: core/units.py);
# - Rate(measure, numerator, denominator): a raw rate, null without a denominator; with
#   ``prior`` (keys of another group-by) it is smoothed towards that group's rate in the
#   same window with a Beta prior of ``strength`` pseudo-events;
# - Distinct(measure, column): distinct values of an event column (ads seen);
# - Share(measure, numerator, of): the key's share of its parent group's numerator
#   (a category's share of the user's clicks);
# plus, outside the windows, Age(name): days from the key's first impression to the
# window end.


@dataclass(frozen=True)
class Sum:
    measure: str  # impressions, clicks, conversions or spend

    @property
    def dtype(self) -> str:
        return FLOAT64 if self.measure == "spend" else INT64


@dataclass(frozen=True)
class Rate:
    measure: str  # ctr, cvr
    numerator: str
    denominator: str
    prior: tuple[str, ...] = ()  # keys of the group whose rate is the prior mean
    strength: float = 0.0  # the prior's weight in pseudo-events of the denominator
    dtype: str = FLOAT64


@dataclass(frozen=True)
class Distinct:
    measure: str  # distinct_ads
    column: str  # ad_id
    dtype: str = INT64


@dataclass(frozen=True)
class Share:
    measure: str  # click_share
    numerator: str  # clicks
    of: tuple[str, ...]  # the parent group's keys (user_id)
    dtype: str = FLOAT64


Aggregation = Sum | Rate | Distinct | Share


@dataclass(frozen=True)
class GroupBy:
    """A daily windowed view declared by its keys and aggregations."""

    name: str
    entities: tuple[Entity, ...]
    prefix: str  # feature names: <prefix>_<measure>_<window>
    aggregations: tuple[Aggregation, ...]
    description: str
    age: Feature | None = None  # days since the key's first impression
    windows: tuple[Window, ...] = BATCH_WINDOWS
    ttl: timedelta = BATCH_TTL

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(e.join_key for e in self.entities)

    @property
    def sums(self) -> tuple[str, ...]:
        """The event measures summed per key and day: every input the aggregations
        read (activity in any of them keeps a key's rows)."""
        needed: list[str] = []
        for a in self.aggregations:
            if isinstance(a, Sum):
                needed.append(a.measure)
            elif isinstance(a, Rate):
                needed += [a.numerator, a.denominator]
            elif isinstance(a, Share):
                needed.append(a.numerator)
        return tuple(dict.fromkeys(needed))

    @property
    def feature_windows(self) -> dict[str, Window]:
        """Each windowed feature's window, by feature name (the age has none)."""
        return {
            feature_name(self.prefix, a.measure, w): w
            for w in self.windows
            for a in self.aggregations
        }

    @property
    def view(self) -> ViewSpec:
        features = windowed(self.prefix, tuple((a.measure, a.dtype) for a in self.aggregations),
                            self.windows)  # fmt: skip
        if self.age is not None:
            features = (*features, self.age)
        return ViewSpec(self.name, self.entities, features, self.ttl, self.description)


SPEND = (("spend", FLOAT64),)
CTR = Rate("ctr", "clicks", "impressions")
CVR = Rate("cvr", "conversions", "clicks")
COUNT_SUMS = (Sum("impressions"), Sum("clicks"), Sum("conversions"))
BY_CATEGORY = ("category",)

AD_AGE = Feature("ad_days_since_first_impression", FLOAT64, bounds=NON_NEGATIVE)

GROUP_BYS: tuple[GroupBy, ...] = (
    GroupBy(
        "user_daily",
        (USER,),
        "user",
        (*COUNT_SUMS, CTR, CVR, Distinct("distinct_ads", "ad_id")),
        "The user's activity over the last 1, 7 and 30 days (raw rates; null without a "
        "denominator).",
    ),
    GroupBy(
        "ad_daily",
        (AD,),
        "ad",
        (
            *COUNT_SUMS,
            Rate("ctr", "clicks", "impressions", BY_CATEGORY, CTR_PRIOR_STRENGTH),
            Rate("cvr", "conversions", "clicks", BY_CATEGORY, CVR_PRIOR_STRENGTH),
        ),
        "The ad's delivery over the last 1, 7 and 30 days; CTR and CVR smoothed towards the "
        "category's rate with a Beta prior.",
        age=AD_AGE,
    ),
    GroupBy(
        "advertiser_daily",
        (ADVERTISER,),
        "advertiser",
        (*COUNT_SUMS, CTR, CVR, Sum("spend")),
        "The advertiser's delivery, rates and spend over the last 1, 7 and 30 days.",
    ),
    GroupBy(
        "campaign_daily",
        (CAMPAIGN,),
        "campaign",
        (*COUNT_SUMS, CTR, CVR, Sum("spend")),
        "The campaign's delivery, rates and spend over the last 1, 7 and 30 days.",
    ),
    GroupBy(
        "user_category_daily",
        (USER, CATEGORY),
        "user_category",
        (
            Sum("impressions"),
            Sum("clicks"),
            Rate("ctr", "clicks", "impressions", BY_CATEGORY, CTR_PRIOR_STRENGTH),
            Share("click_share", "clicks", ("user_id",)),
        ),
        "The user's interest in a category: impressions, clicks, CTR smoothed towards the "
        "category's rate, and the category's share of the user's clicks.",
    ),
)
USER_DAILY, AD_DAILY, ADVERTISER_DAILY, CAMPAIGN_DAILY, USER_CATEGORY_DAILY = (
    g.view for g in GROUP_BYS
)

# ---------------------------------------------------------------- your group-bys
#
# A log's own group-bys are declared in ``group_bys.yaml`` in the feature repo, over its
# declared context fields (core/context.py) and the built-in keys, without Python:
#
#     domain_daily:
#       keys: [domain]                 # context fields, or user, ad, advertiser,
#                                      # campaign, category
#       aggregations: [impressions, clicks, ctr]
#     domain_ad_daily:
#       keys: [domain, ad]
#       aggregations: [impressions, clicks, {ctr: {prior: [ad]}}]   # smoothed
#       services: [ctr_v1]             # default: ctr_v1 and cvr_v1
#
# Aggregations: impressions, clicks, conversions, spend (sums); ctr, cvr (raw rates, or
# smoothed towards the rate of the ``prior`` keys' group, CTR_PRIOR_STRENGTH or
# CVR_PRIOR_STRENGTH pseudo-events). Features are ``<keys joined by _>_<measure>_<window>``
# over BATCH_WINDOWS. A context key is a string entity ``ctx_<name>``.

# The repo's own file: ``ADSTACK_FEATURE_REPO`` when set (the repo adstack's commands
# use), else the folder of this file (the repo Feast imports).
GROUP_BYS_FILE = (
    Path(os.environ.get("ADSTACK_FEATURE_REPO") or Path(__file__).resolve().parent)
    / "group_bys.yaml"
)
BUILT_IN_KEYS = {e.name: e for e in (USER, AD, ADVERTISER, CAMPAIGN, CATEGORY)}
_RATES = {"ctr": (CTR, CTR_PRIOR_STRENGTH), "cvr": (CVR, CVR_PRIOR_STRENGTH)}
DEFAULT_SERVICES = ("ctr_v1", "cvr_v1")


def context_entity(name: str) -> Entity:
    """The entity of a declared (categorical) context field used as a group-by key."""
    return Entity(f"ctx_{name}", f"ctx_{name}", STRING, f"The declared context field {name}.")


def _aggregation(item: str | dict, where: str) -> Aggregation:
    if isinstance(item, str) and item in ("impressions", "clicks", "conversions", "spend"):
        return Sum(item)
    if isinstance(item, str) and item in _RATES:
        return _RATES[item][0]
    if isinstance(item, dict) and len(item) == 1:
        ((measure, options),) = item.items()
        if measure in _RATES and isinstance(options, dict) and set(options) <= {"prior"}:
            rate, strength = _RATES[measure]
            prior = tuple(_key(k, where).join_key for k in options.get("prior", ()))
            return Rate(rate.measure, rate.numerator, rate.denominator, prior, strength)
    raise ValueError(
        f"{where}: aggregation {item!r}; use impressions, clicks, conversions, spend, ctr, "
        "cvr or {ctr: {prior: [keys]}}"
    )


def _key(name: str, where: str) -> Entity:
    if name in BUILT_IN_KEYS:
        return BUILT_IN_KEYS[name]
    if name.isidentifier() and name == name.lower():
        return context_entity(name)
    raise ValueError(f"{where}: key {name!r} is neither {sorted(BUILT_IN_KEYS)} nor a field name")


def declared_group_bys(path: Path = GROUP_BYS_FILE) -> tuple[tuple[GroupBy, tuple[str, ...]], ...]:
    """The group-bys of ``group_bys.yaml`` with the feature services that read them."""
    if not path.exists():
        return ()
    import yaml  # a dependency of Feast: importing it here keeps the module's header pure

    declared = yaml.safe_load(path.read_text()) or {}
    out = []
    for name, spec in declared.items():
        where = f"{path.name}: {name}"
        if not isinstance(spec, dict) or set(spec) - {"keys", "aggregations", "services",
                                                       "description"}:  # fmt: skip
            raise ValueError(f"{where}: give keys, aggregations and optionally services")
        keys = tuple(_key(k, where) for k in spec["keys"])
        group = GroupBy(
            name,
            keys,
            "_".join(k.join_key.removeprefix("ctx_").removesuffix("_id") for k in keys),
            tuple(_aggregation(a, where) for a in spec["aggregations"]),
            spec.get("description") or f"Declared in {path.name}: by {', '.join(spec['keys'])}.",
        )
        out.append((group, tuple(spec.get("services", DEFAULT_SERVICES))))
    return tuple(out)


YOUR_GROUP_BYS = declared_group_bys()
GROUP_BYS = (*GROUP_BYS, *(g for g, _ in YOUR_GROUP_BYS))
GROUP_BY = {g.name: g for g in GROUP_BYS}
# The feature services each declared group-by's view joins.
SERVICES_OF = {g.name: services for g, services in YOUR_GROUP_BYS}
ENTITIES = tuple(dict.fromkeys((*ENTITIES, *(e for g in GROUP_BYS for e in g.entities))))

AD_PROFILE = ViewSpec(
    "ad_profile",
    (AD,),
    (
        Feature("ad_campaign_id", INT64, source="campaign_id"),
        Feature("ad_advertiser_id", INT64, source="advertiser_id"),
        Feature("ad_category", STRING, source="category"),
        Feature("ad_format", STRING, source="format"),
        Feature("ad_bid_type", STRING, source="bid_type"),
        Feature("ad_bid", FLOAT64, source="bid", bounds=NON_NEGATIVE),
    ),
    PROFILE_TTL,
    "The ad catalog: owner, category, format, bid type and catalog bid, known from the "
    "ad's creation.",
)
USER_PROFILE = ViewSpec(
    "user_profile",
    (USER,),
    (
        Feature("user_age_bucket", STRING, source="age_bucket"),
        Feature("user_gender", STRING, source="gender"),
        Feature("user_country", STRING, source="country"),
        Feature("user_os", STRING, source="os"),
    ),
    PROFILE_TTL,
    "Declared and inferred user attributes, as of their last update.",
)

CAMPAIGN_PROFILE = ViewSpec(
    "campaign_profile",
    (CAMPAIGN,),
    (
        Feature("campaign_advertiser_id", INT64, source="advertiser_id"),
        Feature("campaign_daily_budget", FLOAT64, source="daily_budget", bounds=NON_NEGATIVE),
    ),
    PROFILE_TTL,
    "The campaign catalog: owner and daily budget (null: unlimited), the pacing plan's "
    "input. No model reads it.",
)

DAILY_VIEWS = tuple(g.view for g in GROUP_BYS)
# Feature -> the window it aggregates over, for every daily view (a windowed feature's
# name ends with its window's label, so the name alone decides it).
WINDOW_OF = {f: w for g in GROUP_BYS for f, w in g.feature_windows.items()}
# Ages ("days since the key's first impression"): they grow by a day each day.
AGE_FEATURES = tuple(g.age.name for g in GROUP_BYS if g.age is not None)


def warming_up(feature: str, history: timedelta) -> Window | None:
    """The feature's window when it is longer than ``history``, the log its values were
    computed on: such a value keeps growing as the log does, so it means something else
    at serving time than on the rows a model learnt from. None otherwise. (Ages keep
    growing too; the feature map caps them at their training maximum instead.)"""
    window = WINDOW_OF.get(feature)
    return window if window is not None and window.length > history else None


PROFILE_VIEWS = (AD_PROFILE, USER_PROFILE, CAMPAIGN_PROFILE)
# The views the Spark batch job writes, by name.
VIEWS = {spec.name: spec for spec in (*DAILY_VIEWS, *PROFILE_VIEWS)}

# Streaming windows (the stream worker, ``pipelines/stream_features.py``). Each window
# is summed from tiles of its own resolution: a value at ``T`` counts the events in
# ``[floor(T, tile) - length, T)``, so it spans between ``length`` and ``length + tile``
# and changes only when an event arrives or a tile boundary passes. The 5-minute and
# 1-hour windows use 1-minute tiles; 24 hours and "today" (since UTC midnight) use
# 1-hour tiles. Events later than ALLOWED_LATENESS behind the newest event seen are
# not counted; the worker reports them.


@dataclass(frozen=True)
class StreamWindow:
    label: str
    length: timedelta
    tile: timedelta
    # "today": from the UTC midnight at or before T, instead of a fixed length.
    calendar_day: bool = False


MINUTE_TILE = timedelta(minutes=1)
HOUR_TILE = timedelta(hours=1)
STREAM_WINDOWS = (
    StreamWindow("5m", timedelta(minutes=5), MINUTE_TILE),
    StreamWindow("1h", timedelta(hours=1), MINUTE_TILE),
    StreamWindow("24h", timedelta(hours=24), HOUR_TILE),
)
TODAY = StreamWindow("today", timedelta(days=1), HOUR_TILE, calendar_day=True)


def stream_window(label: str) -> StreamWindow:
    """A streamed window by its label ("5m", "1h", "24h", "today")."""
    for window in (*STREAM_WINDOWS, TODAY):
        if window.label == label:
            return window
    labels = [w.label for w in (*STREAM_WINDOWS, TODAY)]
    raise KeyError(f"no stream window {label!r}; the contract has {labels}")


ALLOWED_LATENESS = timedelta(minutes=5)
# A streamed row holds until the entity's next push. The worker pushes whenever a value
# changes, including when a tile leaves a window, so an entity with a non-zero value is
# pushed again within 23 h 59 min (the last 1-hour-window change comes 61 minutes after
# its last event, the 24-hour window's 25 hours after that event's hour). After its last
# push (all zeros) the offline join may forget it. Whole days only: Feast's DuckDB
# offline store fails on a TTL that mixes days and seconds (ibis interval inference).
STREAM_TTL = timedelta(days=1)

USER_STREAM = ViewSpec(
    "user_stream",
    (USER,),
    windowed("user", (("impressions", INT64), ("clicks", INT64)), STREAM_WINDOWS),
    STREAM_TTL,
    "The user's impressions and clicks over the last 5 minutes, hour and day, pushed by "
    "the stream worker.",
)
AD_STREAM = ViewSpec(
    "ad_stream",
    (AD,),
    windowed("ad", (("impressions", INT64), ("clicks", INT64), ("ctr", FLOAT64)), STREAM_WINDOWS),
    STREAM_TTL,
    "The ad's impressions, clicks and raw CTR (null without impressions) over the last 5 "
    "minutes, hour and day, pushed by the stream worker.",
)
CAMPAIGN_STREAM = ViewSpec(
    "campaign_stream",
    (CAMPAIGN,),
    (
        *windowed("campaign", (("impressions", INT64), ("clicks", INT64), *SPEND), (TODAY,)),
        Feature(
            feature_name("campaign", "spend", stream_window("1h")),
            FLOAT64,
            bounds=NON_NEGATIVE,
            measure="spend",
            window=stream_window("1h").label,
        ),  # fmt: skip
    ),
    STREAM_TTL,
    "The campaign's delivery and spend since UTC midnight (the pacing input) and its "
    "spend over the last hour, pushed by the stream worker.",
)
STREAM_VIEWS = (USER_STREAM, AD_STREAM, CAMPAIGN_STREAM)


def push_source_name(view_name: str) -> str:
    """The push source feeding a streamed view: ``<view>_push``."""
    return f"{view_name}_push"


# Every view of the repo: batch-job tables and streamed views.
ALL_VIEWS = {**VIEWS, **{spec.name: spec for spec in STREAM_VIEWS}}

# One push source per streaming view; what is pushed is also appended offline to the
# source's log table, so point-in-time training sets see the values serving saw.
PUSH_SOURCES = {push_source_name(spec.name): spec for spec in STREAM_VIEWS}

FEATURES_DIR = "features"


def data_root(repo_dir: Path) -> Path:
    """Where the feature tables live: ``ADSTACK_DATA`` or ``<project>/data``.

    Feast's file sources need absolute paths (the DuckDB offline store opens them
    relative to the working directory), so the repo resolves the same data root the
    jobs write to.
    """
    configured = os.environ.get("ADSTACK_DATA")
    root = Path(configured) if configured else repo_dir.parent / "data"
    return root.resolve()


def table_dir(data_root: Path, view_name: str) -> Path:
    """``<data root>/features/<view>``, Parquet partitioned by ``date=YYYY-MM-DD``."""
    return data_root / FEATURES_DIR / view_name


# A zero-row partition holding only the schema, so a table nobody has written to yet can
# still be opened (Feast's sources and the Spark profile need a schema).
SCHEMA_FOLDER = "date=1970-01-01"


def push_log_name(push_source: str) -> str:
    """The offline table a push source appends to: ``<data root>/features/<name>_log``."""
    return f"{push_source}_log"


# Request-time features: known when the ad request arrives, from the request itself, not
# from a feature view. Training derives them from the logged impression and serving from
# the request, both through `request_features`, so the two cannot disagree. Position is
# the slot the ad is shown in (1 = top): training learns its effect and serving scores
# every candidate for the slot being filled.
REQUEST_FEATURES = (
    Feature("hour_of_day", INT64),
    Feature("day_of_week", INT64),
    Feature("position", INT64),
    Feature("placement", STRING),
    Feature("device", STRING),
    Feature("country", STRING),
)
# Request features fixed by the calendar day: one day of traffic holds one value, so a
# day is not comparable with a reference of several days (drift reports them apart).
CALENDAR_DAY_FEATURES = ("day_of_week",)
# Entity ids the models read directly (hashed into embedding buckets), besides the
# feature service's features. The category joins the user-by-category view.
MODEL_ENTITY_KEYS = ("user_id", "ad_id", "advertiser_id", "campaign_id", "category")


def request_features(
    timestamp_micros: np.ndarray,
    position: np.ndarray,
    placement: np.ndarray,
    device: np.ndarray,
    country: np.ndarray,
) -> dict[str, np.ndarray]:
    """The request-time features of ``REQUEST_FEATURES``, column-wise.

    ``timestamp_micros`` is the request instant in UTC microseconds (int64). Hour and day
    of week are UTC; 1970-01-01 was a Thursday, so Monday is 0. Missing strings stay
    ``None`` and are filled by the model's feature map.
    """
    micros = np.asarray(timestamp_micros, dtype=np.int64)
    return {
        "hour_of_day": (micros // MICROS_PER_HOUR) % 24,
        "day_of_week": (micros // MICROS_PER_DAY + 3) % 7,
        "position": np.asarray(position, dtype=np.int64),
        "placement": np.asarray(placement, dtype=object),
        "device": np.asarray(device, dtype=object),
        "country": np.asarray(country, dtype=object),
    }
