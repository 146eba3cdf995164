"""The decision of driver/group_watch.py: which partitions no member owns, when that is confirmed, and
which one member heals it (the Kafka path: tests/test_kafka_targeted_faults.py, revoke_commit)."""

from __future__ import annotations

from stream_app.driver.group_watch import CONFIRMATIONS, RETRY_AFTER, Member, decide, healer, unowned


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
    assert healer([_member("m-a", "host-a", 2, 3), _member("m-b", "host-b")], turn=1) == "m-a"  # the next in line
    assert healer([_member("m-a", "host-a", 2, 3), _member("m-b", "host-b")], turn=2) == "m-b"
    assert healer([]) is None


def _checks(members, n, previous=(None, 0), stable=True, partitions=4):
    """n checks of the same group; the healer each gave."""
    chosen = []
    for _ in range(n):
        previous, who = decide(stable, members, partitions, previous)
        chosen.append(who)
    return previous, chosen


def test_a_heal_needs_the_same_assignment_with_unowned_partitions_at_several_checks_of_a_stable_group():
    stuck = [_member("m-a", "host-a", 2, 3), _member("m-b", "host-b")]
    previous, chosen = _checks(stuck, CONFIRMATIONS + RETRY_AFTER - 1)
    assert chosen[:CONFIRMATIONS - 1] == [None] * (CONFIRMATIONS - 1)  # sightings are only counted
    assert chosen[CONFIRMATIONS - 1:] == ["m-b"] * RETRY_AFTER  # then the healer, at each check
    # still stuck later: the chosen member has not acted, the next in line does
    assert _checks(stuck, 1, previous)[1] == ["m-a"]
    # a rebalance under way: assignments are incomplete by design, and the count starts over
    previous, _ = _checks(stuck, CONFIRMATIONS - 1)
    after, chosen = _checks(stuck, 1, previous, stable=False)
    assert (after, chosen) == ((None, 0), [None])
    assert _checks(stuck, CONFIRMATIONS - 1, after)[1] == [None] * (CONFIRMATIONS - 1)
    # the assignment changed between checks (a normal cooperative rebalance moving on): the count starts over
    previous, _ = _checks(stuck, CONFIRMATIONS - 1)
    moved = [_member("m-a", "host-a", 3), _member("m-b", "host-b", 0)]
    previous, chosen = _checks(moved, 1, previous)
    assert chosen == [None] and previous[1] == 1
    # everything owned, or no member (all stopped): nothing to do
    whole = [_member("m-a", "host-a", 2, 3), _member("m-b", "host-b", 0, 1)]
    assert _checks(whole, CONFIRMATIONS + 1) == ((None, 0), [None] * (CONFIRMATIONS + 1))
    assert _checks([], CONFIRMATIONS + 1) == ((None, 0), [None] * (CONFIRMATIONS + 1))
