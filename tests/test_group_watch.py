"""The decision of driver/group_watch.py: which partitions no member owns, when that is confirmed, and
which one member heals it (the Kafka path: tests/test_kafka_targeted_faults.py, revoke_commit)."""

from __future__ import annotations

from stream_app.driver.group_watch import Member, decide, healer, unowned


def _member(member_id: str, instance: str, *partitions: int) -> Member:
    return Member(member_id, instance, frozenset(partitions))


def test_partitions_no_member_owns():
    members = [_member("m-a", "host-a", 2, 3), _member("m-b", "host-b")]
    assert unowned(members, 4) == {0, 1}
    assert unowned(members + [_member("m-c", "host-c", 0, 1)], 4) == frozenset()
    assert unowned(members, 6) == {0, 1, 4, 5}  # partitions added to the topic and not yet assigned


def test_the_healer_is_the_member_with_the_fewest_partitions_then_the_lowest_instance_id():
    assert healer([_member("m-a", "host-a", 2, 3), _member("m-b", "host-b")]) == "m-b"
    assert healer([_member("m-b", "host-b", 1), _member("m-a", "host-a", 2)]) == "m-a"
    assert healer([_member("m-2", "", 1), _member("m-1", "", 2)]) == "m-1"  # dynamic members: by member id
    assert healer([]) is None


def test_a_heal_needs_the_same_partitions_unowned_at_two_checks_of_a_stable_group():
    stuck = [_member("m-a", "host-a", 2, 3), _member("m-b", "host-b")]
    seen, chosen = decide(True, stuck, 4, frozenset())
    assert (seen, chosen) == ({0, 1}, None)  # the first sighting is only remembered
    assert decide(True, stuck, 4, seen) == ({0, 1}, "m-b")
    # a rebalance under way: assignments are incomplete by design, and the sighting is forgotten
    assert decide(False, stuck, 4, seen) == (frozenset(), None)
    # other partitions than last time: a new first sighting
    moved = [_member("m-a", "host-a", 0, 3), _member("m-b", "host-b")]
    assert decide(True, moved, 4, seen) == ({1, 2}, None)
    # everything owned: nothing to do
    whole = [_member("m-a", "host-a", 2, 3), _member("m-b", "host-b", 0, 1)]
    assert decide(True, whole, 4, seen) == (frozenset(), None)
    # a group with no members (all stopped): nothing to heal from here
    assert decide(True, [], 4, seen) == (frozenset(), None)
