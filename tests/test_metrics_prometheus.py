"""A real Prometheus server scrapes the worker's /metrics on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from stream_app.broker.local_kafka import free_port

from .helpers import Names, WorkerProcess, encode, produce, track, wait_for

pytestmark = [pytest.mark.kafka]


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())["data"]["result"]
    except OSError:
        return []


def test_prometheus_scrapes_counts_without_user_ids(kafka_bootstrap, tmp_path):
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is required for this test: run deploy/ensure-prometheus.sh (make test does)"
    names = Names(kafka_bootstrap, partitions=2)
    names.create_topics()
    now = int(time.time() * 1000)
    events = [track(f"secret-user-{n}", "Product Added", now - 3600_000 + n, product_id="p") for n in range(20)]
    produce(kafka_bootstrap, names.input, [(e["userId"].encode(), encode(e)) for e in events] + [(None, b"not an event")])
    worker = WorkerProcess(names, tmp_path / "w").start()
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: stream-app\n    static_configs: [{{targets: ['127.0.0.1:{worker.web_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT,
    )
    try:
        consumed = wait_for(lambda: [r for r in _query(prom_port, "sum(stream_app_events_consumed_total)") if float(r["value"][1]) >= 20],
                            120, "Prometheus to scrape 20 consumed events")
        assert float(consumed[0]["value"][1]) == 20
        dead = wait_for(lambda: _query(prom_port, 'stream_app_dead_letters_total{reason="undecodable"}'), 30, "the dead-letter counter")
        assert float(dead[0]["value"][1]) == 1
        population = wait_for(lambda: [r for r in _query(prom_port, 'stream_app_segment_population{segment="cart_abandoner"}')
                                       if float(r["value"][1]) == 20], 60, "20 cart abandoners in the population gauge")
        assert population
        series = _query(prom_port, '{__name__=~"stream_app_.*"}')
        labels = {value for row in series for value in row["metric"].values()}
        assert series and not [v for v in labels if "secret-user" in v]
    finally:
        prom.terminate()
        prom.wait(10)
        assert worker.stop() == 0
