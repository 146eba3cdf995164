"""Input partitions that no member of the group owns, and the one member that makes the group rebalance.

A member killed between the two rounds of a cooperative rebalance, and restarted within its session
timeout, rejoins as the same static member (`group.instance.id`); the coordinator hands it the
assignment of the first round without a rebalance (KIP-345), and the second round, which the revoking
member would have started, never comes. The partitions it was giving up then belong to nobody, with the
group Stable, until some other rebalance (docs/reliability.md, "A crash between the two rounds of a
cooperative rebalance").

Every member watches for that from a thread of its own (`describe_consumer_groups`, which lists each
member's assignment): the same partitions unowned at two checks in a row while the group is Stable. The
member with the fewest partitions (then the lowest instance id) heals it: the driver's loop calls
`consumer.unsubscribe()` and `subscribe()` at once, which sends LeaveGroup (librdkafka does for static
members on unsubscribe, though not on close) and joins again; the coordinator rebalances, and the
sticky assignor gives the orphaned partitions out, the other members keeping theirs. Subscribing again
with the same topics alone sends no JoinGroup, and confluent-kafka has no call that removes a member.
The healer usually owns nothing (the joining member that was waiting for the second round), so the heal
costs one rebalance round; when it owns partitions they are revoked and handed out again.

In a normal rebalance the group is not Stable while assignments are incomplete, and a crash of a member
of a stable group leaves its assignment in place (the coordinator keeps it until the session times out,
then rebalances), so neither triggers a heal.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

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


def healer(members: Iterable[Member]) -> str | None:
    """The member id of the one member that makes the group rebalance: the fewest partitions, then the
    lowest instance id (every member computes the same)."""
    chosen = min(members, key=lambda m: (len(m.partitions), m.instance_id, m.member_id), default=None)
    return chosen.member_id if chosen is not None else None


def decide(stable: bool, members: list[Member], partition_count: int, seen: frozenset[int]) -> tuple[frozenset[int], str | None]:
    """One check: (the partitions unowned now, to remember for the next check; the healer's member id
    when the same partitions were unowned at the last check too, else None). Only a Stable group counts:
    during a rebalance assignments are incomplete by design."""
    missing = unowned(members, partition_count) if stable and members else frozenset()
    return missing, (healer(members) if missing and missing == seen else None)


class UnownedPartitionsWatch:
    def __init__(self, admin_config: dict[str, Any], group: str, topic: str, check_every_s: float = CHECK_EVERY_S) -> None:
        self.admin = AdminClient(admin_config)
        self.group, self.topic, self.check_every_s = group, topic, check_every_s
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._seen: frozenset[int] = frozenset()  # unowned at the last check of a Stable group
        self._heal: tuple[str, frozenset[int]] | None = None  # (healer's member id, the partitions) once confirmed
        self._healed_at = float("-inf")  # monotonic time this member last took a heal
        self._thread = threading.Thread(target=self._watch, name="group-watch", daemon=True)

    def start(self) -> "UnownedPartitionsWatch":
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()

    def take_heal(self, member_id: str) -> frozenset[int] | None:
        """The unowned partitions when this member (`consumer.memberid()`) is to make the group rebalance
        now; once per confirmed finding, then nothing for COOLDOWN_S."""
        with self._lock:
            if self._heal is None or self._heal[0] != member_id:
                return None
            partitions = self._heal[1]
            self._heal = None
            self._healed_at = time.monotonic()
        return partitions

    def _watch(self) -> None:
        while not self.stop.wait(self.check_every_s):
            with self._lock:
                cooling = time.monotonic() - self._healed_at < COOLDOWN_S
            if cooling:  # the rebalance the heal started settles first
                self._seen = frozenset()
                continue
            try:
                self._check()
            except Exception as exc:  # advisory: a failed check is tried again at the next
                log.debug("group watch: %s", exc)

    def _check(self) -> None:
        description = self.admin.describe_consumer_groups([self.group], request_timeout=5)[self.group].result()
        metadata = self.admin.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if metadata is None or metadata.error is not None:
            return
        members = [Member(m.member_id, m.group_instance_id or "",
                          frozenset(tp.partition for tp in m.assignment.topic_partitions if tp.topic == self.topic))
                   for m in description.members]
        missing, chosen = decide(description.state == ConsumerGroupState.STABLE, members, len(metadata.partitions), self._seen)
        self._seen = missing
        if chosen is not None:
            log.warning("input partitions %s belong to no member of group %s, which is stable: the member with the "
                        "fewest partitions makes it rebalance", sorted(missing), self.group)
            with self._lock:
                self._heal = (chosen, missing)
