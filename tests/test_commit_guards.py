"""The guards that stop a worker from committing past input it never processed (worker/faust_fixes.py,
worker/pipeline.py), on Faust's own bookkeeping types, without a broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from weakref import WeakSet

import pytest
from faust.types import TP
from intervaltree import IntervalTree

from stream_app.worker.faust_fixes import CommitStalled, CommitWatchdog, lost_offsets, skipped_offsets
from stream_app.worker.pipeline import SegmentationPipeline

EVENTS = TP("events", 0)
TICKS = TP("ticks", 0)


def consumer(committed: dict | None = None, gaps: dict | None = None, acked: dict | None = None) -> SimpleNamespace:
    """The attributes of faust.transport.consumer.Consumer the guards read."""
    committed_offset: defaultdict = defaultdict(lambda: None)
    committed_offset.update(committed or {})
    gap: defaultdict = defaultdict(IntervalTree)
    for tp, intervals in (gaps or {}).items():
        for begin, end in intervals:
            gap[tp].addi(begin, end)
    return SimpleNamespace(_committed_offset=committed_offset, _gap=gap, _acked=defaultdict(list, acked or {}),
                           _unacked_messages=WeakSet())


def messages(*pairs: tuple[TP, int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(tp=tp, offset=offset, topic=tp.topic, partition=tp.partition, value=b"") for tp, offset in pairs]


class FakeApp:
    def __init__(self, consumer_: SimpleNamespace) -> None:
        self._consumer = consumer_
        self.crashed: list[BaseException] = []
        self.should_stop = False

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


def test_contiguous_batches_skip_nothing() -> None:
    found = consumer(committed={EVENTS: 10})
    assert skipped_offsets(found, {}, messages((EVENTS, 10), (EVENTS, 11), (TICKS, 0))) == {}
    # the next batch continues from the last record processed, not from the committed offset
    assert skipped_offsets(found, {EVENTS: 12}, messages((EVENTS, 12), (EVENTS, 13))) == {}


def test_a_single_missing_offset_is_a_transaction_marker() -> None:
    assert skipped_offsets(consumer(committed={EVENTS: 10}), {EVENTS: 12}, messages((EVENTS, 13))) == {}


def test_records_dropped_between_batches_are_reported() -> None:
    skipped = skipped_offsets(consumer(committed={EVENTS: 10}), {EVENTS: 12}, messages((EVENTS, 20), (EVENTS, 21)))
    assert skipped == {EVENTS: (12, 19)}


def test_a_gap_inside_one_batch_is_reported() -> None:
    skipped = skipped_offsets(consumer(committed={EVENTS: 0}), {}, messages((EVENTS, 0), (EVENTS, 1), (EVENTS, 7)))
    assert skipped == {EVENTS: (2, 6)}


def test_offsets_known_to_be_absent_from_the_log_are_not_skipped() -> None:
    # aborted records and markers that Faust saw while fetching (Consumer._gap)
    found = consumer(committed={EVENTS: 10}, gaps={EVENTS: [(12, 20)]})
    assert skipped_offsets(found, {EVENTS: 12}, messages((EVENTS, 20))) == {}
    # covering only part of the hole is not enough
    found = consumer(committed={EVENTS: 10}, gaps={EVENTS: [(14, 20)]})
    assert skipped_offsets(found, {EVENTS: 12}, messages((EVENTS, 20))) == {EVENTS: (12, 19)}


def test_a_partition_never_committed_starts_anywhere() -> None:
    assert skipped_offsets(consumer(), {}, messages((EVENTS, 500))) == {}


def test_lost_offsets_below_acknowledged_ones() -> None:
    found = consumer(committed={EVENTS: 10}, acked={EVENTS: [20, 21]})
    assert lost_offsets(found) == {EVENTS: (10, 19)}
    assert lost_offsets(consumer(committed={EVENTS: 10}, acked={EVENTS: [11, 12]})) == {}


def test_the_commit_is_refused_after_lost_records_and_every_later_one_too() -> None:
    app = FakeApp(consumer(committed={EVENTS: 10}, acked={EVENTS: [20]}))
    watchdog = CommitWatchdog()
    with pytest.raises(CommitStalled, match=r"events\[0\] offsets 10\.\.19 were never processed"):
        asyncio.run(watchdog.check_before_commit(app))
    assert len(app.crashed) == 1
    # the gap is gone from Faust's bookkeeping (it drops what it hands out): still refused
    app._consumer._acked.clear()
    with pytest.raises(CommitStalled):
        asyncio.run(watchdog.check_before_commit(app))


def test_a_clean_commit_goes_through() -> None:
    app = FakeApp(consumer(committed={EVENTS: 10}, acked={EVENTS: [10, 11]}))
    asyncio.run(CommitWatchdog().check_before_commit(app))
    assert app.crashed == []


def pipeline_on(app: FakeApp) -> SegmentationPipeline:
    settings = SimpleNamespace(ticks_topic="ticks", input_topic="events")
    return SegmentationPipeline(app, settings, table=None, cfg=None)  # type: ignore[arg-type]


def events_of(*pairs: tuple[TP, int]) -> list[SimpleNamespace]:
    return [SimpleNamespace(message=message) for message in messages(*pairs)]


def test_the_pipeline_refuses_a_batch_after_skipped_records() -> None:
    app = FakeApp(consumer(committed={EVENTS: 0}))
    pipeline = pipeline_on(app)
    processed: list[list[int]] = []

    async def process(events):  # the batch work itself is not under test here
        processed.append([event.message.offset for event in events])

    pipeline._process = process  # type: ignore[method-assign]
    asyncio.run(pipeline.process(events_of((EVENTS, 0), (EVENTS, 1))))
    with pytest.raises(CommitStalled, match=r"skipped, never processed: events\[0\] offsets 2\.\.4"):
        asyncio.run(pipeline.process(events_of((EVENTS, 5))))
    assert processed == [[0, 1]]
    assert len(app.crashed) == 1


def test_a_failed_batch_crashes_the_worker_and_counts_as_unprocessed() -> None:
    app = FakeApp(consumer(committed={EVENTS: 0}))
    pipeline = pipeline_on(app)

    async def fail(events):
        raise ValueError("bad luck")

    pipeline._process = fail  # type: ignore[method-assign]
    with pytest.raises(ValueError):
        asyncio.run(pipeline.process(events_of((EVENTS, 0), (EVENTS, 1))))
    assert len(app.crashed) == 1 and "processing a batch failed" in str(app.crashed[0])
    assert pipeline._next_offset == {}  # Faust acknowledges the batch; the pipeline does not


def test_after_a_rebalance_partitions_start_from_their_committed_offsets() -> None:
    app = FakeApp(consumer(committed={EVENTS: 0}))
    pipeline = pipeline_on(app)

    async def process(events):
        return None

    pipeline._process = process  # type: ignore[method-assign]
    asyncio.run(pipeline.process(events_of((EVENTS, 0), (EVENTS, 1), (EVENTS, 2))))
    pipeline.forget_partitions()
    # read again from the committed offset: not a jump backwards that hides anything
    asyncio.run(pipeline.process(events_of((EVENTS, 0), (EVENTS, 1))))
    assert app.crashed == []


def test_a_rebalance_during_a_batch_forgets_the_batch_offsets_too() -> None:
    app = FakeApp(consumer(committed={EVENTS: 0}))
    pipeline = pipeline_on(app)

    async def rebalanced_meanwhile(events):
        pipeline.forget_partitions()

    pipeline._process = rebalanced_meanwhile  # type: ignore[method-assign]
    asyncio.run(pipeline.process(events_of((EVENTS, 0), (EVENTS, 1))))
    assert pipeline._next_offset == {}
    assert app.crashed == []
