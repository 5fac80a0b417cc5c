"""Feast's Redis online store: connected through ``REDIS_URL``, written column-wise.

Feast's own ``redis`` store takes a ``host:port,db=0,...`` connection string written
into ``feature_store.yaml``. adstack's settings speak ``REDIS_URL`` (default: the
embedded server on 127.0.0.1), so :class:`EnvRedisOnlineStore` only changes where the
connection string comes from; the Redis layout, reads and writes are Feast's.

:class:`RedisWriter` writes feature rows in Feast's layout (:mod:`core.feast_codec`)
with Feast's dedup rule: the stored ``_ts:<view>`` of every key is read before a batch
is written, and a row is skipped when a positive stored timestamp is at or after its
own. Materialisation and the provider's pushes both write through it.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from feast import FeatureView
from feast.infra.online_stores.redis import (
    RedisOnlineStore,
    RedisOnlineStoreConfig,
    RedisType,
    _versioned_fv_name,
)
from feast.repo_config import RepoConfig
from pydantic import Field, StrictStr

from core.feast_codec import (
    RowLayout,
    command_bytes,
    field_hash,
    hget_commands,
    hset_commands,
    redis_keys,
    stored_nanos,
    timestamps_micros,
)
from core.settings import RedisAddress, get_settings


def feast_connection_string(url: str) -> str:
    """``redis://[user:password@]host:port/db`` -> Feast's ``host:port,db=N,...``."""
    address = RedisAddress.parse(url)
    parts = [f"{address.host}:{address.port}"]
    if address.db:
        parts.append(f"db={address.db}")
    if address.username:
        parts.append(f"username={address.username}")
    if address.password:
        parts.append(f"password={address.password}")
    if address.tls:
        parts.append("ssl=true")
    return ",".join(parts)


def _connection_from_settings() -> str:
    return feast_connection_string(get_settings().effective_redis_url)


class EnvRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    type: Literal["core.feast_redis.EnvRedisOnlineStore"] = "core.feast_redis.EnvRedisOnlineStore"
    connection_string: StrictStr = Field(default_factory=_connection_from_settings)


class EnvRedisOnlineStore(RedisOnlineStore):
    """Feast's RedisOnlineStore; the connection string defaults from ``REDIS_URL``."""


NULL_OR_BULK = (ord("$"), ord("_"))  # RESP2 bulk or null bulk, RESP3 null
BATCH_ROWS = 50_000


def row_layout(config: RepoConfig, view: FeatureView) -> RowLayout:
    """The Redis layout of ``view``'s rows under ``config``'s project and online store."""
    name = _versioned_fv_name(view, config)
    if view.batch_source is None:
        raise ValueError(f"feature view {view.name} has no batch source")
    return RowLayout(
        name=name,
        project=config.project.encode(),
        join_keys={c.name: c.dtype.to_value_type().value for c in view.entity_columns},
        timestamp_column=view.batch_source.timestamp_field,
        features=[
            (f.name, f.dtype.to_value_type().value, field_hash(name, f.name)) for f in view.features
        ],
        key_ttl_seconds=config.online_store.key_ttl_seconds,
    )


class RedisWriter:
    """Raw RESP on one redis-py connection; a sender thread keeps Redis busy.

    Batch ``k + 1`` is serialised while the sender thread streams batch ``k`` and Redis
    applies it. Its stored timestamps are read only after batch ``k``'s writes (replies
    come in order), which is harmless: a view's batches never share an entity key.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._connection = client.connection_pool.get_connection()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resp-sender")
        self._sent: list[Future[None]] = []
        self._buffer = bytearray()
        self._pending_lines = 0

    @classmethod
    def connect(cls, config: RepoConfig) -> RedisWriter:
        online = config.online_store
        if not isinstance(online, RedisOnlineStoreConfig) or online.redis_type != RedisType.redis:
            raise NotImplementedError("fast materialisation needs a single Redis online store")
        return cls(RedisOnlineStore()._get_client(online))

    def __enter__(self) -> RedisWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sender.shutdown(wait=True)
        if exc[0] is None:
            self._client.connection_pool.release(self._connection)
        else:
            self._connection.disconnect()
        self._client.close()

    def write(self, layout: RowLayout, batch: pa.RecordBatch) -> int:
        """Write the rows newer than what Redis holds; returns how many were written."""
        keys = redis_keys(layout, batch)
        micros = timestamps_micros(batch, layout.timestamp_column)
        commands = hset_commands(layout, keys, batch, micros)
        self._send(hget_commands(keys, layout.ts_field))
        self.flush()
        stored = stored_nanos(self._read_bulk(len(keys)))
        fresh = ~((stored > 0) & (micros * 1000 <= stored))
        if not fresh.all():
            commands = commands.filter(pa.array(fresh))
        if len(commands):
            self._send(commands)
            self._pending_lines += len(commands) * (2 if layout.key_ttl_seconds else 1)
        return len(commands)

    def flush(self) -> None:
        """Consume the replies of every write sent so far; raise on a Redis error."""
        self._raise_send_errors()
        lines, self._pending_lines = self._pending_lines, 0
        while lines:
            newlines = np.flatnonzero(np.frombuffer(self._buffer, np.uint8) == 10)
            if len(newlines) < lines:
                self._receive()
                continue
            starts = np.concatenate([[0], newlines[: lines - 1] + 1])
            errors = np.flatnonzero(np.frombuffer(self._buffer, np.uint8)[starts] == ord("-"))
            if len(errors):
                start = int(starts[errors[0]])
                message = bytes(self._buffer[start : self._buffer.index(b"\n", start)])
                raise RuntimeError(f"Redis rejected a write: {message.decode(errors='replace')}")
            del self._buffer[: int(newlines[lines - 1]) + 1]
            lines = 0

    def _send(self, commands: pa.Array) -> None:
        self._sent.append(self._sender.submit(self._send_now, commands))

    def _send_now(self, commands: pa.Array) -> None:
        self._connection.send_packed_command([command_bytes(commands)], check_health=False)

    def _raise_send_errors(self) -> None:
        done = [future for future in self._sent if future.done()]
        self._sent = [future for future in self._sent if not future.done()]
        for future in done:
            future.result()

    def _receive(self) -> None:
        self._raise_send_errors()
        chunk = self._connection._sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("Redis closed the connection during materialisation")
        self._buffer += chunk

    def _read_bulk(self, count: int) -> list[bytes | None]:
        """Parse ``count`` bulk-string replies (``$-1`` and RESP3's ``_`` are None)."""
        out: list[bytes | None] = []
        position = 0
        buffer = self._buffer
        while len(out) < count:
            end = buffer.find(b"\r\n", position)
            if end < 0:
                self._receive()
                buffer = self._buffer
                continue
            kind = buffer[position]
            if kind not in NULL_OR_BULK:
                raise RuntimeError(f"unexpected Redis reply {bytes(buffer[position:end])!r}")
            length = int(buffer[position + 1 : end]) if kind == ord("$") else -1
            if length < 0:
                out.append(None)
                position = end + 2
                continue
            if len(buffer) < end + 4 + length:
                self._receive()
                buffer = self._buffer
                continue
            out.append(bytes(buffer[end + 2 : end + 2 + length]))
            position = end + 4 + length
        del self._buffer[:position]
        return out
