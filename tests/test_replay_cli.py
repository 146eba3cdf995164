"""`stream-app replay` as a user runs it: a file in, transitions and memberships out."""

import json
import subprocess
import sys

from stream_app.timeutil import MINUTE_MS, format_timestamp

from .helpers import REPO, track

T0 = 1_790_000_000_000


def test_replay_command_sorts_fires_timers_until_and_reports_bad_lines(tmp_path):
    events = [
        track("ann", "Checkout Started", T0 + 2000, mid="c"),
        track("ann", "Product Added", T0, mid="a", product_id="p"),  # out of order in the file
        track("bob", "Order Completed", T0 + 1000, mid="o", revenue=9),
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(json.dumps(e) for e in events) + "\n{not json\n")
    out, members = tmp_path / "transitions.jsonl", tmp_path / "members.jsonl"
    until = format_timestamp(T0 + 31 * MINUTE_MS)
    proc = subprocess.run([sys.executable, "-m", "stream_app", "replay", "--input", str(source), "--output", str(out),
                           "--until", until, "--memberships", str(members)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "1 invalid lines skipped" in proc.stderr and "undecodable" in proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ann = [(r["segment"], r["to"], r["cause"]["type"]) for r in rows if r["user_id"] == "ann" and r["segment"] != "engagement"]
    assert ann == [("lifecycle", "new_lead", "event"), ("high_intent", "high_intent", "event"), ("cart_abandoner", "cart_abandoner", "timer")]
    cart = [r for r in rows if r["segment"] == "cart_abandoner"]
    assert [r["at"] for r in cart] == [format_timestamp(T0 + 30 * MINUTE_MS)]
    final = {r["user_id"]: r["segments"] for r in map(json.loads, members.read_text().splitlines())}
    assert final == {"ann": {"lifecycle": "new_lead", "high_intent": "high_intent", "cart_abandoner": "cart_abandoner",
                             "engagement": "inactive"},
                     "bob": {"lifecycle": "activated", "engagement": "moderately_engaged",
                             "rfm": "lost"}}  # the only customer: every score is 1


def test_replay_explains_a_missing_input_and_a_bad_until(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stream_app", "replay", "--input", str(tmp_path / "nope.jsonl"), "--output", "-"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    (tmp_path / "e.jsonl").write_text("")
    proc = subprocess.run([sys.executable, "-m", "stream_app", "replay", "--input", str(tmp_path / "e.jsonl"), "--output", "-",
                           "--until", "next tuesday"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "--until" in proc.stderr


def test_cluster_ids_never_look_like_options():
    from stream_app.broker.local_kafka import _cluster_id

    ids = [_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")] and all(len(i) == 22 for i in ids)
