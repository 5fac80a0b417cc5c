"""The scorer's API contract: request and response bodies (the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_CANDIDATES = 1000
MAX_CONTEXT_TEXT = 256
INT64 = Field(ge=-(2**63), le=2**63 - 1)
# An id as the log spelled it: a JSON number passes through, a JSON string is hashed to
# int64 with the ingest's function (core/ids.py), so a text id needs no client code.
Id = Annotated[int, INT64] | Annotated[str, Field(min_length=1, max_length=256)]
ID_HELP = "int64, or text hashed like the ingest's hash_ids (core/ids.py)"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Context(BaseModel):
    """What the request knows about the impression being filled: the built-in fields
    below, and the declared context fields of the served models by name (text for a
    categorical field, a number for a numeric one; see ``/readyz``)."""

    model_config = ConfigDict(extra="allow")

    timestamp: datetime | None = Field(
        default=None, description="Request instant (UTC if naive); default: now."
    )
    device: str | None = Field(default=None, max_length=64)
    placement: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, max_length=8)
    position: int = Field(default=1, ge=1, le=100, description="Slot the first winner fills.")


class Candidate(Strict):
    ad_id: Id = Field(description=ID_HELP)
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
    user_id: Id = Field(description=ID_HELP)
    context: Context = Field(default_factory=Context)
    slots: int = Field(default=1, ge=1, le=50)
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    reserve_price: float = Field(
        default=0.0, ge=0, le=1e9, description="Minimum eCPM (per thousand impressions)."
    )
    explore: bool = Field(default=True, description="Allow exploration of new ads.")


class ScoreRequest(Strict):
    request_id: str = Field(min_length=1, max_length=128)
    user_id: Id = Field(description=ID_HELP)
    context: Context = Field(default_factory=Context)
    ad_ids: list[Id] = Field(min_length=1, max_length=MAX_CANDIDATES, description=ID_HELP)


class Winner(BaseModel):
    slot: int
    ad_id: int | str = Field(description="As the candidate gave it.")
    campaign_id: int | None
    impression_id: int = Field(
        description="Quote it in the impression, click and conversion events."
    )
    bid_type: Literal["CPC", "CPA"]
    bid: float
    pctr: float
    pcvr: float | None = Field(description="None when the scorer has no conversion model.")
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
    cpa_without_cvr_model: int = Field(
        default=0, description="CPA bids left out: the scorer serves no conversion model."
    )


class AuctionResponse(BaseModel):
    request_id: str
    winners: list[Winner]
    degraded: bool
    model_versions: dict[str, str]
    candidates: CandidateCounts
    missing_features: int = Field(description="Values filled from the manifests.")
    timings_ms: dict[str, float]


class Score(BaseModel):
    ad_id: int | str = Field(description="As the request gave it.")
    pctr: float
    pcvr: float | None = Field(description="None when the scorer has no conversion model.")


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
    user_id: Id = Field(description=ID_HELP)
    ad_id: Id = Field(description=ID_HELP)
    campaign_id: Id = Field(description=ID_HELP)
    impression_id: int = INT64
    cost_micros: int = Field(default=0, ge=0, le=2**63 - 1)


class EventsRequest(Strict):
    events: list[Event] = Field(min_length=1)


class EventsResponse(BaseModel):
    accepted: int


class ReloadResponse(BaseModel):
    reloaded: bool
    model_versions: dict[str, str]
