"""RFM family: values from the window, scores from a merged sketch population, names by first match."""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections import Counter

import pytest

from stream_app.engine import PartitionEngine
from stream_app.replay.run import InMemoryStore
from stream_app.segments import rfm
from stream_app.segments.config import CatalogConfig
from stream_app.segments.definitions import DefinitionError, load_definitions
from stream_app.segments.rfm_population import PartitionSummary, RfmPopulation
from stream_app.state.profile import Profile
from stream_app.timeutil import DAY_MS, HOUR_MS

from .helpers import encode, track

CFG = CatalogConfig()
NOW = 1_790_000_000_000


def exact_scores(customers: list[tuple[int, int, float]], user: tuple[int, int, float], t: int) -> tuple[int, int, int]:
    """The catalog formula, straight: k = scored users with a strictly smaller value (R: strictly larger recency)."""
    n = len(customers)
    recency = sorted(t - c[0] for c in customers)
    freq = sorted(c[1] for c in customers)
    money = sorted(c[2] for c in customers)
    k_r = len(recency) - bisect_right(recency, t - user[0])
    return (1 + 5 * k_r // n, 1 + 5 * bisect_left(freq, user[1]) // n, 1 + 5 * bisect_left(money, user[2]) // n)


def skewed_customers(count: int, seed: int, t: int) -> list[tuple[int, int, float]]:
    """Most customers have 1-3 orders (geometric F); spend per order log-normal; last orders over a year."""
    rng = random.Random(seed)
    customers = []
    for _ in range(count):
        f = 1
        while rng.random() < 0.45 and f < 60:
            f += 1
        spend = round(sum(rng.lognormvariate(3.5, 0.9) for _ in range(f)), 2)
        if rng.random() < 0.05:
            spend = round(spend - rng.uniform(0, spend * 1.2), 2)  # refunds; M can be negative
        last = t - int(rng.betavariate(1.2, 3.0) * 364 * DAY_MS)
        customers.append((last, f, spend))
    return customers


def test_names_follow_the_catalog_table_first_match():
    cases = {(5, 5): "champions", (4, 4): "champions", (3, 5): "loyal", (4, 2): "potential_loyalist", (5, 3): "potential_loyalist",
             (4, 1): "new_customer", (3, 2): "need_attention", (3, 1): "about_to_sleep", (1, 5): "cannot_lose",
             (1, 4): "at_risk", (2, 5): "at_risk", (2, 3): "at_risk", (2, 2): "hibernating", (1, 2): "lost", (1, 1): "lost"}
    for (r, fm), expected in cases.items():
        assert rfm.name(r, fm, CFG) == expected, (r, fm)
    assert all(rfm.name(r, fm, CFG) for r in range(1, 6) for fm in range(1, 6)), "every score pair has a name"
    assert rfm.fm_score(2, 3) == 3 and rfm.fm_score(2, 2) == 2 and rfm.fm_score(4, 5) == 5 and rfm.fm_score(1, 2) == 2


def test_values_use_orders_and_refunds_in_the_window_only():
    p = Profile(orders=[[NOW - 365 * DAY_MS, 500.0, 0], [NOW - 10 * DAY_MS, 40.0, 0], [NOW - DAY_MS, 60.0, 1]],
                refunds=[[NOW - 366 * DAY_MS, 999.0], [NOW - HOUR_MS, 30.0]])
    assert rfm.values(p, NOW, CFG) == (NOW - DAY_MS, 2, 70.0)  # the order exactly 365 d old is out: (t - 365 d, t]
    assert rfm.values(p, NOW - 365 * DAY_MS + 1, CFG)[1] == 1
    assert rfm.values(Profile(orders=[[NOW - 400 * DAY_MS, 1.0, 0]]), NOW, CFG) is None


def test_sketch_population_agrees_with_exact_scores_for_99_percent_of_100k_customers():
    customers = skewed_customers(100_000, seed=7, t=NOW)
    partitions = 6
    summaries = {}
    for p in range(partitions):  # each partition summarises its own users; summaries travel as bytes
        own = customers[p::partitions]
        summaries[p] = PartitionSummary.from_bytes(PartitionSummary.build(own, NOW).to_bytes())
    population = RfmPopulation(summaries)
    assert population.size == len(customers)
    f_counts = Counter(c[1] for c in customers)
    assert (f_counts[1] + f_counts[2] + f_counts[3]) / len(customers) > 0.8, "skewed F: most customers have 1-3 orders"

    # exact computation, vectorised by sorting once (same formula as exact_scores)
    recency = sorted(NOW - c[0] for c in customers)
    freq = sorted(c[1] for c in customers)
    money = sorted(c[2] for c in customers)
    n = len(customers)
    agree = f_agree = 0
    for c in customers:
        exact = (1 + 5 * (n - bisect_right(recency, NOW - c[0])) // n, 1 + 5 * bisect_left(freq, c[1]) // n,
                 1 + 5 * bisect_left(money, c[2]) // n)
        got = population.scores(*c)
        agree += got == exact
        f_agree += got[1] == exact[1]
    share = agree / n
    print(f"RFM agreement: {share:.4%} of {n} customers get exactly the batch scores")
    assert f_agree == n, "F is a small integer: its scores must be exact"
    assert share >= 0.99
    assert exact_scores(customers, customers[0], NOW) == tuple(
        1 + 5 * k // n for k in ((n - bisect_right(recency, NOW - customers[0][0])), bisect_left(freq, customers[0][1]), bisect_left(money, customers[0][2])))


def test_well_separated_values_score_exactly_and_negative_money_ranks_lowest():
    customers = [(NOW - d * DAY_MS, f, m) for d, f, m in [(1, 1, -50.0), (30, 2, 0.0), (90, 3, 10.0), (200, 7, 100.0), (300, 12, 1000.0)]]
    population = RfmPopulation({0: PartitionSummary.build(customers[:2], NOW), 1: PartitionSummary.build(customers[2:], NOW)})
    for c in customers:
        assert population.scores(*c) == exact_scores(customers, c, NOW)
    # a user not in the population yet (a new customer since the refresh) is scored against it
    assert population.scores(NOW, 1, 5.0) == (5, 1, 3)


def _order(user: str, ts: int, revenue: float, n: int) -> bytes:
    return encode(track(user, "Order Completed", ts, f"{user}-o{n}", revenue=revenue))


def test_engine_refresh_scores_everyone_and_orders_leaving_the_window_leave_the_family():
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG, use_wall_clock=False)
    lines = []
    for i in range(10):
        for n in range(i + 1):  # user i has i+1 orders of 10 each, the last one i days before NOW - 30 d
            lines.append(_order(f"u{i}", NOW - 30 * DAY_MS - i * DAY_MS - n * HOUR_MS, 10.0, n))
    store.write(engine.handle(_records(lines), NOW).writes)
    store.write(engine.advance_to(NOW, NOW).writes)
    assert engine.cfg.rfm_population is None and all(not p.startswith("rfm") for p in _members(store)), "nobody is scored before the first population"
    population = RfmPopulation({0: engine.rfm_summary()})
    result = engine.refresh_population(population, NOW)
    store.write(result.writes)
    names = {r["user_id"]: r["to"] for r in result.transitions if r["segment"] == "rfm"}
    assert len(names) == 10 and all(r["cause"]["type"] == "refresh" for r in result.transitions)
    assert names["u0"] == "potential_loyalist" or names["u0"] in ("new_customer",)  # most recent, fewest orders
    assert names["u9"] in ("cannot_lose", "at_risk")  # oldest, most orders and spend
    # the same population again changes nothing
    assert engine.refresh_population(population, NOW).transitions == []
    # a year later every order has left the window: each user leaves the family on a timer
    later = engine.advance_to(NOW + 340 * DAY_MS, NOW)
    left = [r for r in later.transitions if r["segment"] == "rfm" and r["to"] is None]
    assert len(left) == 10 and all(r["cause"]["type"] == "timer" for r in left)
    assert engine.rfm_index == {}


def _members(store):
    from stream_app.engine.partition import CLOCK_KEY
    from stream_app.state.encoding import decode_profile

    return [m for key, data in store.items() if key != CLOCK_KEY for m in decode_profile(data).members]


def _records(lines):
    from stream_app.engine import RawRecord

    return [RawRecord(line, "t", 0, n) for n, line in enumerate(lines)]


def test_rfm_rules_in_yaml_are_validated_with_positions(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("rfm:\n  segments:\n    - {name: best, r: 5, fm: '>=4'}\n    - {name: rest, r: '1..5', fm: '1..5'}\n")
    cfg = load_definitions(good)
    assert cfg.rfm_rules == (("best", 5, 5, 4, 5), ("rest", 1, 5, 1, 5))
    bad = tmp_path / "bad.yaml"
    bad.write_text("rfm:\n  segments:\n    - {name: best, r: 6, fm: 1}\n")
    with pytest.raises(DefinitionError) as info:
        load_definitions(bad)
    assert ":3:" in str(info.value) and "rfm.segments[0].r" in str(info.value) and "between 1 and 5" in str(info.value)


def _population_histories():
    from hypothesis import strategies as st

    order = st.tuples(st.integers(0, 420), st.sampled_from([10, 25, 60, 150]), st.booleans())
    return st.dictionaries(st.sampled_from([f"c{i}" for i in range(8)]), st.lists(order, min_size=1, max_size=5), min_size=1)


def test_replayed_rfm_names_equal_the_oracle_for_any_population():
    """Several customers, orders on whole days (so no two distinct values share a sketch bucket), some
    refunded; the replay's final RFM names equal the oracle's exact batch computation."""
    import json as _json

    from hypothesis import given, settings

    from stream_app.replay import replay_records
    from stream_app.state.encoding import decode_profile

    from . import oracle

    @settings(max_examples=60, deadline=None)
    @given(_population_histories())
    def check(population):
        histories = {}
        for user, orders in population.items():
            events = []
            for n, (days_ago, revenue, refunded) in enumerate(orders):
                ts = NOW - days_ago * DAY_MS - HOUR_MS
                events.append(track(user, "Order Completed", ts, f"{user}-{n}", revenue=revenue))
                if refunded:
                    events.append(track(user, "Order Refunded", ts + HOUR_MS // 2, f"{user}-{n}r", revenue=revenue / 2))
            histories[user] = events
        lines = [_json.dumps(e).encode() for events in histories.values() for e in events]
        _t, dead, store = replay_records(lines, CFG, until_ms=NOW)
        assert not dead
        got = {user: decode_profile(store[user]).members.get("rfm") for user in histories if user in store}  # 400 d: dropped
        expected = oracle.rfm_names(histories, NOW)
        assert {u: m for u, m in got.items() if m is not None} == expected

    check()


def test_a_restarted_engine_keeps_rfm_names_until_its_first_population():
    """After a restart the population is unknown until the first refresh: events must not take every
    customer out of the family (and back in at the refresh)."""
    store = InMemoryStore()
    engine = PartitionEngine(0, store, CFG, use_wall_clock=False)
    lines = [_order(f"u{i}", NOW - (i + 1) * DAY_MS, 10.0 * (i + 1), 0) for i in range(5)]
    store.write(engine.handle(_records(lines), NOW).writes)
    store.write(engine.advance_to(NOW, NOW).writes)
    store.write(engine.refresh_population(RfmPopulation({0: engine.rfm_summary()}), NOW).writes)
    before = {key: m for key, m in _rfm_members(store).items()}
    assert len(before) == 5

    restarted = PartitionEngine(0, store, CFG, use_wall_clock=False)  # no population yet
    restarted.rebuild_schedule()
    later = [encode(track("u0", "Product Viewed", NOW + HOUR_MS, "v1")), _order("u1", NOW + HOUR_MS, 10.0, 9)]
    result = restarted.handle(_records(later), NOW + HOUR_MS)
    store.write(result.writes)
    result2 = restarted.advance_to(NOW + 2 * HOUR_MS, NOW)
    store.write(result2.writes)
    from stream_app.state.encoding import decode_profile

    assert len(decode_profile(store["u1"]).orders) == 2 and decode_profile(store["u1"]).pending == [], "the order was applied"
    assert [r for r in result.transitions + result2.transitions if r["segment"] == "rfm"] == []
    assert _rfm_members(store) == before


def _rfm_members(store):
    from stream_app.engine.partition import CLOCK_KEY
    from stream_app.state.encoding import decode_profile

    return {key: decode_profile(data).members.get("rfm") for key, data in store.items()
            if key != CLOCK_KEY and decode_profile(data).members.get("rfm")}
