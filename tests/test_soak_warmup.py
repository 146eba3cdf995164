"""The soak's warm-up rule (benchmarks/soak.py): RSS is judged only once RocksDB's cache has filled."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def soak():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import soak as module
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return module


def samples(cache_mb):
    return [{"t_s": float(t), "rocksdb_mb": cache_mb(t)} for t in range(0, 3600, 10)]


def test_warm_once_the_cache_reaches_most_of_its_budget(soak) -> None:
    rows = samples(lambda t: t / 12)  # 5 MiB a minute: 54.4 MiB (85% of 64) at 653 s
    assert soak.warmup_end(rows, 64) == 660.0


def test_never_before_five_minutes(soak) -> None:
    assert soak.warmup_end(samples(lambda t: 64.0), 64) == soak.MIN_WARMUP_S


def test_a_cache_that_stops_growing_below_its_budget_is_warm(soak) -> None:
    rows = samples(lambda t: min(t, 600) / 10)  # 6 MiB a minute up to 60 MiB at 10 minutes, then stays
    # (budget 256 MiB): the first sample with less than 2 MiB of growth over the 5 minutes before it
    assert soak.warmup_end(rows, 256) == 890.0


def test_still_filling_is_not_warm_until_the_limit(soak) -> None:
    rows = samples(lambda t: t / 60)  # 1 MiB a minute: 2 MiB over 5 minutes is still growing
    assert soak.warmup_end(rows[:100], 64) is None
    assert soak.warmup_end(rows, 64) == soak.MAX_WARMUP_S
