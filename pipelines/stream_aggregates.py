"""Windowed streaming aggregates: the pure functions and the tile state.

Time semantics (the contract's stream windows). A value at instant ``T`` counts the
events with ``window_start(T) <= ts < T``, where ``window_start`` is ``T`` floored to the
window's tile minus the window's length (or the UTC midnight for "today"). The worker
keeps per-entity sums in tiles of one minute and one hour, so the value at ``T`` is a
sum of whole tiles; :func:`recompute` gets the same number straight from the events,
with the same :func:`contributions`, :func:`window_start` and :func:`finish`.

A value changes only when an event arrives or a tile boundary passes. The aggregator
therefore emits rows at two kinds of instants: at the end of each micro-batch (for the
entities it touched, stamped one microsecond after the newest event, so the row counts
every event processed) and at each tile boundary where some tile leaves a window (for
the entities with data in that tile, stamped at the boundary). Between two rows of an
entity its value is constant, which is what makes a point-in-time join of the pushed
rows exact.

Lateness: an event more than ``lateness`` older than the newest event seen before it
is not counted; the aggregator returns it for reporting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core import units
from core.event_bus import CLICK, IMPRESSION, Events
from feature_repo import contract
from feature_repo.contract import StreamWindow, ViewSpec

RAW_MEASURES = ("impressions", "clicks", "spend")
WINDOWS = (*contract.STREAM_WINDOWS, contract.TODAY)


@dataclass(frozen=True)
class StreamView:
    """How one streamed view is computed: its entity column and, per feature, the
    measure and window it comes from (``ctr`` is clicks over impressions)."""

    spec: ViewSpec
    entity: str
    outputs: tuple[tuple[str, str, StreamWindow], ...]

    @property
    def windows(self) -> tuple[StreamWindow, ...]:
        return tuple(dict.fromkeys(window for _, _, window in self.outputs))

    @property
    def measures(self) -> tuple[int, ...]:
        """Indices into RAW_MEASURES this view needs."""
        needed = {m for _, measure, _ in self.outputs for m in _raw(measure)}
        return tuple(i for i, name in enumerate(RAW_MEASURES) if name in needed)

    @property
    def push_source(self) -> str:
        return contract.push_source_name(self.spec.name)

    @classmethod
    def of(cls, spec: ViewSpec) -> StreamView:
        (entity,) = spec.entities
        known = {
            contract.feature_name(entity.name, measure, window): (measure, window)
            for measure in (*RAW_MEASURES, "ctr")
            for window in WINDOWS
        }
        unknown = [f.name for f in spec.features if f.name not in known]
        if unknown:
            raise ValueError(f"{spec.name}: no stream aggregate computes {unknown}")
        outputs = tuple((f.name, *known[f.name]) for f in spec.features)
        return cls(spec, entity.join_key, outputs)


def _raw(measure: str) -> tuple[str, ...]:
    return ("clicks", "impressions") if measure == "ctr" else (measure,)


STREAM_VIEWS = {spec.name: StreamView.of(spec) for spec in contract.STREAM_VIEWS}


# ------------------------------------------------------------------ pure functions


def contributions(events: Events) -> np.ndarray:
    """What each event adds to (impressions, clicks, spend in micros): shape (n, 3)."""
    out = np.zeros((len(events), len(RAW_MEASURES)), dtype=np.int64)
    out[:, 0] = events.kind == IMPRESSION
    out[:, 1] = events.kind == CLICK
    out[:, 2] = events.cost_micros
    return out


def window_start(at: np.ndarray | int, window: StreamWindow) -> np.ndarray:
    """First instant counted by ``window`` at ``at`` (UTC microseconds)."""
    at = np.asarray(at, dtype=np.int64)
    if window.calendar_day:
        return at // units.MICROS_PER_DAY * units.MICROS_PER_DAY
    tile = units.span_micros(window.tile)
    return at // tile * tile - units.span_micros(window.length)


def finish(
    view: StreamView, entity_ids: np.ndarray, stamps: np.ndarray, sums: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Feature rows from window sums. ``sums[window.label]`` is (n, 3) over RAW_MEASURES."""
    columns: dict[str, object] = {view.entity: np.asarray(entity_ids, dtype=np.int64)}
    for name, measure, window in view.outputs:
        total = sums[window.label]
        if measure == "ctr":
            impressions = total[:, 0].astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                rate = np.minimum(total[:, 1] / impressions, 1.0)
            columns[name] = np.where(impressions > 0, rate, np.nan)
        elif measure == "spend":
            columns[name] = total[:, 2] / units.MONEY_MICROS
        else:
            columns[name] = total[:, RAW_MEASURES.index(measure)].astype(np.int64)
    columns["event_timestamp"] = pd.to_datetime(
        np.asarray(stamps, dtype=np.int64), unit="us", utc=True
    )
    return pd.DataFrame(columns)


