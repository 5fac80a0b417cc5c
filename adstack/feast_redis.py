"""Feast's Redis online store, connected through ``REDIS_URL``.

Feast's own ``redis`` store takes a ``host:port,db=0,...`` connection string written
into ``feature_store.yaml``. adstack's settings speak ``REDIS_URL`` (default: the
embedded server on 127.0.0.1), so this subclass only changes where the connection
string comes from; the Redis layout, reads and writes are Feast's.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote, urlparse

from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from pydantic import Field, StrictStr

from adstack.settings import get_settings


def feast_connection_string(url: str) -> str:
    """``redis://[user:password@]host:port/db`` -> Feast's ``host:port,db=N,...``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"REDIS_URL must start with redis:// or rediss://, got {url!r}")
    parts = [f"{parsed.hostname or '127.0.0.1'}:{parsed.port or 6379}"]
    db = parsed.path.lstrip("/")
    if db:
        if not db.isdigit():
            raise ValueError(f"REDIS_URL database must be a number, got {db!r} in {url!r}")
        parts.append(f"db={db}")
    if parsed.username:
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def _connection_from_settings() -> str:
    return feast_connection_string(get_settings().effective_redis_url)


class EnvRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["adstack.feast_redis.EnvRedisOnlineStore"] = (  # type: ignore[assignment]
        "adstack.feast_redis.EnvRedisOnlineStore"
    )
    connection_string: StrictStr = Field(default_factory=_connection_from_settings)


class EnvRedisOnlineStore(RedisOnlineStore):
    """Feast's RedisOnlineStore; the connection string defaults from ``REDIS_URL``."""
