"""Erasure requests (Segment-spec `delete` events) in the pure core: the user leaves every segment with
cause `erasure` and no traits, and nothing of the user is left: no stored profile (a tombstone for the
changelog), a memberships tombstone, no due time (an abandoned cart's timer never fires), no RFM index
entry, no hot copy. A later event of the same id starts a new user. The Kafka path:
tests/test_kafka_erasure.py."""

from __future__ import annotations

import uuid

from stream_app.engine import PartitionEngine, RawRecord
from stream_app.engine.partition import CLOCK_KEY
from stream_app.events import decode_event
from stream_app.replay import InMemoryStore
from stream_app.segments.config import CatalogConfig
from stream_app.state.encoding import decode_profile
from stream_app.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, format_timestamp

from .helpers import encode, track

CFG = CatalogConfig()
T0 = 1_790_000_000_000


def delete(user: str, ts: int) -> dict:
    return {"type": "delete", "userId": user, "messageId": f"erase-{uuid.uuid4().hex}", "timestamp": format_timestamp(ts)}


def feed(eng: PartitionEngine, store: InMemoryStore, events: list[dict], wall: int):  # type: ignore[no-untyped-def]
    result = eng.handle([RawRecord(encode(e)) for e in events], wall)
    store.write(result.writes)
    return result


def _buyer(user: str) -> list[dict]:
    """Two orders and a cart left with a product in it: RFM-scored, a lifecycle stage, a cart timer."""
    return [track(user, "Order Completed", T0, order_id=f"{user}-1", revenue=120.0),
            track(user, "Order Completed", T0 + DAY_MS, order_id=f"{user}-2", revenue=80.0),
            track(user, "Product Added", T0 + DAY_MS + HOUR_MS, product_id="p1", price=30.0)]


def test_a_delete_event_is_valid_input():
    event = decode_event(encode(delete("u", T0)), T0)
    assert (event.type, event.user_id) == ("delete", "u")


def test_the_user_leaves_every_segment_and_nothing_of_the_user_is_left():
    store = InMemoryStore()
    eng = PartitionEngine(0, store, CFG, use_wall_clock=False)
    feed(eng, store, _buyer("u") + _buyer("other"), wall=T0 + 2 * DAY_MS)
    stored = store.get("u")
    assert stored is not None and "u" in eng.rfm_index and len(eng.schedule) == 2  # both carts' timers
    members = decode_profile(stored).members
    assert "lifecycle" in members and len(members) >= 2

    request = delete("u", T0 + DAY_MS + 2 * HOUR_MS)
    erased = feed(eng, store, [request], wall=T0 + 2 * DAY_MS)

    left = [t for t in erased.transitions if t["user_id"] == "u"]
    assert {t["segment"]: t["from"] for t in left} == members
    for t in left:
        assert t["to"] is None and t["traits"] == {}
        assert t["cause"] == {"type": "erasure", "message_id": request["messageId"]}
        assert t["at"] == request["timestamp"]
    assert erased.writes["u"] is None and store.get("u") is None
    assert erased.memberships == {"u": None}
    assert "u" not in eng.rfm_index and len(eng.schedule) == 1 and eng.hot.take("u") is None
    assert erased.counts["type:delete"] == 1

    # the cart's abandonment timer would have fired within hours: nothing comes for the erased user
    later = eng.advance_to(T0 + 10 * DAY_MS, T0 + 10 * DAY_MS)
    store.write(later.writes)
    assert [t for t in later.transitions if t["user_id"] == "u"] == []
    assert any(t["user_id"] == "other" and t["segment"] == "cart_abandoner" for t in later.transitions)
    assert store.get("u") is None and set(store) == {"other", CLOCK_KEY}

    # the same request again (a redelivery) changes nothing and says nothing
    again = feed(eng, store, [request], wall=T0 + 10 * DAY_MS)
    assert again.transitions == [] and again.writes["u"] is None and again.memberships == {"u": None}

    # a later event of the same id: a new user, who enters as one
    back = feed(eng, store, [track("u", "Signed In", T0 + 11 * DAY_MS)], wall=T0 + 11 * DAY_MS)
    assert [(t["segment"], t["from"], t["to"]) for t in back.transitions if t["segment"] == "lifecycle"] == [("lifecycle", None, "new_lead")]


def test_an_erasure_in_the_middle_of_a_batch_drops_what_came_before_it_only():
    store = InMemoryStore()
    eng = PartitionEngine(0, store, CFG, use_wall_clock=False)
    result = feed(eng, store, [track("u", "Signed In", T0), delete("u", T0 + MINUTE_MS),
                               track("u", "Signed In", T0 + 2 * MINUTE_MS)], wall=T0 + DAY_MS)
    lifecycle = [(t["from"], t["to"], t["cause"]["type"]) for t in result.transitions if t["segment"] == "lifecycle"]
    assert lifecycle == [(None, "new_lead", "event"), ("new_lead", None, "erasure"), (None, "new_lead", "event")]
    assert store.get("u") is not None and result.memberships["u"]["segments"]["lifecycle"] == "new_lead"


def test_an_event_after_the_erasure_in_the_same_batch_starts_from_nothing():
    """The store still holds the old profile until the batch's writes are applied: a later event of the
    same user in the batch must not read it back."""
    store = InMemoryStore()
    eng = PartitionEngine(0, store, CFG, use_wall_clock=False)
    feed(eng, store, _buyer("u"), wall=T0 + 2 * DAY_MS)
    old = decode_profile(store.get("u"))
    assert old.orders and old.cart and old.members["lifecycle"] != "new_lead" and "u" in eng.rfm_index

    t = T0 + DAY_MS + 2 * HOUR_MS
    result = feed(eng, store, [delete("u", t), track("u", "Signed In", t + MINUTE_MS)], wall=T0 + 2 * DAY_MS)
    profile = decode_profile(store.get("u"))
    assert not profile.orders and profile.last_order is None and not profile.cart and len(profile.seen) == 1
    assert profile.members["lifecycle"] == "new_lead"
    assert result.memberships["u"]["segments"] == profile.members  # the new user's, replacing the old user's record
    assert "u" not in eng.rfm_index
    entered = [(t["segment"], t["from"], t["to"]) for t in result.transitions if t["cause"]["type"] == "event"]
    assert ("lifecycle", None, "new_lead") in entered
    # the old cart's timer is gone with it
    later = eng.advance_to(T0 + 10 * DAY_MS, T0 + 10 * DAY_MS)
    assert not [t for t in later.transitions if t["segment"] == "cart_abandoner"]
