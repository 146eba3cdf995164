"""Throughput of `stream-app import --format ga4` into the input topic (rows/s), on a real broker.

    .venv/bin/python benchmarks/import_throughput.py [--users 9500] [--days 30] [--batch-size 5000]

Writes a synthetic GA4 BigQuery export (benchmarks/ga4_synthetic.py, JSON lines, about 10.5 rows per user)
and imports it four ways, each a fresh import (its own work folder) timed from the command's start to
its end:
  1. `--output`: read, map, check, deduplicate, sort, write JSON lines (no Kafka);
  2. `--to-topic`: the same, sent in Kafka transactions with their checkpoints (the figure for the docs);
  3. and 4. the same rows as Parquet and as Avro, `--to-topic`.
Then checks that the topic holds every event once (read_committed). Starts a local Kafka broker on free
ports unless KAFKA_BOOTSTRAP_SERVERS is set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ga4_synthetic import CUSTOM_EVENTS_MAPPING, write_export  # noqa: E402

from reliability_harness import broker_unless_given  # noqa: E402

from stream_app.settings import Settings  # noqa: E402
from stream_app.timeutil import DAY_MS  # noqa: E402
from stream_app.worker.topics import ensure_topics  # noqa: E402


def _typed_copies(source: Path, parquet: Path, avro: Path) -> None:
    """The JSON-lines export as BigQuery writes it to Parquet and Avro (INT64 as integers), by the tests'
    helpers and their GA4 export schema (tests/fixtures/import/ga4_export.avsc)."""
    from tests.import_files import typed_ga4_rows, write_ga4_avro, write_ga4_parquet

    rows, untyped = typed_ga4_rows(source.read_text().splitlines())
    assert not untyped
    write_ga4_parquet(rows, parquet, row_group_size=50_000)
    write_ga4_avro(rows, avro)


def _run(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "stream_app", "import", "--no-progress", *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}):\n{proc.stderr}")
    return seconds, proc.stderr


def _count_committed(bootstrap: str, topic: str) -> tuple[int, int]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "import-throughput-unused", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    unread, ids, records = set(partitions), set(), 0
    while unread:
        message = consumer.poll(10)
        if message is None:
            raise SystemExit(f"{topic}: no end of partition within 10 s")
        if message.error() is not None:
            if message.error().code() == KafkaError._PARTITION_EOF:
                unread.discard(message.partition())
            continue
        records += 1
        ids.add(json.loads(message.value())["messageId"])
    consumer.close()
    return records, len(ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=9500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--batch-size", default="5000")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="import-throughput-"))
    source, mapping = work / "ga4.jsonl", work / "custom.yaml"
    rows = write_export(source, seed=17, users=args.users, start_ms=int(time.time() * 1000) - (args.days + 2) * DAY_MS, days=args.days)
    mapping.write_text(CUSTOM_EVENTS_MAPPING)
    _typed_copies(source, work / "ga4.parquet", work / "ga4.avro")
    source_mb = source.stat().st_size / 1e6  # the work folder is gone when the figures are printed
    bootstrap, broker = broker_unless_given(work)
    try:
        results = []
        for label, input_file, target in (("JSON lines -> file", source, ["--output", str(work / "events.jsonl")]),
                                          ("JSON lines -> topic", source, ["--to-topic"]),
                                          ("Parquet -> topic", work / "ga4.parquet", ["--to-topic"]),
                                          ("Avro -> topic", work / "ga4.avro", ["--to-topic"])):
            tag = f"{int(time.time() * 1000)}"
            settings = replace(Settings(), bootstrap_servers=bootstrap, app_id=f"imp-{tag}", input_topic=f"imp-in-{tag}",
                               transitions_topic=f"imp-tr-{tag}", memberships_topic=f"imp-mem-{tag}", dlq_topic=f"imp-dlq-{tag}")
            ensure_topics(settings)
            env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, STREAM_APP_ID=settings.app_id, STREAM_APP_INPUT_TOPIC=settings.input_topic,
                       STREAM_APP_TRANSITIONS_TOPIC=settings.transitions_topic, STREAM_APP_MEMBERSHIPS_TOPIC=settings.memberships_topic,
                       STREAM_APP_DLQ_TOPIC=settings.dlq_topic)
            seconds, stderr = _run(env, "--format", "ga4", "--input", str(input_file), "--mapping", str(mapping),
                                   "--batch-size", args.batch_size, "--work-dir", str(work / f"w-{tag}"), *target)
            sent = int(re.search(r"(?:sent|wrote) (\d+) events", stderr).group(1))
            if "--to-topic" in target:
                records, unique = _count_committed(bootstrap, settings.input_topic)
                assert records == unique == sent, (records, unique, sent)
            results.append((label, seconds, sent))
            print(stderr.strip(), file=sys.stderr)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"input: {rows} GA4 rows ({source_mb:.1f} MB JSON lines), batch size {args.batch_size}")
    for label, seconds, sent in results:
        print(f"{label:<22} {seconds:6.1f} s  {rows / seconds:8,.0f} rows/s  {sent / seconds:8,.0f} events/s  ({sent} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
