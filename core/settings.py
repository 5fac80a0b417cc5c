"""One typed settings object for the command line and the jobs it starts.

Values come from the environment (``ADSTACK_DATA``, ``REDIS_URL``, ...) and are read
lazily, the first time :func:`get_settings` is called, so importing a module never
touches the environment. Tests override by setting variables and calling
``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADSTACK_", extra="ignore")

    data_root: Path = Field(
        default=Path("data"), validation_alias=AliasChoices("ADSTACK_DATA", "ADSTACK_DATA_ROOT")
    )
    state_dir: Path = Path(".adstack")
    reports_dir: Path = Path("reports")
    # Unset means: use the embedded redis-server that `adstack redis start` runs.
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL"))
    redis_port: int = 6379
    # Real logs for development (never copied into the project); absent on a user's clone.
    sample_logs: Path = Path("../shared/data")
    # The Feast repo (entities, sources, views, services and both store profiles).
    feature_repo: Path = Field(
        default_factory=lambda: Path(__file__).resolve().parents[1] / "feature_repo"
    )
    demo_scale: float = Field(default=1.0, gt=0, validation_alias=AliasChoices("DEMO_SCALE"))

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def api_token_file(settings: Settings) -> Path:
    """Where ``adstack serve``, the demo and a development scorer keep a generated token."""
    return settings.state_dir / "api-token"


def read_or_create_token(path: Path) -> str:
    """The token stored at ``path``, or a new random one written there (owner-only).

    Created exclusively, so concurrent scorer workers agree on one token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be between creating and writing it
            token = path.read_text().strip()
            if token:
                return token
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty: delete it to generate a new token") from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


@dataclass(frozen=True)
class RedisAddress:
    """Where ``REDIS_URL`` points: ``redis[s]://[user:password@]host:port/db``."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(f"REDIS_URL must start with redis:// or rediss://, got {url!r}")
        db = parsed.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError(f"REDIS_URL database must be a number, got {db!r} in {url!r}")
        return cls(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            db=int(db or 0),
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            tls=parsed.scheme == "rediss",
        )
