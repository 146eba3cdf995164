import json
import subprocess
import sys

import pytest

from stream_app.segments.report import build_report

from .helpers import REPO


def test_sizes_overlaps_and_small_segments():
    users = [
        {"lifecycle": "activated", "high_intent": "high_intent"},
        {"lifecycle": "activated", "high_intent": "high_intent", "cart_abandoner": "cart_abandoner"},
        {"lifecycle": "new_lead", "cart_abandoner": "cart_abandoner"},
        {"lifecycle": "new_lead"},
    ]
    report = build_report(users, min_size=2)
    assert report.users == 4
    assert report.sizes == {"lifecycle/activated": 2, "lifecycle/new_lead": 2, "cart_abandoner": 2, "high_intent": 2}
    overlaps = {(a, b): (both, jaccard) for a, b, both, jaccard in report.overlaps}
    assert overlaps[("high_intent", "lifecycle/activated")] == (2, 1.0)
    assert overlaps[("cart_abandoner", "high_intent")] == (1, pytest.approx(1 / 3))
    assert ("lifecycle/activated", "lifecycle/new_lead") not in overlaps  # one family: never both
    assert report.small == []
    assert build_report(users, min_size=3).small == list(report.sizes)


def test_report_command_reads_a_replay_memberships_file(tmp_path):
    path = tmp_path / "members.jsonl"
    rows = [{"user_id": f"u{n}", "segments": {"lifecycle": "new_lead", **({"high_intent": "high_intent"} if n % 2 else {})}} for n in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    proc = subprocess.run([sys.executable, "-m", "stream_app", "segments", "report", "--memberships", str(path), "--min-size", "6"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "10 users" in proc.stdout and "0.50  high_intent & lifecycle/new_lead (5 users)" in proc.stdout
    assert "segments below 6 users: high_intent" in proc.stdout
