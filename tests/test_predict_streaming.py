"""The predictive segments in the stream, on the CDNOW history replayed as `Order Completed` events:
the stream's scores equal the batch model's, and `predicted_churn` fires by timer as time passes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import date, datetime, timezone

import numpy as np
import pytest

from stream_app.engine.partition import CLOCK_KEY
from stream_app.predict import p_alive, read_transactions, summarize_transactions
from stream_app.predict.model_file import load_model
from stream_app.predict.scoring import clv_at, p_alive_at
from stream_app.replay import replay_records
from stream_app.segments.definitions import load_definitions, with_model
from stream_app.state.encoding import decode_profile
from stream_app.timeutil import DAY_MS, format_timestamp

from .helpers import REPO
from .test_predict_cdnow import CALIBRATION_END, cdnow  # noqa: F401  (session fixture)

CAL_END_DAY = (CALIBRATION_END - date(1970, 1, 1)).days


@pytest.fixture(scope="module")
def fitted(cdnow, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("model") / "model.json"
    proc = subprocess.run([sys.executable, "-m", "stream_app", "fit", "--input", str(cdnow["CDNOW_sample.txt"]),
                           "--calibration-end", "1997-09-30", "--output", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "BG/NBD" in proc.stdout and "r = 0.24" in proc.stdout
    return load_model(out), out


def _events(transactions, until: date):
    rows = []
    for n, t in enumerate(transactions):
        if t.date > until:
            continue
        at = datetime(t.date.year, t.date.month, t.date.day, 12, tzinfo=timezone.utc)
        rows.append({"type": "track", "event": "Order Completed", "userId": f"c{t.customer_id}", "messageId": f"o{n}",
                     "timestamp": format_timestamp(int(at.timestamp() * 1000)), "properties": {"revenue": t.amount}})
    return rows


def test_stream_scores_equal_the_batch_model_and_predicted_churn_fires_by_timer(cdnow, fitted):  # noqa: F811
    model, _path = fitted
    assert model.clv_threshold(0.10) is not None and model.clv_percentiles[90] == pytest.approx(model.clv_threshold(0.10))
    transactions = read_transactions(cdnow["CDNOW_sample.txt"])
    events = _events(transactions, CALIBRATION_END)
    cfg = with_model(load_definitions(), model)
    until = (CAL_END_DAY + 1) * DAY_MS - 1  # the last millisecond of the calibration end day
    transitions, dead, store = replay_records([json.dumps(e).encode() for e in events], cfg, until_ms=until)
    assert not dead

    summary = summarize_transactions(transactions, CALIBRATION_END, "weeks")
    batch_alive = dict(zip(summary.ids, np.asarray(p_alive(model.bgnbd, summary.x, summary.t_x, summary.T))))
    orders = Counter(f"c{t.customer_id}" for t in transactions if t.date <= CALIBRATION_END)
    profiles = {key: decode_profile(value) for key, value in store.items() if key != CLOCK_KEY}
    assert len(profiles) == summary.n_customers == 2357

    # same scores as the batch model, customer by customer
    for customer_id, alive in batch_alive.items():
        assert p_alive_at(model, profiles[f"c{customer_id}"], CAL_END_DAY) == pytest.approx(float(alive), rel=1e-9, abs=1e-12)

    # memberships at the calibration end are exactly the rule applied to the batch scores
    churn_now = {user for user, p in profiles.items() if p.members.get("predicted_churn")}
    expected = {f"c{cid}" for cid, alive in batch_alive.items() if orders[f"c{cid}"] >= 2 and alive < 0.3}
    assert churn_now == expected and len(expected) > 50
    threshold = model.clv_threshold(0.10)
    high_value = {user for user, p in profiles.items() if p.members.get("high_predicted_value")}
    assert high_value == {user for user, p in profiles.items() if clv_at(model, p, CAL_END_DAY) >= threshold}
    assert 0.03 * len(profiles) < len(high_value) < 0.2 * len(profiles)

    # P(alive) falls as weeks pass without orders: most entries are timer-driven, at a UTC midnight,
    # and their trait snapshot carries the scores that decided them
    entries = [t for t in transitions if t["segment"] == "predicted_churn" and t["to"] == "predicted_churn"]
    timers = [t for t in entries if t["cause"]["type"] == "timer"]
    assert len(timers) > len(entries) / 2
    assert all(t["at"].endswith("T00:00:00.000Z") for t in timers)
    assert all(t["traits"]["p_alive"] < 0.3 and {"expected_purchases_30d", "expected_purchases_90d", "clv"} <= set(t["traits"]) for t in entries)
    assert all("+model-" + model.model_version in t["model_version"] for t in entries)


def test_replay_command_with_a_model(cdnow, fitted, tmp_path):  # noqa: F811
    _model, model_path = fitted
    events = _events(read_transactions(cdnow["CDNOW_sample.txt"]), date(1997, 6, 30))[:3000]
    source = tmp_path / "orders.jsonl"
    source.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    out = tmp_path / "transitions.jsonl"
    proc = subprocess.run([sys.executable, "-m", "stream_app", "replay", "--input", str(source), "--output", str(out),
                           "--model", str(model_path), "--until", "1998-06-30T00:00:00Z"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(r["segment"] == "predicted_churn" and r["cause"]["type"] == "timer" for r in rows)
    bad = subprocess.run([sys.executable, "-m", "stream_app", "replay", "--input", str(source), "--output", "-",
                          "--model", str(source)], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "not a stream-app predictive model" in bad.stderr or "expected a JSON model" in bad.stderr