def recompute(
    view: StreamView, events: Events, entity_ids: np.ndarray, stamps: np.ndarray
) -> pd.DataFrame:
    """The view's values for (entity, instant) pairs, straight from the events.

    Every event counts, whatever order it arrived in: this is the reference the stream
    worker is held to.
    """
    entity_ids = np.asarray(entity_ids, dtype=np.int64)
    stamps = np.asarray(stamps, dtype=np.int64)
    keys = getattr(events, view.entity)
    order = np.lexsort((events.ts, keys))
    keys, ts = keys[order], events.ts[order]
    running = np.vstack(
        [np.zeros((1, 3), np.int64), np.cumsum(contributions(events)[order], axis=0)]
    )

    def count_before(instants: np.ndarray) -> np.ndarray:
        """Index of the first event of the entity at or after each instant."""
        first = np.searchsorted(keys, entity_ids, side="left")
        last = np.searchsorted(keys, entity_ids, side="right")
        out = np.empty(len(entity_ids), dtype=np.int64)
        for i in range(len(entity_ids)):  # per query: a binary search in its entity's run
            out[i] = first[i] + np.searchsorted(ts[first[i] : last[i]], instants[i], side="left")
        return out

    end = count_before(stamps)
    sums = {
        w.label: running[end] - running[count_before(window_start(stamps, w))] for w in view.windows
    }
    return finish(view, entity_ids, stamps, sums)


# ------------------------------------------------------------------ tile state


