"""A few rounds of benchmarks/kill_rounds.py in CI (issue #15): kill -9 at random moments while input
arrives, the worker restarted as a supervisor would, and the whole output compared by content with the
replay (every transition decided by T, memberships, dead letters, committed offsets). The benchmark runs
50 rounds and more (docs/reliability.md)."""

from __future__ import annotations

import pytest

from benchmarks.kill_rounds import run_round

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.mark.parametrize("seed", [101, 102])
def test_random_kill_9s_change_nothing_in_the_output(kafka_bootstrap, tmp_path, seed):
    result = run_round(kafka_bootstrap, seed, tmp_path, users=200, rate=300, kills=2)
    assert len(result["kills"]) == 2
    assert result["restarts"] >= 2  # each kill -9 restarted the worker
    assert result["transitions_compared"] > 500
    assert result["dead_letters"] == 3
