"""The RFM population: where a user's R, F and M values rank among every scored user, on all partitions.

Each partition summarises its scored users (F >= 1) as three DDSketches (the `ddsketch` library):
recency in seconds before a reference moment, F, and M. A summary travels in DDSketch's own protobuf
format; a worker merges the latest summary of every partition, its own and other workers', into one
:class:`RfmPopulation`, which answers "how many scored users have a strictly smaller (larger) value".

Exactness. A DDSketch puts values into logarithmic buckets of relative width 2 x accuracy; values in
one bucket count as equal. With the default accuracy (0.05%), every whole number up to 1,000 has a
bucket of its own, so ranks of F are exact; M values closer than 0.1% to each other tie, and so do
last orders closer than 0.1% of their recency (about 1.4 min at one day, 2 h at 100 days).

Recency needs one reference moment for all partitions, since a sketch cannot be shifted: a worker
measures every summary it builds from the newest partition clock it knows (its own partitions' and the
clocks carried by everyone's latest summaries), rounded down to the hour. Workers therefore agree on
the reference except around an hour boundary, when R ranks can err by up to an hour.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import accumulate
from typing import Iterable

import msgpack
from ddsketch import DDSketch
from ddsketch.pb.proto import DDSketchProto, KeyMappingProto, pb

from ..timeutil import HOUR_MS, SECOND_MS

RELATIVE_ACCURACY = 0.0005
SUMMARY_VERSION = 1


def reference_for(clock_ms: int) -> int:
    """The recency reference of a summary built at ``clock_ms``: the clock rounded down to the hour."""
    return clock_ms - clock_ms % HOUR_MS


@dataclass(frozen=True)
class PartitionSummary:
    """One partition's scored users as three sketches. `values` are (last order ms, F, M)."""

    reference: int
    clock: int
    recency: DDSketch
    frequency: DDSketch
    monetary: DDSketch

    @property
    def size(self) -> int:
        return int(self.frequency.count)

    @classmethod
    def build(cls, values: Iterable[tuple[int, int, float]], clock: int, reference: int | None = None,
              accuracy: float = RELATIVE_ACCURACY) -> "PartitionSummary":
        """`reference`: the moment recency is measured from; every partition should use the same one
        (the worker passes the newest partition clock it knows, rounded to the hour)."""
        reference = reference_for(clock) if reference is None else reference
        recency, frequency, monetary = DDSketch(accuracy), DDSketch(accuracy), DDSketch(accuracy)
        for last_order, f, m in values:
            recency.add((reference - last_order) / SECOND_MS)
            frequency.add(f)
            monetary.add(m)
        return cls(reference, clock, recency, frequency, monetary)

    def to_bytes(self) -> bytes:
        sketches = [DDSketchProto.to_proto(s).SerializeToString() for s in (self.recency, self.frequency, self.monetary)]
        return msgpack.packb([SUMMARY_VERSION, self.reference, self.clock, *sketches])

    @classmethod
    def from_bytes(cls, data: bytes) -> "PartitionSummary":
        version, reference, clock, *sketches = msgpack.unpackb(data)
        if version != SUMMARY_VERSION or len(sketches) != 3:
            raise ValueError(f"unsupported RFM summary version {version!r}")
        parsed = []
        for raw in sketches:
            proto = pb.DDSketch()
            proto.ParseFromString(raw)
            parsed.append(DDSketchProto.from_proto(proto))
        return cls(reference, clock, *parsed)


class _Ranks:
    """Counts of a sketch's values strictly below / above a value (one bucket = one value)."""

    def __init__(self, sketch: DDSketch) -> None:
        proto = DDSketchProto.to_proto(sketch)
        self.mapping = KeyMappingProto.from_proto(proto.mapping)
        self.pos_offset = proto.positiveValues.contiguousBinIndexOffset
        self.pos_counts = [int(c) for c in proto.positiveValues.contiguousBinCounts]
        self.pos_below = [0, *accumulate(self.pos_counts)]
        self.neg_offset = proto.negativeValues.contiguousBinIndexOffset
        self.neg_counts = [int(c) for c in proto.negativeValues.contiguousBinCounts]
        self.neg_below = [0, *accumulate(self.neg_counts)]  # by magnitude key
        self.zero = int(proto.zeroCount)
        self.neg_total = self.neg_below[-1]
        self.total = self.neg_total + self.zero + self.pos_below[-1]

    @staticmethod
    def _count_keys_below(offset: int, below: list[int], key: int) -> int:
        index = min(max(key - offset, 0), len(below) - 1)
        return below[index]

    def _count_keys_at(self, offset: int, counts: list[int], key: int) -> int:
        index = key - offset
        return counts[index] if 0 <= index < len(counts) else 0

    def _is_zero(self, value: float) -> bool:
        return abs(value) < self.mapping.min_possible

    def below(self, value: float) -> int:
        if self._is_zero(value):
            return self.neg_total
        if value > 0:
            key = self.mapping.key(value)
            return self.neg_total + self.zero + self._count_keys_below(self.pos_offset, self.pos_below, key)
        key = self.mapping.key(-value)  # larger magnitude = smaller value
        return self.neg_total - self._count_keys_below(self.neg_offset, self.neg_below, key + 1)

    def equal(self, value: float) -> int:
        if self._is_zero(value):
            return self.zero
        if value > 0:
            return self._count_keys_at(self.pos_offset, self.pos_counts, self.mapping.key(value))
        return self._count_keys_at(self.neg_offset, self.neg_counts, self.mapping.key(-value))

    def above(self, value: float) -> int:
        return self.total - self.below(value) - self.equal(value)


def quintile_score(k: int, n: int) -> int:
    """The catalog's score: 1 + floor(5k / N), at most 5 (k can reach N for a user not yet counted)."""
    return min(5, 1 + (5 * k) // max(n, 1))


class RfmPopulation:
    """The merged population of scored users, as of the latest summary of every partition."""

    def __init__(self, summaries: dict[int, PartitionSummary], accuracy: float = RELATIVE_ACCURACY) -> None:
        self.partitions = dict(summaries)
        recency, frequency, monetary = DDSketch(accuracy), DDSketch(accuracy), DDSketch(accuracy)
        for summary in summaries.values():
            recency.merge(summary.recency)
            frequency.merge(summary.frequency)
            monetary.merge(summary.monetary)
        self.reference = max((s.reference for s in summaries.values()), default=0)
        self.size = int(frequency.count)
        self._r, self._f, self._m = _Ranks(recency), _Ranks(frequency), _Ranks(monetary)
        digest = hashlib.blake2b(digest_size=6)
        for partition in sorted(summaries):
            digest.update(partition.to_bytes(4, "big", signed=True))
            digest.update(summaries[partition].to_bytes())
        self.version = digest.hexdigest()

    def scores(self, last_order: int, frequency: int, monetary: float) -> tuple[int, int, int]:
        n = self.size
        recency = (self.reference - last_order) / SECOND_MS
        r = quintile_score(self._r.above(recency), n)  # strictly larger recency = an older last order
        f = quintile_score(self._f.below(frequency), n)
        m = quintile_score(self._m.below(monetary), n)
        return r, f, m

