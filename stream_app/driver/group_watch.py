"""Input partitions that no member of the group owns, and the one member that makes the group rebalance.

A member killed between the two rounds of a cooperative rebalance, and restarted within its session
timeout, rejoins as the same static member (`group.instance.id`); the coordinator hands it the
assignment of the first round without a rebalance (KIP-345), and the second round, which the revoking
member would have started, never comes. The partitions it was giving up then belong to nobody, with the
group Stable, until some other rebalance (docs/reliability.md, "A crash between the two rounds of a
cooperative rebalance").

Every member watches for that from a thread of its own (`describe_consumer_groups`, which lists each
member's assignment, asked from a child process: group_describer.py says why): a Stable group whose
assignment, with some partitions unowned, stays the same at CONFIRMATIONS checks in a row (30 s). Between the two rounds of a normal cooperative rebalance the
group is Stable too, with the handed-over partitions unowned, until the revoking member rejoins: within
a second normally, longer when its loop is busy; the 30 s of an unchanged assignment keep that apart.
The member with the fewest partitions (then the lowest instance id) heals it: the driver's loop calls
`consumer.unsubscribe()` and `subscribe()` at once, from the main loop between two polls. A member that
owns nothing sends LeaveGroup (librdkafka does for static members on unsubscribe, though not on close)
and joins again; one that owns partitions revokes them all and rejoins with its member id and changed
owned partitions. Either way the coordinator rebalances and the cooperative-sticky assignor gives the
orphaned partitions out. Should the chosen member not act (its loop stuck, or an older version without
this watch), the next member in the same order takes over after RETRY_AFTER more checks. Subscribing
again with the same topics alone sends no JoinGroup, and confluent-kafka has no call that removes a
member.

Partitions added to the input topic count as unowned until the members see them (librdkafka refreshes
its metadata every 5 minutes): a heal then costs a rebalance that may not help yet; after the 60 s
cooldown the check starts over.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from .group_describer import DescriberGone, GroupDescriber

log = logging.getLogger(__name__)

CHECK_EVERY_S = 10.0
COOLDOWN_S = 60.0  # after a heal, before another may be asked for


@dataclass(frozen=True)
class Member:
    member_id: str
    instance_id: str
    partitions: frozenset[int]  # of the input topic


def unowned(members: Iterable[Member], partition_count: int) -> frozenset[int]:
    owned: set[int] = set()
    for member in members:
        owned |= member.partitions
    return frozenset(range(partition_count)) - owned


CONFIRMATIONS = 4  # checks in a row that see the same assignment with unowned partitions (30 s, a check every 10 s)
RETRY_AFTER = 3  # further such checks before the next member in line heals instead


def healer(members: Iterable[Member], turn: int = 0) -> str | None:
    """The member id of the member that makes the group rebalance: the fewest partitions, then the
    lowest instance id (every member computes the same); `turn` 1, 2, ...: the next ones in that order,
    for when the earlier ones did not act."""
    ordered = sorted(members, key=lambda m: (len(m.partitions), m.instance_id, m.member_id))
    return ordered[turn % len(ordered)].member_id if ordered else None


def decide(stable: bool, members: list[Member], partition_count: int, previous: tuple[Any, int]) -> tuple[tuple[Any, int], str | None]:
    """One check. `previous`: (the assignment seen at the last check while partitions were unowned, how
    many checks in a row saw it). Returns the same for this check, and the healer's member id once
    CONFIRMATIONS checks saw it (each RETRY_AFTER checks later, the next member's). Only a Stable group
    counts: during a rebalance assignments are incomplete by design."""
    if not stable or not members or not unowned(members, partition_count):
        return (None, 0), None
    assignment = frozenset((m.member_id, m.partitions) for m in members)
    seen = previous[1] + 1 if previous[0] == assignment else 1
    if seen < CONFIRMATIONS:
        return (assignment, seen), None
    return (assignment, seen), healer(members, (seen - CONFIRMATIONS) // RETRY_AFTER)


class UnownedPartitionsWatch:
    def __init__(self, admin_config: dict[str, Any], group: str, topic: str, check_every_s: float = CHECK_EVERY_S) -> None:
        self.describer = GroupDescriber(admin_config, group, topic)
        self.group, self.topic, self.check_every_s = group, topic, check_every_s
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._previous: tuple[Any, int] = (None, 0)  # see `decide`
        self._heal: tuple[str, frozenset[int]] | None = None  # (healer's member id, the partitions): this check's finding
        self._healed_at = float("-inf")  # monotonic time this member last took a heal
        self._failing_since: float | None = None  # monotonic time of the first failed check of a run of them
        self._warned_at = float("-inf")
        self._thread = threading.Thread(target=self._watch, name="group-watch", daemon=True)

    def start(self) -> "UnownedPartitionsWatch":
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self._thread.join(1)  # a check under way ends within its request timeout; the thread is a daemon
        if not self._thread.is_alive():
            self.describer.close()

    def take_heal(self, member_id: str) -> frozenset[int] | None:
        """The unowned partitions when this member (`consumer.memberid()`) is to make the group rebalance
        now, as of the last check; once per finding, then nothing for COOLDOWN_S."""
        with self._lock:
            if self._heal is None or self._heal[0] != member_id:
                return None
            partitions = self._heal[1]
            self._heal = None
            self._healed_at = time.monotonic()
        return partitions

    def _watch(self) -> None:
        try:
            self._checks()
        finally:
            self.describer.close()

    def _checks(self) -> None:
        while not self.stop.wait(self.check_every_s):
            with self._lock:
                cooling = time.monotonic() - self._healed_at < COOLDOWN_S
            if cooling:  # the rebalance the heal started settles first
                self._previous = (None, 0)
                continue
            try:
                self._check()
                self._failing_since = None
            except Exception as exc:  # tried again at the next check; said at most every 10 minutes
                with self._lock:
                    self._heal = None
                now = time.monotonic()
                if isinstance(exc, DescriberGone) and self._failing_since is None:
                    log.warning("%s", exc)  # librdkafka aborted the child: said at once
                self._failing_since = self._failing_since or now
                if now - self._failing_since >= 60 and now - self._warned_at >= 600:
                    self._warned_at = now
                    log.warning("cannot check that every input partition has an owner (group %s) for %.0f s: %s. "
                                "Partitions left to nobody are not healed meanwhile (docs/operations.md, "
                                "'Partitions unowned')", self.group, now - self._failing_since, exc)

    def _check(self) -> None:
        stable, described, partition_count = self.describer.describe()
        members = [Member(member_id, instance_id, partitions) for member_id, instance_id, partitions in described]
        self._previous, chosen = decide(stable, members, partition_count, self._previous)
        missing = unowned(members, partition_count) if chosen is not None else frozenset()
        if chosen is not None:
            log.warning("input partitions %s have belonged to no member of group %s for %d checks, the group stable: "
                        "member %s is to make it rebalance", sorted(missing), self.group, self._previous[1], chosen)
        with self._lock:  # a finding holds until the next check: a stale one must not make a member leave
            self._heal = (chosen, missing) if chosen is not None else None
