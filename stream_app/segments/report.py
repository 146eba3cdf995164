"""Guarding against over-segmentation: sizes, overlaps (Jaccard) and too-small segments.

Input is every user's current memberships, as the compacted memberships topic or
`stream-app replay --memberships` hold them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import Iterable, Mapping


@dataclass(frozen=True)
class SegmentReport:
    users: int
    sizes: dict[str, int]  # "segment" or "family/member" -> users
    overlaps: list[tuple[str, str, int, float]]  # (a, b, users in both, Jaccard), largest Jaccard first
    small: list[str]  # segments below the minimum size


def _labels(segments: Mapping[str, str]) -> list[str]:
    return [segment if member == segment else f"{segment}/{member}" for segment, member in segments.items()]


def build_report(memberships: Iterable[Mapping[str, str]], min_size: int = 100) -> SegmentReport:
    members: dict[str, set[int]] = defaultdict(set)
    users = 0
    for index, segments in enumerate(memberships):
        users += 1
        for label in _labels(segments):
            members[label].add(index)
    sizes = {label: len(ids) for label, ids in sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))}
    overlaps = []
    for a, b in combinations(sorted(members), 2):
        if a.split("/")[0] == b.split("/")[0] and "/" in a and "/" in b:
            continue  # members of one family never overlap
        both = len(members[a] & members[b])
        if both:
            overlaps.append((a, b, both, both / len(members[a] | members[b])))
    overlaps.sort(key=lambda row: (-row[3], row[0], row[1]))
    small = [label for label, size in sizes.items() if size < min_size]
    return SegmentReport(users, sizes, overlaps, small)


def format_report(report: SegmentReport, top: int = 15, min_size: int = 100) -> str:
    lines = [f"{report.users} users", "", f"{'segment':<34} {'users':>8} {'share':>7}"]
    for label, size in report.sizes.items():
        share = size / report.users if report.users else 0.0
        lines.append(f"{label:<34} {size:>8} {share:>7.1%}")
    lines += ["", f"largest overlaps (Jaccard), top {top}:"]
    for a, b, both, jaccard in report.overlaps[:top]:
        lines.append(f"  {jaccard:5.2f}  {a} & {b} ({both} users)")
    if not report.overlaps:
        lines.append("  none")
    lines += ["", f"segments below {min_size} users: " + (", ".join(report.small) if report.small else "none")]
    return "\n".join(lines)
