"""The worker with a fitted model on the real broker: a lapsed customer drifts into predicted_churn by
timer as event time passes their expected purchase interval; a regular customer does not."""

from __future__ import annotations

import time

import pytest

from stream_app.timeutil import DAY_MS

from .helpers import Names, WorkerProcess, encode, produce, read_all, track, wait_for
from .test_predict_streaming import fitted  # noqa: F401  (module fixture: the CDNOW model)
from .test_predict_cdnow import cdnow  # noqa: F401

pytestmark = [pytest.mark.kafka]


def test_worker_emits_predicted_churn_by_timer(kafka_bootstrap, tmp_path, fitted):  # noqa: F811
    model, model_path = fitted
    names = Names(kafka_bootstrap, partitions=2)
    names.create_topics()
    now = int(time.time() * 1000)
    events = []
    for week in range(6):  # weekly buyer who stopped 300 days ago
        events.append(track("lapsed", "Order Completed", now - 335 * DAY_MS + week * 7 * DAY_MS, revenue=30))
    for week in range(6):  # weekly buyer who bought two days ago
        events.append(track("regular", "Order Completed", now - 37 * DAY_MS + week * 7 * DAY_MS, revenue=30))
    produce(kafka_bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in events])
    worker = WorkerProcess(names, tmp_path / "w")
    worker.start_env = {"STREAM_APP_MODEL_FILE": str(model_path)}
    worker.start()
    try:
        rows = wait_for(lambda: [r for r in read_all(kafka_bootstrap, names.transitions) if r["segment"] == "predicted_churn"],
                        90, "a predicted_churn transition")
        worker.assert_alive()
        entry = rows[0]
        assert (entry["user_id"], entry["from"], entry["to"], entry["cause"]["type"]) == ("lapsed", None, "predicted_churn", "timer")
        assert entry["at"].endswith("T00:00:00.000Z") and entry["traits"]["p_alive"] < 0.3
        assert entry["model_version"].endswith("+model-" + model.model_version)
        time.sleep(2)
        everything = read_all(kafka_bootstrap, names.transitions)
        assert not [r for r in everything if r["user_id"] == "regular" and r["segment"] == "predicted_churn"]
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
