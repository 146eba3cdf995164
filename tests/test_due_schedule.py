"""The per-partition timer schedule (timers/schedule.py) against a plain dict, and its memory bound:
stale heap entries (lazy deletion) never outnumber the live ones by more than the compaction margin."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.timers.schedule import DueSchedule

users = st.sampled_from([f"u{i}" for i in range(40)])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), users, st.one_of(st.none(), st.integers(0, 1000))),
        st.tuples(st.just("pop"), st.integers(0, 1000), st.just(None)),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_schedule_matches_a_dict_of_due_times(ops):
    schedule, model = DueSchedule(), {}
    for op, a, b in ops:
        if op == "set":
            schedule.set(a, b)
            if b is None:
                model.pop(a, None)
            else:
                model[a] = b
        else:
            due = sorted((d, u) for u, d in model.items() if d <= a)
            assert schedule.pop_due(a) == [u for _, u in due]
            for _, u in due:
                del model[u]
        assert len(schedule) == len(model)
        assert schedule.next_due() == (min(model.values()) if model else None)


def test_rescheduling_one_user_many_times_keeps_the_heap_small():
    schedule = DueSchedule()
    for n in range(20):
        schedule.set(f"u{n}", 10**9)
    for step in range(100_000):  # every event of a busy user moves its due time
        schedule.set(f"u{step % 20}", 10**9 + step)
    assert len(schedule) == 20
    assert len(schedule._heap) <= 2 * 20 + 1025
