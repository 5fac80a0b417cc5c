"""The scorer: ``uvicorn serving.app:app`` (or ``adstack serve --workers N``).

The lifespan opens everything once: settings, the champion CTR and CVR models from the
registry (ONNX sessions and manifests), the async Redis pool. Handlers are a few lines;
the work is in ``serving.service``. Answers without online features (Redis down, slow
or backing off) are marked ``degraded`` and are never a 5xx.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from artifact import registry
from artifact.runtime import LoadedModel
from core.event_bus import InvalidEvents
from serving import schemas
from serving.config import ServingSettings
from serving.service import ContextRefused, Service, versions
from serving.telemetry import Stopwatch

log = logging.getLogger("adstack.serving")
JSON = "application/json"
ModelLoader = Callable[[ServingSettings], tuple[LoadedModel, LoadedModel | None]]


def registry_models(settings: ServingSettings) -> tuple[LoadedModel, LoadedModel | None]:
    """The models the registry's alias (``champion``) points to. The CTR model is
    required; without a CVR model (none registered, or ``ADSTACK_CVR_MODEL`` empty) the
    scorer serves CPC bids only."""
    ctr = _load(settings, settings.ctr_model)
    if not settings.cvr_model:
        return ctr, None
    try:
        return ctr, _load(settings, settings.cvr_model)
    except LookupError as error:
        log.warning("%s: serving without a conversion model (CPA candidates are refused)", error)
        return ctr, None


def _load(settings: ServingSettings, name: str) -> LoadedModel:
    resolved = registry.resolve(settings, name, settings.model_alias)
    return LoadedModel.from_files(
        resolved.name, resolved.version, resolved.directory, settings.onnx_threads
    )


def redis_pool(settings: ServingSettings) -> aioredis.Redis:
    timeout = max(0.05, settings.redis_deadline_ms / 1000 * 4)
    return aioredis.Redis.from_url(
        settings.effective_redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        max_connections=settings.redis_max_connections,
        health_check_interval=30,
    )


class BodyLimit:
    """413 for bodies over the limit, declared or streamed, before anything parses them."""

    def __init__(self, app: Any, limit: Callable[[], int]) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["started"] = time.perf_counter()
        limit = self.limit()
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await _too_large(limit, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(limit, send)


ENDPOINTS = {"/v1/auction": "auction", "/v1/score": "score", "/v1/events": "events"}


class CountRequests:
    """Counts every response by endpoint and status (4xx and 413s included); unknown
    paths share one label so probes cannot grow the metric without bound."""

    def __init__(self, app: Any, telemetry: Callable[[], Any]) -> None:
        self.app, self.telemetry = app, telemetry

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counted(message: dict) -> None:
            if message["type"] == "http.response.start":
                telemetry = self.telemetry()
                if telemetry is not None:
                    path = scope["path"]
                    endpoint = ENDPOINTS.get(path) or (
                        path.strip("/") if path in _OPERATIONS else "other"
                    )
                    telemetry.requests.labels(endpoint, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


_OPERATIONS = {"/healthz", "/readyz", "/metrics", "/admin/reload", "/docs", "/openapi.json"}


class _TooLarge(Exception):
    pass


async def _too_large(limit: int, send: Callable) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", JSON.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    loader: ModelLoader = registry_models,
    settings: ServingSettings | None = None,
    service: type[Service] = Service,
) -> FastAPI:
    """The scorer. ``loader`` finds the models (default: the registry's alias),
    ``settings`` default to the environment's, ``service`` is the per-request work."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or ServingSettings()
        generated = config.check_secure()
        if generated is not None:
            log.warning("development mode: the API token is in %s", generated)
        ctr, cvr = await asyncio.to_thread(loader, config)
        client = redis_pool(config)
        app.state.service = service(config, client, ctr, cvr)
        app.state.loader = loader
        # Everything loaded so far lives as long as the process: keep it out of the
        # collector's full passes, which otherwise stall requests for hundreds of ms.
        gc.collect()
        gc.freeze()
        log.info("serving models %s", app.state.service.versions)
        try:
            yield
        finally:
            await app.state.service.drain()
            await client.aclose()

    app = FastAPI(
        title="adstack scorer",
        description="Online features from Redis, calibrated ONNX CTR and CVR, and the auction.",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=lambda: _limit(app))
    app.add_middleware(CountRequests, telemetry=lambda: _telemetry(app))

    @app.exception_handler(ContextRefused)
    async def context_refused(request: Request, error: ContextRefused) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    _routes(app)
    return app


def _telemetry(app: FastAPI) -> Any:
    service = getattr(app.state, "service", None)
    return service.telemetry if service else None


def _limit(app: FastAPI) -> int:
    service = getattr(app.state, "service", None)
    return service.settings.max_body_bytes if service else 1 << 20


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
bearer = HTTPBearer(auto_error=False)


def require_token(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    expected = service.settings.api_token.encode()
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, expected):
        raise HTTPException(
            401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


Authorised = Depends(require_token)


def _watch(request: Request) -> Stopwatch:
    """Stage timer started when the first byte arrived; 'parse' covers body reading,
    JSON decoding, validation and routing."""
    watch = Stopwatch(request.scope.get("state", {}).get("started"))
    watch.lap("parse")
    return watch


def _respond(service: ServiceDep, endpoint: str, model: Any, watch: Stopwatch) -> Response:
    started = time.perf_counter()
    body = model.model_dump_json()
    watch.ms["serialise"] = round((time.perf_counter() - started) * 1000, 3)
    watch.observe(service.telemetry, endpoint)
    service.telemetry.request_seconds.labels(endpoint).observe(time.perf_counter() - watch.started)
    return Response(body, media_type=JSON)


def _routes(app: FastAPI) -> None:
    @app.post("/v1/auction", response_model=schemas.AuctionResponse)
    async def run_auction(
        body: schemas.AuctionRequest, request: Request, service: ServiceDep
    ) -> Response:
        watch = _watch(request)
        _check_candidates([c.ad_id for c in body.candidates], service)
        result = await service.auction(body, watch)
        service.log_served(body, result)
        return _respond(service, "auction", result.response, watch)

    @app.post("/v1/score", response_model=schemas.ScoreResponse)
    async def score(body: schemas.ScoreRequest, request: Request, service: ServiceDep) -> Response:
        watch = _watch(request)
        _check_candidates(body.ad_ids, service)
        return _respond(service, "score", await service.score(body, watch), watch)

    @app.post("/v1/events", response_model=schemas.EventsResponse, dependencies=[Authorised])
    async def events(body: schemas.EventsRequest, service: ServiceDep) -> schemas.EventsResponse:
        if len(body.events) > service.settings.max_events:
            raise HTTPException(422, f"at most {service.settings.max_events} events per call")
        try:
            accepted = await service.send_events(body.events)
        except InvalidEvents as error:  # the bus's own rules, worded for the client
            raise HTTPException(422, str(error)) from error
        except ValueError as error:  # a value NumPy cannot hold (out of int64, ...)
            log.info("events refused: %s", error)
            raise HTTPException(422, "events refused: ids and costs must be int64") from error
        except Exception as error:  # the stream is unreachable: tell the client to retry
            service.telemetry.errors.labels("events").inc()
            log.warning("event stream unavailable: %s", error)
            raise HTTPException(503, "event stream unavailable, retry") from error
        return schemas.EventsResponse(accepted=accepted)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(service: ServiceDep) -> JSONResponse:
        redis_ok = await service.ready()
        body = {"models": service.versions, "context": service.scorer.context, "redis": redis_ok}
        return JSONResponse(body, status_code=200 if redis_ok else 503)

    @app.get("/metrics")
    async def metrics(service: ServiceDep) -> Response:
        return Response(generate_latest(service.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", response_model=schemas.ReloadResponse, dependencies=[Authorised])
    async def reload(request: Request, service: ServiceDep) -> schemas.ReloadResponse:
        """Load the models the alias points to now, if they moved."""
        try:
            ctr, cvr = await asyncio.to_thread(request.app.state.loader, service.settings)
        except LookupError as error:
            log.warning("reload failed: %s", error)
            raise HTTPException(409, "the model alias points to no loadable model") from error
        moved = versions(ctr, cvr) != service.versions
        if moved:
            service.swap_models(ctr, cvr)
        return schemas.ReloadResponse(reloaded=moved, model_versions=service.versions)


def _check_candidates(ad_ids: list[int | str], service: Service) -> None:
    limit = service.settings.max_candidates
    if len(ad_ids) > limit:
        raise HTTPException(422, f"at most {limit} candidates per request, got {len(ad_ids)}")
    if len(set(ad_ids)) != len(ad_ids):
        raise HTTPException(422, "candidate ad ids must be unique")


app = create_app()
