"""The event bus: impressions, clicks and conversions on one Redis stream.

Producers are the scorer's event intake and ``adstack replay``; the consumer is the
stream worker (``pipelines/stream_features.py``), through a consumer group. An entry is
one event with its own time, so consumers aggregate by event time, not arrival time:

    kind=impression|click|conversion  ts=<event time, UTC microseconds>
    user_id  ad_id  campaign_id  impression_id  cost_micros

All ids are the canonical int64 ids. ``cost_micros`` is what the event bills the
campaign, in millionths of the bid currency: the clearing price on the click of a CPC
ad or on the conversion of a CPA ad, else 0. Integers keep sums exact, so the stream
and a recomputation agree to the last unit.

Retention: every ``XADD`` trims the stream to about ``maxlen`` entries (``MAXLEN ~``,
default 5 million, roughly 1 GB of Redis memory; ``ADSTACK_STREAM_MAXLEN``). Trimming
ignores consumer groups: an entry trimmed before a group read it is gone, so a worker
may fall behind by at most ``maxlen`` entries (over 4 minutes at 20k events/s, hours at
the demo's rate). The worker counts entries that vanished while pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

STREAM_KEY = "adstack:events"
DEFAULT_MAXLEN = 5_000_000
KINDS = ("impression", "click", "conversion")
IMPRESSION, CLICK, CONVERSION = range(len(KINDS))
ID_FIELDS = ("user_id", "ad_id", "campaign_id", "impression_id")
FIELDS = ("kind", "ts", *ID_FIELDS, "cost_micros")
_KIND_CODE = {kind.encode(): code for code, kind in enumerate(KINDS)}


class InvalidEvents(ValueError):
    """Events a client sent that the bus cannot carry; the message says which rule."""


@dataclass(frozen=True)
class Events:
    """A batch of events as columns; ``kind`` holds codes into ``KINDS``."""

    kind: np.ndarray  # int8
    ts: np.ndarray  # int64, UTC microseconds
    user_id: np.ndarray
    ad_id: np.ndarray
    campaign_id: np.ndarray
    impression_id: np.ndarray
    cost_micros: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls) -> Events:
        return cls.from_frame(pd.DataFrame({name: [] for name in FIELDS}))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Events:
        """From a frame with the entry fields; ``kind`` as names or codes, ``ts`` as
        timestamps or microseconds. Raises InvalidEvents on missing or invalid values."""
        missing = [name for name in FIELDS if name not in frame.columns]
        if missing:
            raise InvalidEvents(f"events are missing columns {missing}")
        kind = frame["kind"]
        if kind.dtype == object or isinstance(kind.dtype, pd.StringDtype):
            codes = kind.map({name: code for code, name in enumerate(KINDS)})
            if codes.isna().any():
                bad = sorted(set(kind[codes.isna()].astype(str)))[:5]
                raise InvalidEvents(f"unknown event kinds {bad}; expected one of {KINDS}")
            kind = codes
        ts = frame["ts"]
        if pd.api.types.is_datetime64_any_dtype(ts):
            ts = pd.to_datetime(ts, utc=True).astype("datetime64[us, UTC]").astype("int64")
        columns = {name: frame[name] for name in (*ID_FIELDS, "cost_micros")}
        for name, values in (("ts", ts), *columns.items()):
            if pd.isna(values).any():
                raise InvalidEvents(f"events have nulls in {name}")
        events = cls(
            kind=np.asarray(kind, dtype=np.int8),
            ts=np.asarray(ts, dtype=np.int64),
            **{name: np.asarray(values, dtype=np.int64) for name, values in columns.items()},
        )
        if ((events.kind < 0) | (events.kind >= len(KINDS))).any():
            raise InvalidEvents(f"event kind codes must be in 0..{len(KINDS) - 1}")
        if (events.cost_micros < 0).any():
            raise InvalidEvents("cost_micros must not be negative")
        return events

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({name: getattr(self, name) for name in FIELDS})

    def take(self, rows: np.ndarray) -> Events:
        return Events(**{name: getattr(self, name)[rows] for name in FIELDS})


class EventProducer:
    """Appends events to the stream, pipelined, trimming it to about ``maxlen``."""

    def __init__(self, client, stream: str = STREAM_KEY, maxlen: int = DEFAULT_MAXLEN) -> None:
        if maxlen <= 0:
            raise ValueError("maxlen must be positive")
        self.client = client
        self.stream = stream
        self.maxlen = maxlen

    def send(self, events: Events, chunk: int = 5_000) -> list[bytes]:
        """Append ``events`` in order; returns their entry ids."""
        ids: list[bytes] = []
        pipe = self.client.pipeline(transaction=False)
        for i, fields in enumerate(entries(events), 1):
            pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
            if i % chunk == 0:
                ids += pipe.execute()
        ids += pipe.execute()
        return ids


def entries(events: Events) -> list[dict]:
    """The stream entry of each event, in order (what ``XADD`` writes)."""
    rows = zip(
        [KINDS[k] for k in events.kind.tolist()],
        events.ts.tolist(),
        events.user_id.tolist(),
        events.ad_id.tolist(),
        events.campaign_id.tolist(),
        events.impression_id.tolist(),
        events.cost_micros.tolist(),
        strict=True,
    )
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


@dataclass(frozen=True)
class Decoded:
    """Entries read from the stream: the valid ones as events, the others with reasons."""

    ids: list[bytes]
    events: Events
    invalid: list[tuple[bytes, dict, str]]
    # Entry ids the stream no longer holds (trimmed while pending).
    vanished: list[bytes]


def decode(entries: Sequence[tuple[bytes, dict | None]]) -> Decoded:
    """Entries as redis-py returns them -> columns; never raises on a bad entry."""
    vanished = [entry_id for entry_id, fields in entries if fields is None]
    present: list[tuple[bytes, dict]] = [
        (entry_id, fields) for entry_id, fields in entries if fields is not None
    ]
    entries = present
    try:
        events = Events(
            kind=np.array([_KIND_CODE[f[b"kind"]] for _, f in entries], dtype=np.int8),
            ts=np.array([int(f[b"ts"]) for _, f in entries], dtype=np.int64),
            user_id=np.array([int(f[b"user_id"]) for _, f in entries], dtype=np.int64),
            ad_id=np.array([int(f[b"ad_id"]) for _, f in entries], dtype=np.int64),
            campaign_id=np.array([int(f[b"campaign_id"]) for _, f in entries], dtype=np.int64),
            impression_id=np.array([int(f[b"impression_id"]) for _, f in entries], dtype=np.int64),
            cost_micros=np.array([int(f[b"cost_micros"]) for _, f in entries], dtype=np.int64),
        )
        if (events.cost_micros < 0).any():
            raise ValueError("negative cost")
        return Decoded([entry_id for entry_id, _ in entries], events, [], vanished)
    except (KeyError, ValueError, OverflowError):
        return _decode_each(present, vanished)


def _decode_each(entries: Sequence[tuple[bytes, dict]], vanished: list[bytes]) -> Decoded:
    good_ids, rows, invalid = [], [], []
    for entry_id, fields in entries:
        try:
            row = _parse(fields)
        except ValueError as error:
            invalid.append((entry_id, fields, str(error)))
            continue
        good_ids.append(entry_id)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(FIELDS)) if rows else None
    events = Events.from_frame(frame) if frame is not None else Events.empty()
    return Decoded(good_ids, events, invalid, vanished)


def _parse(fields: dict) -> tuple[int, ...]:
    missing = [name for name in FIELDS if name.encode() not in fields]
    if missing:
        raise ValueError(f"missing fields {missing}")
    kind = fields[b"kind"]
    if kind not in _KIND_CODE:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    values = []
    for name in FIELDS[1:]:
        raw = fields[name.encode()]
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{name} is not an integer: {raw!r}") from None
        if not -(2**63) <= value < 2**63:
            raise ValueError(f"{name} is out of the int64 range: {raw!r}")
        values.append(value)
    if values[-1] < 0:
        raise ValueError(f"cost_micros is negative: {values[-1]}")
    return (_KIND_CODE[kind], *values)


def entry_millis(entry_ids: Sequence[bytes]) -> np.ndarray:
    """The wall-clock append time (ms) that Redis encodes in each entry id."""
    return np.array([int(entry_id.split(b"-", 1)[0]) for entry_id in entry_ids], dtype=np.int64)