class SlotIndex:
    """Entity id -> dense row in the tile arrays."""

    def __init__(self) -> None:
        self.slot_of: dict[int, int] = {}
        self.ids: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    def slots(self, entity_ids: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(entity_ids, return_inverse=True)
        found = np.empty(len(unique), dtype=np.int64)
        for i, entity in enumerate(unique.tolist()):
            slot = self.slot_of.get(entity)
            if slot is None:
                slot = self.slot_of[entity] = len(self.ids)
                self.ids.append(entity)
            found[i] = slot
        return found[inverse]

    def entity_ids(self, slots: np.ndarray) -> np.ndarray:
        return np.asarray(self.ids, dtype=np.int64)[slots]


class TileRing:
    """Per-slot sums for the most recent ``positions`` tiles of one resolution.

    Tile ``k`` (``ts // tile``) lives at position ``k % positions``; a newer tile taking
    the position evicts the older one, which by then is outside every window and the
    lateness bound (the ring is sized for that).
    """

    def __init__(self, tile: int, positions: int, measures: int, dtype) -> None:
        self.tile = tile
        self.positions = positions
        self.data = np.zeros((0, positions, measures), dtype=dtype)
        self.held = np.full(positions, -1, dtype=np.int64)
        self.slots_by_tile: dict[int, np.ndarray] = {}

    def grow(self, slots: int) -> None:
        if slots > len(self.data):
            extra = max(slots, 2 * len(self.data), 1024) - len(self.data)
            pad = np.zeros((extra, *self.data.shape[1:]), dtype=self.data.dtype)
            self.data = np.concatenate([self.data, pad])

    def claim(self, tile: int) -> int | None:
        """Make ``tile``'s position hold it; returns the evicted tile, if any."""
        position = tile % self.positions
        held = int(self.held[position])
        if held == tile:
            return None
        if held > tile:
            raise RuntimeError(f"tile {tile} is older than the ring keeps (holds {held})")
        self.data[:, position] = 0
        self.held[position] = tile
        if held >= 0:
            self.slots_by_tile.pop(held, None)
            return held
        return None

    def add(
        self, slots: np.ndarray, tiles: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, list[int]]:
        """Add values; returns the unique (slot, tile) cells touched and evicted tiles."""
        evicted = [t for t in (self.claim(int(tile)) for tile in np.unique(tiles)) if t is not None]
        np.add.at(self.data, (slots, tiles % self.positions), values.astype(self.data.dtype))
        cells = np.unique(np.stack([slots, tiles], axis=1), axis=0)
        for tile in np.unique(cells[:, 1]).tolist():
            new = cells[cells[:, 1] == tile, 0]
            known = self.slots_by_tile.get(tile)
            self.slots_by_tile[tile] = new if known is None else np.union1d(known, new)
        return cells, evicted

    def window_sum(self, slots: np.ndarray, first_tile: int, last_tile: int) -> np.ndarray:
        """Sums over tiles ``first_tile..last_tile`` (inclusive) for each slot."""
        out = np.zeros((len(slots), self.data.shape[2]), dtype=np.int64)
        if last_tile < first_tile or not len(slots):
            return out
        tiles = np.arange(first_tile, last_tile + 1)
        positions = tiles % self.positions
        if (self.held[positions] > tiles).any():
            raise RuntimeError("a window reaches back further than the ring keeps")
        present = positions[self.held[positions] == tiles]
        if len(present):
            out += self.data[np.ix_(slots, present)].sum(axis=1, dtype=np.int64)
        return out

    def cell_values(self, cells: np.ndarray) -> np.ndarray:
        return self.data[cells[:, 0], cells[:, 1] % self.positions]


@dataclass
class ViewState:
    view: StreamView
    index: SlotIndex
    rings: dict[int, TileRing]  # by tile length in microseconds

    @classmethod
    def new(cls, view: StreamView, lateness: int) -> ViewState:
        rings = {}
        for tile, windows in _windows_by_tile(view).items():
            longest = max(units.span_micros(w.length) for w in windows)
            # Whole window + the tile being filled + lateness + one spare either side.
            positions = longest // tile + 2 + -(-lateness // tile) + 2
            dtype = np.int64 if "spend" in [RAW_MEASURES[m] for m in view.measures] else np.int32
            rings[tile] = TileRing(tile, positions, len(RAW_MEASURES), dtype)
        return cls(view, SlotIndex(), rings)

    def sums(self, slots: np.ndarray, at: int) -> dict[str, np.ndarray]:
        out = {}
        for window in self.view.windows:
            ring = self.rings[units.span_micros(window.tile)]
            first = int(window_start(at, window)) // ring.tile
            out[window.label] = ring.window_sum(slots, first, (at - 1) // ring.tile)
        return out

    def expiring(self, boundary: int) -> np.ndarray:
        """Slots whose value changes at ``boundary`` because a tile leaves a window."""
        found = []
        for window in self.view.windows:
            ring = self.rings[units.span_micros(window.tile)]
            if boundary % ring.tile:
                continue
            if window.calendar_day:
                if boundary % units.MICROS_PER_DAY == 0:
                    first = (boundary - units.MICROS_PER_DAY) // ring.tile
                    found += [
                        ring.slots_by_tile.get(t) for t in range(first, boundary // ring.tile)
                    ]
                continue
            # The tile that was the first counted just before the boundary.
            leaving = boundary // ring.tile - units.span_micros(window.length) // ring.tile - 1
            found.append(ring.slots_by_tile.get(leaving))
        slots = [f for f in found if f is not None and len(f)]
        return np.unique(np.concatenate(slots)) if slots else np.empty(0, np.int64)


def _windows_by_tile(view: StreamView) -> dict[int, list[StreamWindow]]:
    out: dict[int, list[StreamWindow]] = {}
    for window in view.windows:
        out.setdefault(units.span_micros(window.tile), []).append(window)
    return out


@dataclass
class Step:
    """What one micro-batch produced."""

    rows: dict[str, pd.DataFrame]
    late: np.ndarray  # indices into the batch's events
    cells: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict)
    evicted: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    watermark: int | None = None


class StreamAggregator:
    """Tile state for the streamed views and the rows each micro-batch changes.

    ``watermark`` is one microsecond after the newest event counted: every row the
    aggregator emits is stamped at or before it.
    """

    def __init__(self, views: list[StreamView], lateness: int) -> None:
        self.lateness = lateness
        self.states = {view.spec.name: ViewState.new(view, lateness) for view in views}
        self.watermark: int | None = None
        self.boundary = units.span_micros(contract.MINUTE_TILE)

    def apply(self, events: Events) -> Step:
        if not len(events):
            return Step({}, np.empty(0, np.int64), watermark=self.watermark)
        seen = np.maximum.accumulate(events.ts)
        before = np.concatenate([[-1 if self.watermark is None else self.watermark - 1], seen[:-1]])
        if self.watermark is not None:
            before = np.maximum(before, self.watermark - 1)
        late = events.ts < before - self.lateness
        if self.watermark is None:
            late[0] = False
        accepted = events.take(np.flatnonzero(~late))
        accepted = accepted.take(np.argsort(accepted.ts, kind="stable"))
        values = contributions(accepted)
        step = Step({}, np.flatnonzero(late), watermark=self.watermark)
        if not len(accepted):
            return step
        # The first event starts the clock: nothing is known before it.
        previous = int(accepted.ts[0]) if self.watermark is None else self.watermark
        new_watermark = max(int(accepted.ts[-1]) + 1, previous)
        first_boundary = (previous // self.boundary + 1) * self.boundary
        boundaries = range(first_boundary, new_watermark + 1, self.boundary)
        touched: dict[str, list[np.ndarray]] = {name: [] for name in self.states}
        emitted: dict[str, list[tuple[np.ndarray, int, dict[str, np.ndarray]]]] = {
            name: [] for name in self.states
        }
        folded = 0
        for boundary in boundaries:
            upto = int(np.searchsorted(accepted.ts, boundary, side="left"))
            self._fold(accepted, values, folded, upto, step, touched)
            folded = upto
            for name, state in self.states.items():
                slots = state.expiring(boundary)
                if len(slots):
                    emitted[name].append((slots, boundary, state.sums(slots, boundary)))
        self._fold(accepted, values, folded, len(accepted), step, touched)
        step.rows = {}
        for name, state in self.states.items():
            if touched[name]:
                slots = np.unique(np.concatenate(touched[name]))
                emitted[name].append((slots, new_watermark, state.sums(slots, new_watermark)))
            if emitted[name]:
                step.rows[name] = self._rows(state, emitted[name])
        self.watermark = step.watermark = new_watermark
        return step

    def _fold(
        self, events: Events, values: np.ndarray, start: int, stop: int, step: Step, touched
    ) -> None:
        if stop <= start:
            return
        chunk = slice(start, stop)
        for name, state in self.states.items():
            slots = state.index.slots(getattr(events, state.view.entity)[chunk])
            touched[name].append(np.unique(slots))
            for tile, ring in state.rings.items():
                ring.grow(len(state.index))
                cells, evicted = ring.add(slots, events.ts[chunk] // tile, values[chunk])
                step.cells.setdefault((name, tile), []).append(cells)
                step.evicted.setdefault((name, tile), []).extend(evicted)

    @staticmethod
    def _rows(state: ViewState, emitted: list[tuple[np.ndarray, int, dict]]) -> pd.DataFrame:
        """One frame for the batch, by time; an entity has at most one row per instant."""
        slots = np.concatenate([slots for slots, _, _ in emitted])
        stamps = np.concatenate([np.full(len(slots), at, np.int64) for slots, at, _ in emitted])
        sums = {
            label: np.concatenate([part[label] for _, _, part in emitted])
            for label in emitted[0][2]
        }
        rows = finish(state.view, state.index.entity_ids(slots), stamps, sums)
        return rows.drop_duplicates([state.view.entity, "event_timestamp"], keep="last")
