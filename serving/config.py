"""The scorer's settings: adstack's settings plus the serving knobs, from the environment.

Created once, in the app's lifespan (never at import). Every knob has a variable:
``ADSTACK_API_TOKEN``, ``ADSTACK_ENVIRONMENT``, ``ADSTACK_REDIS_DEADLINE_MS``, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from core.settings import Settings, api_token_file, read_or_create_token
from serving.auction import Exploration, Pacing

MIN_TOKEN_LENGTH = 16


class ServingSettings(Settings):
    # "development" lets a scorer without ADSTACK_API_TOKEN start: it generates a token
    # and writes it to <state dir>/api-token. Anything else fails closed.
    environment: Literal["development", "production"] = "production"
    # Bearer token for /v1/events and /admin/*; there is no built-in default.
    api_token: str = ""
    ctr_model: str = "ctr"
    # Empty: serve without a conversion model (CPC and CPM bids only; CPA candidates are
    # left out of the auction and counted). A clicks-only log trains no CVR model.
    cvr_model: str = "cvr"
    model_alias: str = "champion"
    feast_project: str = "adstack"
    onnx_threads: int = Field(default=1, ge=1)
    # Online reads must finish within `redis_deadline_ms` plus
    # `redis_deadline_per_candidate_ms` per candidate (13 ms at 50 candidates, 40 ms at
    # 500), or the request is answered degraded (priors and defaults). A timeout degrades
    # that request only; after a connection or server error Redis is left alone for
    # `redis_backoff_s` before one request probes it again.
    redis_deadline_ms: float = Field(default=10.0, gt=0)
    redis_deadline_per_candidate_ms: float = Field(default=0.06, ge=0)
    redis_backoff_s: float = Field(default=1.0, ge=0)
    redis_max_connections: int = Field(default=64, ge=1)
    # Exploration (Thompson sampling) of ads with few streamed impressions.
    exploration_weight: float = Field(default=Exploration.weight, ge=0, le=1)
    exploration_max_impressions: int = Field(default=Exploration.max_impressions, ge=0)
    exploration_prior_strength: float = Field(default=Exploration.prior_strength, gt=0)
    # Budget pacing against an even daily plan.
    pacing_gain: float = Field(default=Pacing.gain, ge=0)
    pacing_allowance: float = Field(default=Pacing.allowance, ge=0, le=1)
    # Share of auction winners logged with their served features and scores (skew checks).
    served_log_sample: float = Field(default=0.05, ge=0, le=1)
    served_log_maxlen: int = Field(default=1_000_000, ge=1)
    # Request limits: body bytes (413 above), candidates and events per call (422 above).
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_candidates: int = Field(default=1000, ge=1)
    max_events: int = Field(default=10_000, ge=1)

    def redis_deadline_s(self, candidates: int) -> float:
        return (self.redis_deadline_ms + self.redis_deadline_per_candidate_ms * candidates) / 1000

    def check_secure(self) -> Path | None:
        """Refuse to serve without a token, or with a short one, outside development. In
        development a missing token is generated; returns the file that holds it."""
        if not self.api_token:
            path = api_token_file(self)
            if self.environment != "development":
                raise RuntimeError(
                    "ADSTACK_API_TOKEN is not set: set it to a secret (`adstack serve` "
                    f"generates one in {path}), or set ADSTACK_ENVIRONMENT=development to "
                    "let this scorer generate one there"
                )
            self.api_token = read_or_create_token(path)
            return path
        if self.environment != "development" and len(self.api_token) < MIN_TOKEN_LENGTH:
            raise RuntimeError(
                f"ADSTACK_API_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters; use a "
                "random secret (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            )
        return None
