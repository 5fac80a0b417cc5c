"""The scorer's settings: adstack's settings plus the serving knobs, from the environment.

Created once, in the app's lifespan (never at import). Every knob has a variable:
``ADSTACK_API_TOKEN``, ``ADSTACK_ENVIRONMENT``, ``ADSTACK_REDIS_DEADLINE_MS``, ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.settings import Settings
from serving.auction import Exploration, Pacing

DEVELOPMENT_TOKEN = "adstack-development-token"


class ServingSettings(Settings):
    environment: Literal["development", "production"] = "development"
    # Bearer token for /v1/events and /admin/*. Outside development an empty token or
    # the development default refuses to start.
    api_token: str = DEVELOPMENT_TOKEN
    ctr_model: str = "ctr"
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

    def check_secure(self) -> None:
        """Refuse to serve outside development with an empty or default token."""
        if self.environment != "development" and self.api_token in ("", DEVELOPMENT_TOKEN):
            raise RuntimeError(
                "ADSTACK_API_TOKEN must be set to a secret outside development "
                f"(ADSTACK_ENVIRONMENT={self.environment})"
            )
