"""The progress bar (rows/s, events/s, ETA) and the summary printed at the end of an import."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm


class ProgressBar:
    """A tqdm bar counting ``unit`` (its rate and ETA), with the rate of a second count beside it."""

    def __init__(self, desc: str, unit: str, other_unit: str | None, total: int | None, enabled: bool | None) -> None:
        self.other_unit = other_unit
        self.other = 0
        self.started = time.monotonic()
        # enabled=None: shown when stderr is a terminal
        self.bar = tqdm(desc=desc, unit=unit, total=total, file=sys.stderr, mininterval=0.5, unit_scale=True,
                        disable=None if enabled is None else not enabled, dynamic_ncols=True)
        self._shown_at = 0.0

    def update(self, count: int, other: int) -> None:
        self.other += other
        self.bar.update(count)
        now = time.monotonic()
        if self.other_unit is not None and now - self._shown_at >= 0.5:
            self._shown_at = now
            rate = self.other / max(now - self.started, 1e-9)
            self.bar.set_postfix_str(f"{rate:,.0f} {self.other_unit}/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


@dataclass
class Counts:
    """What happened to the input's rows and to the events they became."""

    rows_read: int = 0
    events_mapped: int = 0
    outside_range: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    deduplicated: int = 0
    sent: int = 0  # to the topic, or written to the output file

    def as_json(self) -> dict[str, Any]:
        return {"rows_read": self.rows_read, "events_mapped": self.events_mapped, "outside_range": self.outside_range,
                "rejected": dict(sorted(self.rejected.items())), "deduplicated": self.deduplicated, "sent": self.sent}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Counts":
        return cls(rows_read=doc["rows_read"], events_mapped=doc["events_mapped"], outside_range=doc["outside_range"],
                   rejected=Counter(doc["rejected"]), deduplicated=doc["deduplicated"], sent=doc.get("sent", 0))


def summary_lines(counts: Counts, sent_label: str, seconds: float, rejects_path: str | None, resumed_from: int) -> list[str]:
    rejected = sum(counts.rejected.values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items(), key=lambda kv: (-kv[1], kv[0])))
    lines = [
        f"import: read {counts.rows_read} rows, {sent_label} {counts.sent} events, deduplicated {counts.deduplicated}, "
        f"rejected {rejected}, outside --since/--until {counts.outside_range}",
    ]
    if rejected:
        lines.append(f"import: rejected by reason: {reasons} (one line per row in {rejects_path})")
    if resumed_from:
        lines.append(f"import: resumed: {resumed_from} events had been {sent_label} before the interruption, none again")
    rate = counts.rows_read / seconds if seconds > 0 else 0.0
    lines.append(f"import: {seconds:.1f} s, {rate:,.0f} rows/s")
    return lines
