"""The scorer's API contract: request and response bodies (the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_CANDIDATES = 1000
INT64 = Field(ge=-(2**63), le=2**63 - 1)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Context(Strict):
    """What the request knows about the impression being filled."""

    timestamp: datetime | None = Field(
        default=None, description="Request instant (UTC if naive); default: now."
    )
    device: str | None = Field(default=None, max_length=64)
    placement: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, max_length=8)
    position: int = Field(default=1, ge=1, le=100, description="Slot the first winner fills.")


class Candidate(Strict):
    ad_id: int = INT64
    bid: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Bid per billable action (click for CPC, conversion for CPA); "
        "default: the catalog bid.",
    )
    bid_type: Literal["CPC", "CPA"] | None = Field(
        default=None, description="Default: the catalog's bid type."
    )


class AuctionRequest(Strict):
    request_id: str = Field(min_length=1, max_length=128)
    user_id: int = INT64
    context: Context = Field(default_factory=Context)
    slots: int = Field(default=1, ge=1, le=50)
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    reserve_price: float = Field(
        default=0.0, ge=0, le=1e9, description="Minimum eCPM (per thousand impressions)."
    )
    explore: bool = Field(default=True, description="Allow exploration of new ads.")


class ScoreRequest(Strict):
    request_id: str = Field(min_length=1, max_length=128)
    user_id: int = INT64
    context: Context = Field(default_factory=Context)
    ad_ids: list[Annotated[int, INT64]] = Field(min_length=1, max_length=MAX_CANDIDATES)


class Winner(BaseModel):
    slot: int
    ad_id: int
    campaign_id: int | None
    impression_id: int = Field(
        description="Quote it in the impression, click and conversion events."
    )
    bid_type: Literal["CPC", "CPA"]
    bid: float
    pctr: float
    pcvr: float
    ecpm: float = Field(description="Ranking eCPM: 1000 x paced bid x ranking quality.")
    price: float = Field(description="Generalised second price per billable action.")
    explored: bool
    exploration_draw: float | None
    pacing_multiplier: float


class CandidateCounts(BaseModel):
    received: int
    eligible: int
    unknown: int = Field(description="No catalog entry and no bid in the request.")
    budget_exhausted: int
    below_reserve: int


class AuctionResponse(BaseModel):
    request_id: str
    winners: list[Winner]
    degraded: bool
    model_versions: dict[str, str]
    candidates: CandidateCounts
    missing_features: int = Field(description="Values filled from the manifests.")
    timings_ms: dict[str, float]


class Score(BaseModel):
    ad_id: int
    pctr: float
    pcvr: float


class ScoreResponse(BaseModel):
    request_id: str
    scores: list[Score]
    degraded: bool
    model_versions: dict[str, str]
    missing_features: int
    timings_ms: dict[str, float]


class Event(Strict):
    kind: Literal["impression", "click", "conversion"]
    timestamp: datetime
    user_id: int = INT64
    ad_id: int = INT64
    campaign_id: int = INT64
    impression_id: int = INT64
    cost_micros: int = Field(default=0, ge=0, le=2**63 - 1)


class EventsRequest(Strict):
    events: list[Event] = Field(min_length=1)


class EventsResponse(BaseModel):
    accepted: int


class ReloadResponse(BaseModel):
    reloaded: bool
    model_versions: dict[str, str]
