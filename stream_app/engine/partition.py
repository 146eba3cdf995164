"""A partition's engine: its clocks, the users' due schedules, and batch processing.

The rule is the catalog's "Order and the clock" and "History is decided in its own time":

- An event takes effect at once, in its user's order: the user's own timers due up to its timestamp
  fire first (`timeline.take_event`). An event older than the user's decided-until time (`profile.t`)
  is late: applied, decided at that time, and nothing already emitted is taken back.
- The live clock decides the timers of users with nothing newer: the highest event timestamp seen,
  never ahead of the wall clock, minus the lateness allowance; when the partition is caught up and idle
  for longer than the allowance, the wall clock minus the allowance. It never moves backwards.
- An event older than the backfill age when read (by the wall clock) belongs to a backfill. While a
  backfill runs, users decided only up to a moment older than the backfill age follow the backfill
  clock (the highest backfill timestamp read, minus the allowance); their timers wait in `parked`. A
  backfill has drained after `backfill_drained_after` of wall time without a backfill event; then
  its users follow the live clock. Transitions caused by a backfill
  event or decided on the backfill clock are historical.

Both clocks are stored with the partition's state. A replay has no wall clock and no backfill;
`advance_to` moves its clock at the end.

A worker's engine fires the timers of at most `timers_per_step` users per call (`tick`, `advance_to`,
`handle`; the processor sets it from a budget per transaction): a backfill drained, or a clock that
jumps after a pause, can make every user of the partition due at once, and one call firing them all
would hold one transaction open for longer than its timeout (the coordinator then aborts it and fences
the process). The others stay due (`left_due`) and fire at the next calls, each user's own timers in
order at their own due times, so the transitions are the same; only their `emitted_at` is later. A
user's event, erasure or RFM refresh fires that user's due timers first; new definitions or a new
population wait until none is left due (the caller's rule: `reevaluate_all` and `refresh_population`
expect it). New definitions decide at most half `timers_per_step` stored users per call
(`decide_pending` goes on with the pass; engine/definitions_pass.py) and leave the timers they make due
to the next call's firing; each user not reached yet is decided before anything else touches it. A replay does everything at once (no bound). docs/architecture.md, "A
bounded number of users fire per transaction".

Hot profiles stay decoded across batches (`hot`, a bounded LRU, written through): each batch still
returns every profile it changed, encoded, in `BatchResult.writes`, and the caller must apply those
writes to the store before the next call, or else forget them: discard the engine, or (an engine made
with `undo`, the worker's) call `rollback` on an abort, which returns clocks, schedules, RFM index and
hot profiles to the last `checkpoint` in the time of the changes since, not of the partition's users.
A batch takes its profiles out of `hot` and puts them back only when it returns, so one that raises
half-way leaves none of its changes there.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Protocol

import msgpack

from ..events import Event, InvalidEvent, decode_event
from ..events.decode import DEFAULT_MAX_EVENT_BYTES, ERASURE
from ..segments import rfm
from ..segments.catalog import RuleDues
from ..segments.config import CatalogConfig
from ..segments.rfm_population import PartitionSummary
from ..state import bounds
from ..state.encoding import decode_profile, encode_profile
from ..state.profile import Profile
from ..timers import DueSchedule
from ..timeutil import format_timestamp
from ..transitions import Change, memberships_record, to_record
from .definitions_pass import DefinitionsPass
from .hot_profiles import HotProfiles
from .schedule_entry import decode_entry, encode_entry, fingerprint
from .timeline import advance, erase, next_due, reevaluate, refresh, take_event

CLOCK_KEY = "\x00partition-clock"
DEFAULT_HOT_PROFILES = 5_000  # decoded profiles kept across batches, per partition (STREAM_APP_HOT_PROFILES)
# users whose timers a worker fires in one transaction, shared by its partitions (about 1.5 s of work at
# 100-150 us a user, against a 10 s transaction timeout), and the least per call (docs/architecture.md)
WORKER_TIMERS_PER_TRANSACTION = 12_000
WORKER_MIN_TIMERS_PER_CALL = 100


class ProfileStore(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def items(self) -> Iterable[tuple[str, bytes]]: ...

    def schedule_entries(self) -> Iterable[tuple[str, bytes]] | None:
        """Every profile's key with its stored schedule entry (b"" where none is stored), or None when
        the store cannot vouch that the entries are complete and current (then every profile is read)."""
        ...


@dataclass(slots=True)
class RawRecord:
    value: bytes
    topic: str = ""
    partition: int = 0
    offset: int = -1


@dataclass
class BatchResult:
    transitions: list[dict[str, Any]] = field(default_factory=list)
    memberships: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # None = tombstone
    dead_letters: list[tuple[RawRecord, InvalidEvent]] = field(default_factory=list)
    writes: dict[str, bytes | None] = field(default_factory=dict)  # None = delete
    entries: dict[str, bytes] = field(default_factory=dict)  # each written profile's schedule entry
    transition_times: list[int] = field(default_factory=list)  # each transition's `at`, epoch ms (metrics)
    counts: Counter = field(default_factory=Counter)  # "type:<t>", "duplicate", "late", "backfill", "dropped_dormant", "evicted:<structure>"
    clock: int = 0
    backfill_clock: int | None = None


def message_hash(message_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


class _Batch:
    """Profiles touched by one batch: loaded once (from the hot profiles, else decoded from the store),
    written once."""

    def __init__(self, store: ProfileStore, hot: HotProfiles) -> None:
        self.store = store
        self.hot = hot
        self.profiles: dict[str, Profile] = {}
        self.dues: dict[str, RuleDues] = {}
        # the members each profile had when loaded: `_diff` replaces `profile.members`, never edits it
        self.members_before: dict[str, dict[str, str]] = {}
        self.deleted: set[str] = set()
        # deleted in this batch, then started again by a later event: its memberships record is written
        # whatever it holds, since the topic's last record is the old user's
        self.recreated: set[str] = set()
        self.changes: list[Change] = []
        self.backfill: set[int] = set()  # indexes in `changes` of the changes that are historical as backfill

    def load(self, user_id: str) -> Profile:
        profile = self.profiles.get(user_id)
        if profile is None:
            if user_id in self.deleted:  # deleted earlier in this batch: the store still holds the old profile
                self.deleted.discard(user_id)
                self.recreated.add(user_id)
                profile, dues = Profile(), RuleDues()
            else:
                hot = self.hot.take(user_id)  # taken out: back in `hot` only when the batch returns
                if hot is not None:
                    profile, dues = hot
                else:
                    data = self.store.get(user_id)
                    profile = decode_profile(data) if data is not None else Profile()
                    dues = RuleDues()
            self.profiles[user_id] = profile
            self.dues[user_id] = dues
            self.members_before[user_id] = profile.members
        return profile

    def delete(self, user_id: str) -> None:
        self.profiles.pop(user_id, None)
        self.dues.pop(user_id, None)
        self.recreated.discard(user_id)
        self.deleted.add(user_id)

    def add(self, changes: list[Change], backfill: bool) -> None:
        if backfill and changes:
            self.backfill.update(range(len(self.changes), len(self.changes) + len(changes)))
        self.changes.extend(changes)


class PartitionEngine:
    def __init__(
        self,
        partition: int,
        store: ProfileStore,
        cfg: CatalogConfig,
        *,
        use_wall_clock: bool = True,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        hot_profiles: int = DEFAULT_HOT_PROFILES,
        undo: bool = False,
        timers_per_step: int | None = None,
    ) -> None:
        self.partition = partition
        self.store = store
        self.cfg = cfg
        self.use_wall_clock = use_wall_clock
        self.max_event_bytes = max_event_bytes
        self.timers_per_step = timers_per_step  # None: every due user at each call
        self.schedule = DueSchedule(undo)  # users following the live clock: their next due time
        self.parked = DueSchedule(undo)  # users following the backfill clock, due after it
        self.clock = 0  # the live clock
        self.max_event_ts = 0
        self.last_arrival_wall: int | None = None
        self.backfill_max_ts: int | None = None  # newest backfill event read; None: no backfill running
        self.last_backfill_wall: int | None = None
        # the live clock when a backfill began while the bound per call had left users due on it, or a
        # pass of new definitions had not reached every user: those due by then fire on the live clock,
        # as an unbounded call fired them before the backfill began (None: no such users left). Not
        # stored: a rebuilt schedule cannot tell those users from the backfill's own (parked) ones, so
        # after a restart they follow the backfill clock instead (docs/architecture.md, "A bounded number
        # of users fire per transaction")
        self.live_due_before_backfill: int | None = None
        # scored RFM users: user -> (last order, F, M, current rfm member), as of the user's time
        self.rfm_index: dict[str, tuple[int, int, float, str | None]] = {}
        # the definitions version every stored user is decided under (a new partition's: the current)
        self.saved_definitions: str = cfg.version
        # new definitions being applied a bounded number of users per call (None: no pass running), and
        # a pass a stopped process left half-way: (version, loaded_at), resumed with the same loaded_at
        self.definitions_pass: DefinitionsPass | None = None
        self.unfinished_pass: tuple[str, int] | None = None
        # the most recently used users' profiles, decoded, as last written (and their rules' due times);
        # at most `hot_profiles` of them (0: none kept between batches)
        self.hot = HotProfiles(hot_profiles)
        saved = store.get(CLOCK_KEY)
        if saved is not None:
            state = msgpack.unpackb(saved)
            self.clock, self.max_event_ts = state[1], state[2]
            self.saved_definitions = state[3] if len(state) > 3 else ""
            self.backfill_max_ts = state[4] if len(state) > 4 else None
            if len(state) > 6 and state[5] is not None:
                self.unfinished_pass = (state[5], state[6])
        # with `undo` (the worker): what `rollback` needs to return to the last `checkpoint`
        self._rfm_undo: dict[str, tuple[int, int, float, str | None] | None] | None = {} if undo else None
        self._touched: set[str] = set()  # users whose hot profile changed since the checkpoint
        self.computed_entries: dict[str, bytes] = {}  # schedule entries the last rebuild had to compute
        self.rebuilt_profiles = 0  # profiles the last rebuild read
        self._checkpoint: tuple[Any, ...] = self._scalars()

    # -- an aborted transaction --------------------------------------------------------------------
    def _scalars(self) -> tuple[Any, ...]:
        return (self.cfg, self.clock, self.max_event_ts, self.last_arrival_wall, self.backfill_max_ts,
                self.last_backfill_wall, self.saved_definitions, self.definitions_pass, self.unfinished_pass,
                self.live_due_before_backfill)

    def checkpoint(self) -> None:
        """The results returned so far are committed (their writes are in the store): `rollback` returns
        here. Only for an engine made with `undo`."""
        self._checkpoint = self._scalars()
        self.schedule.checkpoint()
        self.parked.checkpoint()
        if self.definitions_pass is not None:
            self.definitions_pass.checkpoint()
        if self._rfm_undo is not None:
            self._rfm_undo = {}
        self._touched = set()

    def rollback(self) -> None:
        """Forget every result since the last checkpoint, whose writes never reached the store (an aborted
        transaction): clocks, definitions, schedules and RFM index as they were, and the hot profiles those
        results changed dropped (decoded again from the store). In the time of the changes since the
        checkpoint, not of the partition's users."""
        rfm_undo = self._rfm_undo
        if rfm_undo is None:
            raise RuntimeError("rollback needs an engine made with undo=True")
        (self.cfg, self.clock, self.max_event_ts, self.last_arrival_wall, self.backfill_max_ts,
         self.last_backfill_wall, self.saved_definitions, self.definitions_pass, self.unfinished_pass,
         self.live_due_before_backfill) = self._checkpoint
        if self.definitions_pass is not None:
            self.definitions_pass.rollback()
        self.schedule.rollback()
        self.parked.rollback()
        rfm_index = self.rfm_index
        for user_id, value in rfm_undo.items():
            if value is None:
                rfm_index.pop(user_id, None)
            else:
                rfm_index[user_id] = value
        for user_id in self._touched:
            self.hot.take(user_id)
        self.checkpoint()

    def _set_rfm(self, user_id: str, value: tuple[int, int, float, str | None] | None) -> None:
        rfm_index, undo = self.rfm_index, self._rfm_undo
        if undo is not None and user_id not in undo:
            undo[user_id] = rfm_index.get(user_id)
        if value is None:
            rfm_index.pop(user_id, None)
        else:
            rfm_index[user_id] = value

    # -- state ------------------------------------------------------------------------------------
    def rebuild_schedule(self) -> Counter:
        """Derive the due schedule, the RFM index and the population from the store (after assignment or
        restart), in one pass: from each profile's schedule entry where the store vouches for its entries
        and the entry is current, else from the profile itself. Returns the population: users per
        (segment, member). Sets `rebuilt_profiles` (how many profiles were read), and `computed_entries`:
        the entries this had to compute, for the caller to store (`PartitionStore.keep_schedule_entries`;
        all of them when the store could not vouch for its entries)."""
        memberships: list[tuple[str, str]] = []
        dues: dict[str, int] = {}
        rfm_index: dict[str, tuple[int, int, float, str | None]] = {}
        computed: dict[str, bytes] = {}
        definitions = fingerprint(self.cfg)
        store = self.store
        entries = store.schedule_entries()
        profiles = 0
        for user_id, data in entries if entries is not None else store.items():
            if user_id == CLOCK_KEY:
                continue
            entry = decode_entry(data, definitions) if entries is not None else None
            if entry is None:
                stored = store.get(user_id) if entries is not None else data  # else `data` is the profile
                if stored is None:
                    continue
                profile = decode_profile(stored)
                due, rfm_value, members = next_due(profile, self.cfg), self._rfm_entry(profile), profile.members
                computed[user_id] = encode_entry(definitions, due, rfm_value, members)
            else:
                due, rfm_value, members = entry
            profiles += 1
            if due is not None:
                dues[user_id] = due
            if rfm_value is not None:
                rfm_index[user_id] = rfm_value
            memberships.extend(members.items())
        self.schedule.load(dues)  # one heapify; no undo record of every user
        self.live_due_before_backfill = None  # (see __init__)
        self.rfm_index = rfm_index
        self.rebuilt_profiles = profiles
        self.computed_entries = computed
        self.checkpoint()  # the store's state, committed
        return Counter(memberships)

    def _rfm_entry(self, profile: Profile) -> tuple[int, int, float, str | None] | None:
        value = rfm.values(profile, profile.t, self.cfg) if self.cfg.rfm_enabled else None
        return None if value is None else (*value, profile.members.get(rfm.FAMILY))

    # -- RFM population ---------------------------------------------------------------------------
    def rfm_summary(self, reference: int | None = None) -> PartitionSummary:
        """This partition's scored users as sketches, for merging with the other partitions'."""
        return PartitionSummary.build(((lo, f, m) for lo, f, m, _ in self.rfm_index.values()), self.clock, reference)

    def refresh_population(self, population: Any, wall_ms: int) -> BatchResult:
        """A new merged population: every scored user is scored again; a changed name has cause `refresh`.
        Only users whose name changes are loaded from the store."""
        self.cfg = cfg = replace(self.cfg, rfm_population=population)
        result = BatchResult()
        batch = _Batch(self.store, self.hot)
        self._advance(batch, result, wall_ms)
        backfill_clock = self.backfill_clock
        for user_id, (last_order, f, m, member) in list(self.rfm_index.items()):
            if rfm.name_for((last_order, f, m), population, cfg) != member:
                self._decide_if_pending(batch, user_id, wall_ms)
                self._fire_if_due(batch, result, user_id, wall_ms, self.clock, backfill_clock)  # the bound may have left it due
                if user_id in batch.deleted:  # silent past the dormancy period: dropped, nothing to refresh
                    continue
                profile = batch.load(user_id)
                dues = batch.dues[user_id]
                if backfill_clock is not None and self._follows_backfill(profile, wall_ms):
                    batch.add(refresh(user_id, profile, backfill_clock, cfg, population.version, dues), True)
                else:
                    batch.add(refresh(user_id, profile, self.clock, cfg, population.version, dues), False)
                self._reschedule(user_id, profile, wall_ms, dues)
        return self._finish(batch, result, wall_ms)

    def _adopt(self, cfg: CatalogConfig) -> CatalogConfig:
        """New definitions keep the current population until the next refresh."""
        if cfg.rfm_population is None and self.cfg.rfm_population is not None:
            cfg = replace(cfg, rfm_population=self.cfg.rfm_population)
        self.cfg = cfg
        self.hot.clear()  # their due times were computed under the old definitions
        return cfg

    def _clock_state(self) -> bytes:
        """While a pass of new definitions runs (or one a stopped process left waits to resume), the
        stored version is "" (decided under no one version: any reader, of any release and any
        definitions, decides every user again), and the pass is named with its `loaded_at`."""
        running = self.definitions_pass
        unfinished = (running.version, running.loaded_at) if running is not None else self.unfinished_pass
        if unfinished is None:
            return msgpack.packb([4, self.clock, self.max_event_ts, self.saved_definitions, self.backfill_max_ts, None, None])
        return msgpack.packb([4, self.clock, self.max_event_ts, "", self.backfill_max_ts, *unfinished])

    # -- the two clocks -------------------------------------------------------------------------------
    @property
    def backfill_clock(self) -> int | None:
        """The clock of a running backfill's users, or None when no backfill runs."""
        if self.backfill_max_ts is None:
            return None
        return self.backfill_max_ts - self.cfg.lateness_ms

    def _follows_backfill(self, profile: Profile, wall_ms: int) -> bool:
        return self.backfill_max_ts is not None and profile.t < wall_ms - self.cfg.backfill_age_ms

    def _drain_backfill(self) -> None:
        """The backfill has drained: its users follow the live clock from now on."""
        self.backfill_max_ts = None
        self.last_backfill_wall = None
        self.live_due_before_backfill = None  # (they follow the live clock again, as everyone)
        for user_id, due in self.parked.take_all().items():
            self.schedule.set(user_id, due)

    # -- processing -------------------------------------------------------------------------------
    def decode(self, records: Iterable[RawRecord], wall_ms: int) -> list[tuple[RawRecord, Event | InvalidEvent]]:
        """Each record with its validated event, or with the reason it is a dead letter."""
        decoded: list[tuple[RawRecord, Event | InvalidEvent]] = []
        extra = self.cfg.custom.properties if self.cfg.custom is not None else frozenset()
        for record in records:
            try:
                decoded.append((record, decode_event(record.value, wall_ms, self.max_event_bytes, extra)))
            except InvalidEvent as invalid:
                decoded.append((record, invalid))
        return decoded

    def handle(self, records: Iterable[RawRecord], wall_ms: int) -> BatchResult:
        """Validate, deduplicate and buffer a batch of input records, then advance the clock."""
        return self.handle_decoded(self.decode(records, wall_ms), wall_ms)

    def handle_decoded(self, decoded: Iterable[tuple[RawRecord, Event | InvalidEvent]], wall_ms: int) -> BatchResult:
        """`handle` for records already decoded (the replay decodes once to sort by event time)."""
        result = BatchResult()
        batch = _Batch(self.store, self.hot)
        cfg = self.cfg
        counts = result.counts
        backfill_before = wall_ms - cfg.backfill_age_ms if self.use_wall_clock else None
        any_valid = False
        # a user the bound per call left due fires first, at the clocks the last call ended with (what an
        # unbounded call would have fired then): never an event, an erasure, before an older due timer.
        # Asked once per batch: with none left due at its start, no event's user can be
        clock, backfill_clock = self.clock, self.backfill_clock
        left_due = self.left_due
        deciding = self.definitions_pass  # a user it has not reached is decided again first
        for record, event in decoded:
            if isinstance(event, InvalidEvent):
                result.dead_letters.append((record, event))
                continue
            any_valid = True
            user_id = event.user_id
            if deciding is not None and user_id in deciding:
                # decided under the new definitions first, and their timers due by now fired (the new
                # due time may be earlier than the old one)
                self._decide_if_pending(batch, user_id, wall_ms)
                self._fire_if_due(batch, result, user_id, wall_ms, clock, backfill_clock)
            elif left_due:
                self._fire_if_due(batch, result, user_id, wall_ms, clock, backfill_clock)
            profile = batch.load(user_id)
            if event.type == ERASURE:  # counted as `type:delete`
                counts["type:delete"] += 1
                self._erase(batch, user_id, profile, event)
                continue
            key = message_hash(event.message_id)
            if key in profile.seen:
                counts["duplicate"] += 1
                continue
            ts = event.ts
            # seen "now" for this user: an old late event must not fall out of the dedup window at once
            profile.seen[key] = ts if ts > profile.t else profile.t
            counts[f"type:{event.type}"] += 1
            if ts > self.max_event_ts:
                self.max_event_ts = ts
            if ts < profile.t:
                counts["late"] += 1
            changes = take_event(user_id, profile, event, cfg, batch.dues[user_id])
            if backfill_before is not None and ts < backfill_before:
                counts["backfill"] += 1
                if self.backfill_max_ts is None:
                    if left_due or deciding is not None:
                        # this event begins a backfill: the users still due on the live clock, and those
                        # the running pass makes due by it when it reaches them, fire on it
                        self.live_due_before_backfill = clock
                    self.backfill_max_ts = ts
                elif ts > self.backfill_max_ts:
                    self.backfill_max_ts = ts
                self.last_backfill_wall = wall_ms
                batch.add(changes, True)
            else:
                batch.changes.extend(changes)
        if any_valid:
            self.last_arrival_wall = wall_ms
            horizon = min(self.max_event_ts, wall_ms) if self.use_wall_clock else self.max_event_ts
            self.clock = max(self.clock, horizon - cfg.lateness_ms)
        dues = batch.dues
        for user_id, profile in batch.profiles.items():
            self._reschedule(user_id, profile, wall_ms, dues[user_id])
        self._advance(batch, result, wall_ms)
        return self._finish(batch, result, wall_ms)

    def tick(self, wall_ms: int, caught_up: bool = True) -> BatchResult:
        """Wall-clock progress: an idle partition's clock follows the wall clock minus the allowance.

        A partition with unprocessed input (`caught_up` false, e.g. a backlog after a restart) is busy,
        not idle: letting its clock jump to the wall clock would make the whole backlog late. A backfill
        drains on wall time alone (a busy partition with live traffic is rarely seen caught up at every
        punctuation), so `backfill_drained_after` must outlast any stall of the input."""
        if self.last_arrival_wall is None or not caught_up:
            self.last_arrival_wall = wall_ms
        if wall_ms - self.last_arrival_wall > self.cfg.lateness_ms:
            self.clock = max(self.clock, wall_ms - self.cfg.lateness_ms)
        if self.backfill_max_ts is not None:
            if self.last_backfill_wall is None:  # a backfill stored before a restart: the wait starts now
                self.last_backfill_wall = wall_ms
            elif wall_ms - self.last_backfill_wall >= self.cfg.backfill_drained_after_ms:
                self._drain_backfill()
        return self.advance_to(self.clock, wall_ms)

    def advance_to(self, until: int, wall_ms: int) -> BatchResult:
        """Move the clock to ``until`` (never backwards) and fire everything due by then."""
        self.clock = max(self.clock, until)
        result = BatchResult()
        batch = _Batch(self.store, self.hot)
        self._advance(batch, result, wall_ms)
        return self._finish(batch, result, wall_ms)

    def next_due(self) -> int | None:
        """The earliest due time of a user following the live clock."""
        return self.schedule.next_due()

    def reevaluate_all(self, cfg: CatalogConfig, wall_ms: int, loaded_at: int | None = None) -> BatchResult:
        """New definitions or a new model: decide every stored user again (cause `definitions`), at most
        half `timers_per_step` of them in this call; `decide_pending` goes on with the others at the
        next calls, and a user not reached yet is decided again before anything else touches it
        (engine/definitions_pass.py). The stored definitions version changes once every user is done.

        This is the one place that visits every profile of the partition, once per accepted change."""
        cfg = self._adopt(cfg)
        at = loaded_at if loaded_at is not None else wall_ms
        if self.unfinished_pass is not None and self.unfinished_pass[0] == cfg.version:
            at = self.unfinished_pass[1]  # a pass a stopped process left half-way: the same transition ids
        self.unfinished_pass = None
        self.definitions_pass = DefinitionsPass(cfg.version, at, (key for key, _ in self.store.items() if key != CLOCK_KEY))
        return self.decide_pending(wall_ms)

    def decide_pending(self, wall_ms: int) -> BatchResult:
        """The running pass's next users: all of them without a bound (then the timers due fire, as in a
        replay); else at most half `timers_per_step`, and the timers they make due wait for the next
        call's firing (the worker's punctuation ticks right after), so that a call with a pass does not
        touch more users than a call without."""
        result = BatchResult()
        batch = _Batch(self.store, self.hot)
        running = self.definitions_pass
        budget = self.timers_per_step
        if running is not None:
            for user_id in running.take_next(None if budget is None else max(1, budget // 2)):
                self._decide_again(batch, user_id, running.loaded_at, wall_ms)
            if running.done:
                self.definitions_pass = None
                self.saved_definitions = running.version
        if budget is None:
            self._advance(batch, result, wall_ms)
        return self._finish(batch, result, wall_ms)

    @property
    def deciding(self) -> bool:
        """Whether a pass of new definitions has users left to decide."""
        return self.definitions_pass is not None

    def _decide_if_pending(self, batch: _Batch, user_id: str, wall_ms: int) -> None:
        running = self.definitions_pass
        if running is not None and running.take(user_id):
            self._decide_again(batch, user_id, running.loaded_at, wall_ms)

    def _decide_again(self, batch: _Batch, user_id: str, loaded_at: int, wall_ms: int) -> None:
        profile = batch.load(user_id)
        dues = batch.dues[user_id]
        batch.changes.extend(reevaluate(user_id, profile, self.cfg, loaded_at, dues))
        self._reschedule(user_id, profile, wall_ms, dues, decided_again=True)

    def _advance(self, batch: _Batch, result: BatchResult, wall_ms: int) -> None:
        """Fire the timers each clock has passed: the live schedule's users and the backfill's (parked)
        users. A user due by the live clock who follows the backfill clock is parked until that clock.
        At most `timers_per_step` users in all, half of them at least for the live schedule while a
        backfill runs (a long backfill never holds up live users' timers); the others stay due for the
        next call. Users are independent of each other, so the order among them changes nothing.
        Users left due on the live clock when a backfill began fire first, on the live clock up to that
        moment: an unbounded call fired them then, before the backfill began (and, were they parked on the
        backfill clock instead, their own late events would come before their older timers)."""
        budget = self.timers_per_step
        clock, backfill_clock = self.clock, self.backfill_clock
        before = self.live_due_before_backfill
        if before is not None:  # first the users left due when the backfill began
            users = self.schedule.pop_due(before, budget)
            for user_id in users:
                self._fire(batch, result, user_id, before, wall_ms, backfill=False)
            if budget is not None:
                budget -= len(users)
                if budget <= 0:
                    return  # the bound is reached: the others at the next calls
        if backfill_clock is not None:
            if budget is not None:  # the live schedule's share first
                live = self.schedule.pop_due(clock, max(1, budget // 2))
                for user_id in live:
                    self._fire_live_user(batch, result, user_id, wall_ms, clock, backfill_clock)
                budget -= len(live)
            parked = self.parked.pop_due(backfill_clock, budget)
            for user_id in parked:
                self._fire(batch, result, user_id, backfill_clock, wall_ms, backfill=True)
            if budget is not None:
                budget -= len(parked)
        for user_id in self.schedule.pop_due(clock, budget):
            self._fire_live_user(batch, result, user_id, wall_ms, clock, backfill_clock)

    def _fire_live_user(self, batch: _Batch, result: BatchResult, user_id: str, wall_ms: int,
                        clock: int, backfill_clock: int | None) -> None:
        """A user taken from the live schedule: fired on the backfill clock if it follows the backfill,
        else on the live clock."""
        profile = batch.load(user_id)
        if backfill_clock is not None and self._follows_backfill(profile, wall_ms):
            self._fire(batch, result, user_id, backfill_clock, wall_ms, backfill=True)
        else:
            self._fire(batch, result, user_id, clock, wall_ms, backfill=False)

    @property
    def left_due(self) -> bool:
        """Whether users whose clock has passed their due time wait for a next call (the bound per call).
        A change of definitions or of RFM population waits until none does (the worker's processor), so
        that every timer due before it is decided under what it replaces."""
        if self._due_by(self.clock):
            return True
        parked, backfill_clock = self.parked.next_due(), self.backfill_clock
        return parked is not None and backfill_clock is not None and parked <= backfill_clock

    def _due_by(self, clock: int) -> bool:
        due = self.schedule.next_due()
        return due is not None and due <= clock

    def _fire_if_due(self, batch: _Batch, result: BatchResult, user_id: str, wall_ms: int,
                     clock: int, backfill_clock: int | None) -> None:
        """Fire one user's timers if ``clock`` (or ``backfill_clock``, for a parked user) has passed its due
        time: what `_advance` would have done for it at those clocks, had no bound left it due. A user
        left due on the live clock when a backfill began fires on it first, up to that clock."""
        self._fire_held_back(batch, result, user_id, wall_ms)
        due = self.parked.due_of(user_id)
        if due is not None and backfill_clock is not None and due <= backfill_clock:
            self.parked.discard(user_id)
            self._fire(batch, result, user_id, backfill_clock, wall_ms, backfill=True)
            return
        due = self.schedule.due_of(user_id)
        if due is not None and due <= clock:
            self.schedule.discard(user_id)
            self._fire_live_user(batch, result, user_id, wall_ms, clock, backfill_clock)

    def _fire_held_back(self, batch: _Batch, result: BatchResult, user_id: str, wall_ms: int) -> bool:
        """Fire the user on the live clock, at `live_due_before_backfill`, if it is due by that clock on
        the live schedule; whether it was."""
        before = self.live_due_before_backfill
        if before is None:
            return False
        due = self.schedule.due_of(user_id)
        if due is None or due > before:
            return False
        self.schedule.discard(user_id)
        self._fire(batch, result, user_id, before, wall_ms, backfill=False)
        return True

    def _fire(self, batch: _Batch, result: BatchResult, user_id: str, until: int, wall_ms: int, backfill: bool) -> None:
        if self.definitions_pass is not None:
            self._decide_if_pending(batch, user_id, wall_ms)
            # reached through a timer of its old schedule, and kept on the live clock by the decision
            # (`_reschedule`): its new due times by that clock fire there first, as `_advance` does
            if backfill and self._fire_held_back(batch, result, user_id, wall_ms) and user_id in batch.deleted:
                return  # dropped as dormant
        profile = batch.load(user_id)
        dues = batch.dues[user_id]
        changes, dormant = advance(user_id, profile, until, self.cfg, dues)
        batch.add(changes, backfill)
        if dormant:
            batch.delete(user_id)
            self.schedule.discard(user_id)  # (deciding it again just above may have scheduled it)
            self.parked.discard(user_id)
            result.counts["dropped_dormant"] += 1
        else:
            self._reschedule(user_id, profile, wall_ms, dues)

    def _erase(self, batch: _Batch, user_id: str, profile: Profile, event: Event) -> None:
        """Everything of the user goes: the profile (a tombstone in the changelog), its memberships (a
        tombstone on the memberships topic), its due times, its RFM index entry and its hot copy; the
        user leaves every segment (cause `erasure`). A later event of the same id starts a new user."""
        batch.changes.extend(erase(user_id, profile, event))
        batch.delete(user_id)
        self.schedule.discard(user_id)
        self.parked.discard(user_id)

    def _reschedule(self, user_id: str, profile: Profile, wall_ms: int, dues: RuleDues | None = None,
                    decided_again: bool = False) -> None:
        """The user's next due time, on the schedule of the clock it follows. A user the pass of new
        definitions decides after a backfill began is untouched since before it (a pass decides a user
        before anything else touches it): an unbounded pass had decided it then, so a due time by the
        clock the backfill found stays on the live schedule, and fires there first (`_advance`)."""
        due = next_due(profile, self.cfg, dues)
        if self.backfill_max_ts is not None and self._follows_backfill(profile, wall_ms):
            before = self.live_due_before_backfill
            if decided_again and before is not None and due is not None and due <= before:
                self.parked.discard(user_id)
                self.schedule.set(user_id, due)
                return
            self.schedule.discard(user_id)
            self.parked.set(user_id, due)
        else:
            self.parked.discard(user_id)
            self.schedule.set(user_id, due)

    def _finish(self, batch: _Batch, result: BatchResult, wall_ms: int) -> BatchResult:
        cfg = self.cfg
        historical_after, version, backfill = cfg.historical_after_ms, cfg.version, batch.backfill
        emitted = format_timestamp(wall_ms)  # once per batch, not per transition
        result.transitions = [to_record(c, wall_ms, historical_after, version, n in backfill, emitted)
                              for n, c in enumerate(batch.changes)]
        result.transition_times = [c.at for c in batch.changes]
        definitions, dues = fingerprint(cfg), batch.dues
        for user_id, profile in batch.profiles.items():
            result.writes[user_id] = encode_profile(profile)
            rfm_value = self._rfm_entry(profile)
            self._set_rfm(user_id, rfm_value)
            result.entries[user_id] = encode_entry(definitions, next_due(profile, cfg, dues[user_id]), rfm_value, profile.members)
            if profile.members != batch.members_before.get(user_id) or user_id in batch.recreated:
                result.memberships[user_id] = memberships_record(user_id, profile.members, profile.t, cfg.version)
        for user_id in batch.deleted:
            self._set_rfm(user_id, None)
            result.writes[user_id] = None
            result.memberships[user_id] = None
        for structure, count in bounds.take_evictions().items():
            result.counts[f"evicted:{structure}"] += count
        result.writes[CLOCK_KEY] = self._clock_state()
        before = self.live_due_before_backfill
        if before is not None and self.definitions_pass is None and not self._due_by(before):
            self.live_due_before_backfill = None  # every user it held back has fired
        result.clock = self.clock
        result.backfill_clock = self.backfill_clock
        self._keep_hot(batch, result)  # last: nothing of a batch that raised before this is kept
        return result

    def _keep_hot(self, batch: _Batch, result: BatchResult) -> None:
        """The batch's profiles, as just written, become the most recently used; the least recently used
        beyond the bound are forgotten (decoded again from the store when next needed)."""
        hot, dues, writes = self.hot, batch.dues, result.writes
        for user_id, profile in batch.profiles.items():
            hot.keep(user_id, profile, dues[user_id], len(writes[user_id]))
        if self._rfm_undo is not None:
            self._touched.update(batch.profiles)

    def drop_hot_profiles(self) -> None:
        """Forget every decoded profile kept across batches: for a caller that keeps this engine but did
        not apply the writes of its last results to the store (the worker, whose engines are made with
        `undo`, calls `rollback` instead)."""
        self.hot.clear()
