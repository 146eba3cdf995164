"""Drive the pure core for one or more users without Kafka."""

from __future__ import annotations

import json
from typing import Any

from stream_app.replay import replay_records
from stream_app.segments.config import CatalogConfig

CFG = CatalogConfig()


def run(events: list[dict[str, Any]], until: int | None = None, cfg: CatalogConfig = CFG) -> list[dict[str, Any]]:
    transitions, dead, _store = replay_records([json.dumps(e).encode() for e in events], cfg, until)
    assert not dead, dead
    return transitions


def changes(transitions: list[dict[str, Any]], segment: str) -> list[tuple[Any, Any, str, str]]:
    return [(t["from"], t["to"], t["at"], t["cause"]["type"]) for t in transitions if t["segment"] == segment]
