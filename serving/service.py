"""What the scorer's handlers call: one object holding the models, the Redis pool and the
metrics, with one method per endpoint's work. Pure rules live in ``auction.py``; feature
reading and scoring in ``scoring.py``; this module wires them and owns the failure
policy (degraded answers, backoff) and the served-features log."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from redis.exceptions import RedisError

from artifact.feature_map import Masked
from artifact.runtime import LoadedModel
from core import event_bus, served_log, units
from core.ids import as_id
from feature_repo import contract
from serving import auction, schemas, scoring
from serving.auction import Decision, Exploration, Pacing
from serving.config import ServingSettings
from serving.redis_pipe import RedisPipe, RedisReplyError
from serving.scoring import Fetched, Request, Scored, Scorer
from serving.telemetry import Stopwatch, Telemetry

log = logging.getLogger("adstack.serving")
FAILURES = (RedisError, RedisReplyError, OSError, asyncio.TimeoutError, TimeoutError)


def micros_of(moment: datetime | None) -> int:
    """A request's instant in UTC micros: the one it states, else now."""
    return units.now_micros() if moment is None else units.instant_micros(moment)


def impression_id(request_id: str, ad_id: int) -> int:
    """A stable 63-bit id for the impression of ``ad_id`` in ``request_id``."""
    digest = hashlib.blake2b(f"{request_id}:{ad_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def versions(ctr: LoadedModel, cvr: LoadedModel | None) -> dict[str, str]:
    """The served model versions by task (no ``cvr`` key without a conversion model)."""
    return {"ctr": ctr.version} | ({"cvr": cvr.version} if cvr is not None else {})


class ContextRefused(ValueError):
    """A request's context names a field the models do not read, or mistypes one."""


def declared_context(
    context: schemas.Context, declared: dict[str, str]
) -> dict[str, str | float | None]:
    """The request's declared context fields, typed by their kind (text for
    categorical, a number for numeric); anything else is refused with the reason."""
    extra = context.model_extra or {}
    unknown = sorted(set(extra) - set(declared))
    if unknown:
        raise ContextRefused(
            f"unknown context fields {unknown}; the served models read "
            f"{sorted(declared) or 'no declared fields'} besides the built-in ones"
        )
    values: dict[str, str | float | None] = {}
    for name, value in extra.items():
        if value is None:
            values[name] = None
        elif declared[name] == "numeric":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ContextRefused(f"context field {name!r} is numeric: send a number")
            values[name] = float(value)
        else:
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise ContextRefused(f"context field {name!r} is categorical: send text")
            text = str(value)
            if len(text) > schemas.MAX_CONTEXT_TEXT:
                raise ContextRefused(
                    f"context field {name!r}: at most {schemas.MAX_CONTEXT_TEXT} characters"
                )
            values[name] = text
    return values


def _probability(value: float) -> float | None:
    """A probability for the response: None where the model that gives it is absent."""
    return None if np.isnan(value) else float(value)


def request_seed(request_id: str) -> int:
    """Exploration draws are seeded by the request id: a replayed request is answered
    the same way, and different requests draw independently."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "little")


@dataclass
class AuctionResult:
    response: schemas.AuctionResponse
    scored: Scored
    winners: np.ndarray


class Service:
    def __init__(
        self, settings: ServingSettings, client: Any, ctr: LoadedModel, cvr: LoadedModel | None
    ) -> None:
        self.settings = settings
        self.redis = client  # redis-py: events, the served log, readiness
        self.pipe = RedisPipe(settings.effective_redis_url, settings.redis_max_connections)  # reads
        self.scorer = Scorer(ctr, cvr, settings.feast_project)
        self.telemetry = Telemetry()
        self.telemetry.set_models(self.versions)
        self.backoff_until = 0.0
        self.pacing = Pacing(settings.pacing_allowance, settings.pacing_gain)
        self.exploration = Exploration(
            settings.exploration_weight,
            settings.exploration_max_impressions,
            settings.exploration_prior_strength,
        )
        self.background: set[asyncio.Task] = set()

    @property
    def versions(self) -> dict[str, str]:
        return versions(self.scorer.ctr, self.scorer.cvr)

    def swap_models(self, ctr: LoadedModel, cvr: LoadedModel | None) -> None:
        """Serve new models from the next request on; ad profiles stay cached."""
        profiles = self.scorer.profiles
        self.scorer = Scorer(ctr, cvr, self.settings.feast_project)
        self.scorer.profiles = profiles
        self.telemetry.set_models(self.versions)

    # ------------------------------------------------------------------ features

    async def fetch(self, request: Request, endpoint: str) -> Fetched:
        """Online features, or a degraded answer when Redis fails or is backing off."""
        scorer = self.scorer
        if time.monotonic() >= self.backoff_until:
            deadline = self.settings.redis_deadline_s(len(request.ad_ids))
            try:
                fetched = await asyncio.wait_for(scorer.fetch(self.pipe, request), deadline)
                for view, count in fetched.expired.items():
                    self.telemetry.expired_rows.labels(view).inc(count)
                return fetched
            except TimeoutError:
                # Slow, not down: this request is answered without features, the next
                # one tries again.
                self.telemetry.errors.labels("redis_deadline").inc()
            except FAILURES as error:
                self.backoff_until = time.monotonic() + self.settings.redis_backoff_s
                self.telemetry.errors.labels(f"redis_{type(error).__name__}").inc()
                log.warning("online read failed (%s); answering degraded", error)
        self.telemetry.degraded.labels(endpoint).inc()
        return scorer.degraded(request)

    def request(
        self, user_id: int | str, ad_ids: list[int | str], context: schemas.Context
    ) -> Request:
        """The request in platform ids: text ids hashed as the ingest hashes them."""
        return Request(
            user_id=as_id(user_id),
            ad_ids=np.array([as_id(a) for a in ad_ids], dtype=np.int64),
            timestamp_micros=micros_of(context.timestamp),
            position=context.position,
            placement=context.placement,
            device=context.device,
            country=context.country,
            context=declared_context(context, self.scorer.context),
        )

    # ------------------------------------------------------------------ endpoints

    async def score(self, body: schemas.ScoreRequest, watch: Stopwatch) -> schemas.ScoreResponse:
        request = self.request(body.user_id, body.ad_ids, body.context)
        fetched = await self.fetch(request, "score")
        watch.lap("redis")
        columns = self.scorer.assemble(fetched, request)
        watch.lap("assemble")
        scored = self.scorer.score(columns, len(request.ad_ids))
        watch.lap("inference")
        self.telemetry.missing_features.inc(scored.missing)
        return schemas.ScoreResponse(
            request_id=body.request_id,
            scores=[
                schemas.Score(ad_id=a, pctr=c, pcvr=_probability(v))
                for a, c, v in zip(
                    body.ad_ids, scored.pctr.tolist(), scored.pcvr.tolist(), strict=True
                )
            ],
            degraded=fetched.degraded,
            model_versions=self.versions,
            missing_features=scored.missing,
            timings_ms=watch.ms,
        )

    async def auction(self, body: schemas.AuctionRequest, watch: Stopwatch) -> AuctionResult:
        request = self.request(body.user_id, [c.ad_id for c in body.candidates], body.context)
        fetched = await self.fetch(request, "auction")
        watch.lap("redis")
        scorer = self.scorer
        columns = scorer.assemble(fetched, request)
        watch.lap("assemble")
        n = len(request.ad_ids)
        bid, bid_type, unknown = self._bids(body, fetched)
        # Without a conversion model a CPA bid cannot be priced: left out, and counted.
        no_cvr = (bid_type == auction.CPA) & ~unknown if scorer.cvr is None else None
        # pCVR ranks CPA ads only; CPC winners get theirs after the auction.
        scored = scorer.score(columns, n, np.flatnonzero(bid_type == auction.CPA))
        watch.lap("inference")
        result = self._auction(
            body, request, fetched, scored, columns, bid, bid_type, unknown, no_cvr
        )
        watch.lap("auction")
        self.telemetry.missing_features.inc(scored.missing)
        self.telemetry.fill(body.slots, len(result.winners))
        result.response.timings_ms.update(watch.ms)
        return result

    @staticmethod
    def _bids(
        body: schemas.AuctionRequest, fetched: Fetched
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bid, bid type and unknown flag per candidate: the request's, else the catalog's."""
        n = len(body.candidates)
        bid = np.full(n, np.nan)
        bid_type = np.zeros(n, dtype=np.int8)
        unknown = np.zeros(n, dtype=bool)
        for i, (candidate, profile) in enumerate(
            zip(body.candidates, fetched.profiles, strict=True)
        ):
            kind = candidate.bid_type or (profile.bid_type if profile else None)
            value = (
                candidate.bid if candidate.bid is not None else (profile.bid if profile else None)
            )
            if kind not in auction.BID_TYPES or value is None:
                unknown[i] = True
                continue
            bid[i], bid_type[i] = value, auction.BID_TYPES[kind]
        return bid, bid_type, unknown

    def _auction(
        self,
        body: schemas.AuctionRequest,
        request: Request,
        fetched: Fetched,
        scored: Scored,
        columns: dict[str, Any],
        bid: np.ndarray,
        bid_type: np.ndarray,
        unknown: np.ndarray,
        no_cvr: np.ndarray | None = None,
    ) -> AuctionResult:
        n = len(request.ad_ids)
        excluded = unknown if no_cvr is None else unknown | no_cvr
        explore = body.explore and not fetched.degraded
        decision = auction.decide(
            request.ad_ids,
            bid,
            bid_type,
            scored.pctr,
            scored.pcvr,
            delivery=(
                _numbers(columns.get(scoring.AD_IMPRESSIONS_24H), n),
                _numbers(columns.get(scoring.AD_CLICKS_24H), n),
            ),
            budget=(
                _numbers(columns.get(scoring.CAMPAIGN_SPEND_TODAY), n),
                _numbers(columns.get(scoring.CAMPAIGN_BUDGET), n),
            ),
            now_micros=request.timestamp_micros,
            excluded=excluded,
            slots=body.slots,
            reserve_ecpm=body.reserve_price,
            pacing=self.pacing,
            exploration=self.exploration if explore else None,
            rng=np.random.default_rng(request_seed(body.request_id)) if explore else None,
        )
        outcome = decision.outcome
        self.scorer.fill_cvr(scored, outcome.winners)
        response = schemas.AuctionResponse(
            request_id=body.request_id,
            winners=self._winners(body, request, fetched, scored, decision, bid, bid_type),
            degraded=fetched.degraded,
            model_versions=self.versions,
            candidates=schemas.CandidateCounts(
                received=n,
                eligible=int(outcome.eligible.sum()),
                unknown=int(unknown.sum()),
                budget_exhausted=int((decision.exhausted & ~unknown).sum()),
                below_reserve=int(outcome.below_reserve.sum()),
                cpa_without_cvr_model=0 if no_cvr is None else int(no_cvr.sum()),
            ),
            missing_features=scored.missing,
            timings_ms={},
        )
        return AuctionResult(response, scored, outcome.winners)

    def _winners(
        self,
        body: schemas.AuctionRequest,
        request: Request,
        fetched: Fetched,
        scored: Scored,
        decision: Decision,
        bid: np.ndarray,
        bid_type: np.ndarray,
    ) -> list[schemas.Winner]:
        """The winners in slot order, with what each pays and why it ranked."""
        outcome, explored, draw = decision.outcome, decision.explored, decision.draw
        winners = []
        for slot, (i, price) in enumerate(
            zip(outcome.winners.tolist(), outcome.price.tolist(), strict=True)
        ):
            profile = fetched.profiles[i]
            ad_id = int(request.ad_ids[i])
            winners.append(
                schemas.Winner(
                    slot=body.context.position + slot,
                    ad_id=body.candidates[i].ad_id,
                    campaign_id=profile.campaign_id if profile else None,
                    impression_id=impression_id(body.request_id, ad_id),
                    bid_type="CPA" if bid_type[i] == auction.CPA else "CPC",
                    bid=float(bid[i]),
                    pctr=float(scored.pctr[i]),
                    pcvr=_probability(scored.pcvr[i]),
                    ecpm=float(outcome.ecpm[i]),
                    price=float(price),
                    explored=bool(explored[i]),
                    exploration_draw=None if np.isnan(draw[i]) else float(draw[i]),
                    pacing_multiplier=float(decision.multiplier[i]),
                )
            )
            if explored[i]:
                self.telemetry.explored.inc()
        return winners

    # ------------------------------------------------------------------ logs

    def log_served(self, body: schemas.AuctionRequest, result: AuctionResult) -> None:
        """Log a sample of winners with the features and scores served (skew checks).

        Sent in the background: the response never waits for it."""
        rate = self.settings.served_log_sample
        if rate <= 0 or result.response.degraded or not result.response.winners:
            return
        rng = np.random.default_rng(request_seed(body.request_id) ^ 0x5EED)
        if rng.random() >= rate:
            return
        entries = []
        for winner, row in zip(result.response.winners, result.winners.tolist(), strict=True):
            features = {
                name: _value(values, row)
                for name, values in result.scored.columns.items()
                if name in self.scorer.features or name in _REQUEST_COLUMNS
            }
            entries.append(
                {
                    "request_id": body.request_id,
                    "timestamp_micros": micros_of(body.context.timestamp),
                    **winner.model_dump(),
                    # The served log speaks platform ids, as the feature store does.
                    "user_id": as_id(body.user_id),
                    "ad_id": as_id(winner.ad_id),
                    "model_versions": self.versions,
                    "features": features,
                }
            )
        task = asyncio.create_task(self._send_served(entries))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _send_served(self, entries: list[dict]) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            for entry in entries:
                pipe.xadd(
                    served_log.SERVED_STREAM,
                    served_log.encode(entry),
                    maxlen=self.settings.served_log_maxlen,
                    approximate=True,
                )
            await pipe.execute()
            self.telemetry.served_logged.inc(len(entries))
        except FAILURES as error:
            self.telemetry.errors.labels("served_log").inc()
            log.warning("served log write failed: %s", error)

    async def send_events(self, events: list[schemas.Event]) -> int:
        """Append client events to the event stream the stream worker reads."""
        frame = {
            "kind": [e.kind for e in events],
            "ts": [micros_of(e.timestamp) for e in events],
            **{name: [as_id(getattr(e, name)) for e in events] for name in event_bus.ID_FIELDS},
            "cost_micros": [e.cost_micros for e in events],
        }
        batch = event_bus.Events.from_frame(pd.DataFrame(frame))
        pipe = self.redis.pipeline(transaction=False)
        for fields in event_bus.entries(batch):
            pipe.xadd(
                event_bus.STREAM_KEY,
                fields,
                maxlen=event_bus.DEFAULT_MAXLEN,
                approximate=True,
            )
        await asyncio.wait_for(
            pipe.execute(), timeout=max(1.0, self.settings.redis_deadline_ms / 100)
        )
        return len(batch)

    async def ready(self) -> bool:
        try:
            return bool(
                await asyncio.wait_for(
                    self.redis.ping(), self.settings.redis_deadline_ms / 1000 * 10
                )
            )
        except FAILURES:
            return False

    async def drain(self) -> None:
        """Wait for background log writes (graceful shutdown), close the read pool."""
        if self.background:
            await asyncio.wait(self.background, timeout=2.0)
        await self.pipe.close()


_REQUEST_COLUMNS = {f.name for f in contract.REQUEST_FEATURES} | set(contract.MODEL_ENTITY_KEYS)


def _numbers(column: Any, n: int) -> np.ndarray:
    if column is None:
        return np.full(n, np.nan)
    if isinstance(column, Masked):
        return np.where(column.present, column.values.astype(np.float64), np.nan)
    if np.ndim(column) == 0:
        return np.full(n, np.nan if column is None else float(column))
    return np.asarray(column, dtype=np.float64)


def _value(column: Any, row: int) -> Any:
    """One row's value of an assembled column, as JSON-ready Python."""
    if isinstance(column, Masked):
        return int(column.values[row]) if column.present[row] else None
    value = column if column is None or np.ndim(column) == 0 else column[row]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
