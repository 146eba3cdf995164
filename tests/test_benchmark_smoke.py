"""The throughput benchmark (benchmarks/throughput.py, issue #3) end to end on the session broker, smoke
preset: raw limit, our worker, textbook Faust and Quix Streams over the same input. No timing
assertions: the systems must agree on the cart/intent/lifecycle transitions and produce some."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_smoke_preset_systems_agree(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import quixstreams  # noqa: F401 - the Quix Streams peer
    except ImportError:
        pytest.fail("the benchmark smoke test needs the bench extra: pip install -e '.[test,bench]' (make test does)", pytrace=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.remove(str(REPO / "benchmarks"))

    status = throughput.main(["--preset", "smoke", "--no-latency", "--systems", "a,b,c,d,b2", "--out", str(tmp_path)])

    result = json.loads((tmp_path / "smoke.json").read_text())
    runs = result["runs"]
    assert status in (0, 2), result["table"]
    assert runs["a"]["events"] == result["events"] > 0
    # every system must produce the same transitions (the peers' clocks do not jump ahead while a
    # partition still has backfill to read, so load cannot move their cart decisions)
    for key in ("b", "b2", "c", "d"):
        counts, ours = runs[key]["counts"], runs["b"]["counts"]
        assert sum(counts.values()) > 0, key
        assert counts == ours, (key, result["table"])
    assert runs["b"]["counts"]["lifecycle: None -> new_lead"] == result["users"]
    assert runs["b"]["counts"].get("cart_abandoner: None -> cart_abandoner", 0) > 0
