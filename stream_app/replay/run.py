"""`stream-app replay`: run the core over a JSON-lines file of Segment events, in event-time order.

Lines are read as raw bytes and go through the same decoder as Kafka messages, so a malformed line is
reported exactly as the worker would dead-letter it. Events are sorted by (timestamp, messageId) and fed
in chunks; at the end the clock moves to `--until` (or to the last event) and every timer due by then
fires. The RFM population is refreshed at every UTC midnight of event time and at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import IO, Any, Iterable

from ..engine import BatchResult, PartitionEngine, RawRecord
from ..engine.partition import CLOCK_KEY, DEFAULT_HOT_PROFILES
from ..events import Event, InvalidEvent
from ..segments.config import CatalogConfig
from ..segments.rfm_population import RfmPopulation
from ..timeutil import DAY_MS
from ..state.encoding import decode_profile
from ..transitions import memberships_record

CHUNK = 5000


class InMemoryStore(dict):
    """The replay and test implementation of the profile store, with each profile's schedule entry
    (`engine/schedule_entry.py`) beside it when the writer gives one."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:  # type: ignore[override]
        return dict.get(self, key)

    def write(self, writes: dict[str, bytes | None], entries: dict[str, bytes] | None = None) -> None:
        for key, value in writes.items():
            if value is None:
                self.pop(key, None)
                self.entries.pop(key, None)
            else:
                self[key] = value
                entry = entries.get(key) if entries is not None else None
                if entry is None:
                    self.entries.pop(key, None)
                else:
                    self.entries[key] = entry

    def schedule_entries(self) -> list[tuple[str, bytes]]:
        entries = self.entries
        return [(key, entries.get(key, b"")) for key in self]


def _event_order(pair: tuple[RawRecord, Event | InvalidEvent]) -> tuple[int, str]:
    event = pair[1]
    if isinstance(event, InvalidEvent):
        return (-1, "")  # invalid lines go first; the engine dead-letters them
    return (event.ts, event.message_id)


def replay_records(
    lines: Iterable[bytes],
    cfg: CatalogConfig,
    until_ms: int | None = None,
    progress: bool = False,
    store: InMemoryStore | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], InMemoryStore]:
    """Returns (transitions, dead letters, final store)."""
    wall = int(time.time() * 1000)
    store = store if store is not None else InMemoryStore()
    # one engine holds every user (a worker spreads them over partitions): as many hot profiles as a
    # worker owning the default 6 partitions keeps
    engine = PartitionEngine(0, store, cfg, use_wall_clock=False, hot_profiles=6 * DEFAULT_HOT_PROFILES)
    engine.rebuild_schedule()
    numbered = [(n, line.rstrip(b"\r\n")) for n, line in enumerate(lines) if line.strip()]  # n: 0-based line
    decoded = engine.decode((RawRecord(raw, "file", 0, n) for n, raw in numbered), wall)
    decoded.sort(key=_event_order)
    transitions: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(decoded), unit="ev", desc="replay", file=sys.stderr, disable=len(decoded) < 20000)
    def collect(result: BatchResult) -> None:
        store.write(result.writes, result.entries)
        transitions.extend(result.transitions)
        dead.extend({"reason": inv.reason.value, "detail": inv.detail, "line": rec.offset + 1} for rec, inv in result.dead_letters)

    last_ts = max((e.ts for _, e in decoded if not isinstance(e, InvalidEvent)), default=0)
    final = until_ms if until_ms is not None else last_ts
    for part in _by_refresh_period(decoded, cfg):
        for start in range(0, len(part), CHUNK):
            collect(engine.handle_decoded(part[start:start + CHUNK], int(time.time() * 1000)))
            if bar is not None:
                bar.update(len(part[start:start + CHUNK]))
        boundary = _period_end(part, cfg)
        if boundary is not None and boundary <= final:
            collect(engine.advance_to(boundary, int(time.time() * 1000)))
            _refresh_rfm(engine, collect)
    if bar is not None:
        bar.close()
    collect(engine.advance_to(final, int(time.time() * 1000)))
    _refresh_rfm(engine, collect)
    return transitions, dead, store


def _by_refresh_period(decoded: list[tuple[RawRecord, Event | InvalidEvent]], cfg: CatalogConfig) -> Iterable[list[Any]]:
    """Sorted events split at UTC day boundaries: the replay refreshes the RFM population once per day
    of event time (the worker does it every `rfm.refresh_interval` of wall time)."""
    if not cfg.rfm_enabled:
        yield decoded
        return
    part: list[Any] = []
    period = None
    for pair in decoded:
        event = pair[1]
        day = None if isinstance(event, InvalidEvent) else event.ts // DAY_MS
        if part and day is not None and period is not None and day != period:
            yield part
            part = []
        if day is not None:
            period = day
        part.append(pair)
    if part:
        yield part


def _period_end(part: list[tuple[RawRecord, Event | InvalidEvent]], cfg: CatalogConfig) -> int | None:
    last = part[-1][1]
    if not cfg.rfm_enabled or isinstance(last, InvalidEvent):
        return None
    return (last.ts // DAY_MS + 1) * DAY_MS


def _refresh_rfm(engine: PartitionEngine, collect: Any) -> None:
    if engine.cfg.rfm_enabled:
        population = RfmPopulation({engine.partition: engine.rfm_summary()})
        collect(engine.refresh_population(population, int(time.time() * 1000)))


def final_memberships(store: InMemoryStore, cfg: CatalogConfig) -> list[dict[str, Any]]:
    rows = []
    for key in sorted(store):
        if key == CLOCK_KEY:
            continue
        profile = decode_profile(store[key])
        rows.append(memberships_record(key, profile.members, profile.t, cfg.version))
    return rows


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    out: IO[str]
    with (sys.stdout if str(path) == "-" else open(path, "w")) as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def replay_file(input_path: Path, output_path: Path, cfg: CatalogConfig, until_ms: int | None, memberships_path: Path | None) -> int:
    with open(input_path, "rb") as handle:
        transitions, dead, store = replay_records(handle, cfg, until_ms, progress=True)
    written = _write_jsonl(output_path, transitions)
    if memberships_path is not None:
        _write_jsonl(memberships_path, final_memberships(store, cfg))
    print(f"replay: {written} transitions -> {output_path}", file=sys.stderr)
    if dead:
        print(f"replay: {len(dead)} invalid lines skipped, e.g. line {dead[0]['line']}: {dead[0]['reason']}: {dead[0]['detail']}", file=sys.stderr)
    return 0
