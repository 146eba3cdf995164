"""`stream-app`: worker, demo, replay, local Kafka, synthetic data."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..timeutil import parse_timestamp

# `segments report` gives up on the memberships topic when Kafka has said nothing for this long
READ_SILENCE_S = 30.0


def _kafka(args: argparse.Namespace) -> int:
    from ..broker.local_kafka import BrokerError, LocalKafka, fetch_kafka, kafka_version

    port = int(os.environ.get("STREAM_APP_KAFKA_PORT", "9092"))
    broker = LocalKafka(Path(args.data_dir), port=port, controller_port=port + 1)
    try:
        if args.action == "fetch":
            print(f"Kafka {kafka_version()} jars in {fetch_kafka(quiet=False)}")
        elif args.action == "up":
            broker.start()
            print(f"Kafka {kafka_version()} is up: KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}")
        elif args.action == "down":
            broker.stop()
            print("Kafka is down")
        else:
            pid = broker.running_pid()
            print(f"Kafka {kafka_version()}: " + (f"running (pid {pid}) on {broker.bootstrap}" if pid else "not running"))
            return 0 if pid else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _process_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes: give 1 or more (about one per core)")
    return count


def _worker(args: argparse.Namespace) -> int:
    from ..settings import Settings

    if args.processes > 1:
        from ..worker.supervisor import run_supervisor

        return run_supervisor(Settings(), args.processes)
    from ..worker.app import run_worker

    run_worker(Settings())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo.run import run_demo

    return run_demo(seed=args.seed)


def _segments(args: argparse.Namespace) -> int:
    from ..segments.definitions import DEFAULTS_FILE, describe, load_definitions

    path = Path(args.file) if getattr(args, "file", None) else None
    if path is not None and not path.exists():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    try:
        config = load_definitions(path)
    except ValueError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    if args.action == "report":
        return _segments_report(args)
    if args.action == "validate":
        print(f"valid: {path or DEFAULTS_FILE} (version {config.version})")
        return 0
    for segment, rule in describe(config):
        print(f"{segment:<30} {rule}")
    return 0


def _segments_report(args: argparse.Namespace) -> int:
    from ..segments.report import build_report, format_report

    if args.memberships:
        try:
            with open(args.memberships) as handle:
                rows = [json.loads(line) for line in handle if line.strip()]
        except (OSError, ValueError) as exc:
            print(f"error: --memberships {args.memberships}: {exc}", file=sys.stderr)
            return 2
        current = {row["user_id"]: row["segments"] for row in rows}
    else:
        current = _memberships_from_kafka()
    print(format_report(build_report(current.values(), args.min_size), args.top, args.min_size))
    return 0


def _memberships_from_kafka() -> dict[str, dict[str, str]]:
    """Read the compacted memberships topic from the start to its end (the last stable offset: committed
    records only): the latest record per user wins."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    from ..settings import Settings

    from ..kafka_security import check_access

    settings = Settings()
    check_access(settings.kafka_security, settings.bootstrap_servers)
    topic = settings.memberships_topic
    consumer = Consumer({
        "bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.app_id}-segments-report",
        **settings.kafka_security.librdkafka_config(),
        "group.id": f"{settings.app_id}-segments-report-unused",  # never joined: the partitions are assigned
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest",
        "enable.partition.eof": True,  # "read to the end" without waiting for silence
        "logger": logging.getLogger("stream_app.cli.kafka"),
    })
    current: dict[str, dict[str, str]] = {}
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
        except KafkaException as exc:
            raise SystemExit(f"error: no answer from Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}") from None
        partitions = sorted(metadata.partitions) if metadata is not None and metadata.error is None else []
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        unread = set(partitions)
        heard = time.monotonic()
        last_error = None
        while unread:
            if time.monotonic() - heard > READ_SILENCE_S:
                said = f": {last_error.str()}" if last_error is not None else ""
                raise SystemExit(f"error: no records from Kafka at {settings.bootstrap_servers} for {READ_SILENCE_S:.0f} s "
                                 f"while reading {topic} (partitions {sorted(unread)} not read to the end){said}")
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    unread.discard(message.partition())
                    heard = time.monotonic()
                else:  # librdkafka retries; one that does not pass is reported when the time is up
                    last_error = error
                continue
            heard = time.monotonic()
            key = message.key()
            user = key.decode("utf-8", "surrogatepass") if key else None
            if user is None:
                continue
            value = message.value()
            if value is None:
                current.pop(user, None)
            else:
                current[user] = json.loads(value)["segments"]
    finally:
        consumer.close()
    return current


def _replay_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..segments.definitions import load_definitions, with_model

    config = load_definitions(Path(args.segments) if args.segments else None)
    if args.model:
        from ..predict.model_file import load_model

        config = with_model(config, load_model(Path(args.model)))
    return config


def _replay(args: argparse.Namespace) -> int:
    from ..replay.run import replay_file

    until = None
    if args.until:
        try:
            until = parse_timestamp(int(args.until) if args.until.isdigit() else args.until)
        except ValueError as exc:
            print(f"error: --until: {exc}", file=sys.stderr)
            return 2
    if not Path(args.input).exists():
        print(f"error: --input {args.input} does not exist", file=sys.stderr)
        return 2
    try:
        config = _replay_config(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return replay_file(Path(args.input), Path(args.output), config, until, Path(args.memberships) if args.memberships else None)


def _generate(args: argparse.Namespace) -> int:
    from ..demo.generator import as_wire, generate
    from ..timeutil import DAY_MS

    start = parse_timestamp(args.start) if args.start else int(time.time() * 1000) - (args.days + 1) * DAY_MS
    events = generate(args.seed, args.users, start, args.days * DAY_MS)
    with (sys.stdout if args.output == "-" else open(args.output, "w")) as out:
        for event in events:
            out.write(json.dumps(as_wire(event)) + "\n")
    print(f"generate: {len(events)} events for {args.users} users -> {args.output}", file=sys.stderr)
    return 0


def _send(producer: Any, topic: str, key: bytes | None, value: bytes, on_delivery: Any = None) -> None:
    """`producer.produce`, waiting for room when librdkafka's queue is full (BufferError)."""
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=on_delivery)
            break
        except BufferError:
            producer.poll(0.1)  # serves delivery reports, which frees the queue
    producer.poll(0)


def _keyed_lines(path: str) -> Any:
    """(key, line) of each non-empty line of a JSON-lines file, keyed by the event's user."""
    with open(path, "rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            try:
                doc = json.loads(line)
                key = (doc.get("userId") or doc.get("anonymousId") or "").encode() or None
            except (ValueError, AttributeError):
                key = None  # malformed lines are sent as they are: the worker dead-letters them
            yield key, line


def _send_to_input(command: str, topic: str | None, messages: Any) -> int:
    """Send (key, value) pairs to the input topic (or `topic`) as users' events: idempotent, acks=all,
    keys placed as the Java client places them. Returns the exit status; says what was sent or why not."""
    from confluent_kafka import KafkaException, Producer

    from ..kafka_security import check_access
    from ..settings import Settings

    settings = Settings()
    check_access(settings.kafka_security, settings.bootstrap_servers)
    if not topic:
        from ..worker.topics import ensure_topics

        ensure_topics(settings)  # so that the input topic gets the configured partition count
    topic = topic or settings.input_topic
    producer = Producer({
        "bootstrap.servers": settings.bootstrap_servers, "client.id": f"{settings.app_id}-{command}",
        **settings.kafka_security.librdkafka_config(),
        "acks": "all", "linger.ms": 20,
        # each user's events must reach the worker in the order given (the catalog's rule): idempotence
        # keeps a partition's order when librdkafka retries a batch (e.g. while a new topic's leader is elected)
        "enable.idempotence": True,
        # murmur2 of the key, as the Java client (and kafka-python, Faust) place keyed records: a user's
        # events land on the same partition whichever client sent them; records without a key: random
        "partitioner": "murmur2_random",
        "logger": logging.getLogger("stream_app.cli.kafka"),
    })
    try:  # librdkafka would queue the messages and retry for minutes: say at once that nobody answers
        producer.list_topics(topic, timeout=30)
    except KafkaException as exc:
        print(f"error: {command}: no answer from Kafka at {settings.bootstrap_servers}: {exc.args[0].str()}", file=sys.stderr)
        return 2
    failed: list[Any] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(error)

    sent = 0
    for key, value in messages:
        _send(producer, topic, key, value, delivered)
        sent += 1
    producer.flush()
    if failed:
        print(f"error: {command}: {len(failed)} of {sent} messages were not delivered to {topic} on "
              f"{settings.bootstrap_servers}: {failed[0].str()}", file=sys.stderr)
        return 1
    print(f"{command}: {sent} messages -> {topic} on {settings.bootstrap_servers}", file=sys.stderr)
    return 0


def _produce(args: argparse.Namespace) -> int:
    return _send_to_input("produce", args.topic, _keyed_lines(args.input))


def _erase(args: argparse.Namespace) -> int:
    """One Segment-spec `delete` event per id, keyed like the user's events: it reaches the user's
    partition after everything sent before it, and the worker removes the user's state (docs/security.md)."""
    import uuid

    from ..timeutil import format_timestamp

    ids = list(args.user_id)
    if args.file:
        with open(args.file, encoding="utf-8") as handle:
            ids += [line.strip() for line in handle if line.strip()]
    ids = list(dict.fromkeys(ids))
    if not ids:
        print("error: erase: no user ids; give --user-id ID (repeatable) or --file IDS.txt (one id per line)", file=sys.stderr)
        return 2
    now = format_timestamp(int(time.time() * 1000))
    requests = [(user.encode(), json.dumps({"type": "delete", "userId": user, "messageId": f"erase-{uuid.uuid4()}",
                                            "timestamp": now}).encode()) for user in ids]
    return _send_to_input("erase", args.topic, requests)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="the local Apache Kafka broker (KRaft, loopback)")
    kafka.add_argument("action", choices=["fetch", "up", "down", "status"])
    kafka.add_argument("--data-dir", default="var/kafka")
    kafka.set_defaults(func=_kafka)

    worker = sub.add_parser("worker", help="run the segmentation worker (configured by environment)")
    worker.add_argument("--processes", type=_process_count, default=os.environ.get("STREAM_APP_PROCESSES", "1"), metavar="N",
                        help="engine processes in this consumer group, each with its own process slot; about one per "
                             "core (default: STREAM_APP_PROCESSES or 1; docs/operations.md)")
    worker.set_defaults(func=_worker)

    demo = sub.add_parser("demo", help="local broker + worker + synthetic traffic, transitions printed live")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=_demo)

    replay = sub.add_parser("replay", help="run the core over a JSON-lines file of events, without Kafka")
    replay.add_argument("--input", required=True)
    replay.add_argument("--output", required=True, help="transitions as JSON lines ('-' for stdout)")
    replay.add_argument("--until", help="advance the clock to this time (ISO-8601 or epoch ms) at the end")
    replay.add_argument("--memberships", help="write each user's final segments to this file")
    replay.add_argument("--segments", help="segment definitions file (default: the shipped defaults)")
    replay.add_argument("--model", help="fitted predictive model (stream-app fit) for predicted_churn / high_predicted_value")
    replay.set_defaults(func=_replay)

    produce = sub.add_parser("produce", help="send a JSON-lines file to the input topic, keyed by user")
    produce.add_argument("--input", required=True)
    produce.add_argument("--topic", help="default: STREAM_APP_INPUT_TOPIC")
    produce.set_defaults(func=_produce)

    erase = sub.add_parser("erase", help="erasure requests: remove users' state everywhere the worker keeps it "
                                         "(docs/security.md, 'Erasure')")
    erase.add_argument("--user-id", action="append", default=[], metavar="ID",
                       help="a userId or anonymousId to erase (repeatable); erase each id the person had")
    erase.add_argument("--file", help="a text file of ids, one per line")
    erase.add_argument("--topic", help="default: STREAM_APP_INPUT_TOPIC")
    erase.set_defaults(func=_erase)

    from ..importer.command import add_import_arguments

    add_import_arguments(sub)

    segments = sub.add_parser("segments", help="segment definitions: validate a file, list the segments")
    segments_sub = segments.add_subparsers(dest="action", required=True)
    validate = segments_sub.add_parser("validate", help="check a definitions file; errors name file:line:column")
    validate.add_argument("file", nargs="?", help="default: the shipped definitions")
    validate.set_defaults(func=_segments)
    listing = segments_sub.add_parser("list", help="the segments and their rules")
    listing.add_argument("--file", help="definitions file (default: the shipped defaults)")
    listing.set_defaults(func=_segments)
    report = segments_sub.add_parser("report", help="segment sizes, overlaps (Jaccard), too-small segments")
    report.add_argument("--memberships", help="a `stream-app replay --memberships` file (default: the running "
                                              "worker's memberships topic, from KAFKA_BOOTSTRAP_SERVERS)")
    report.add_argument("--min-size", type=int, default=100, help="flag segments with fewer users (default 100)")
    report.add_argument("--top", type=int, default=15, help="how many overlaps to show")
    report.set_defaults(func=_segments)

    from ..predict.fit_command import add_fit_arguments

    add_fit_arguments(sub)

    sub.add_parser("bench", add_help=False, help="the throughput benchmark against raw consumption, Faust and Quix "
                                                 "(benchmarks/throughput.py; needs the bench extra)")

    gen = sub.add_parser("generate", help="write a seeded synthetic clickstream as JSON lines")
    gen.add_argument("--users", type=int, default=1000)
    gen.add_argument("--days", type=int, default=14)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--start", help="first event time (default: days+1 days ago)")
    gen.add_argument("--output", default="-")
    gen.set_defaults(func=_generate)
    return parser


def _bench(argv: list[str]) -> int:
    """`stream-app bench ARGS` = `python benchmarks/throughput.py ARGS` (a checkout with the bench extra)."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "throughput.py"
    if not script.exists():
        print(f"error: {script} not found: the benchmark runs from a source checkout", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    from ..kafka_security import KafkaAccessError

    try:
        return int(args.func(args) or 0)
    except KafkaAccessError as exc:  # refused credentials or an unverifiable certificate: say which setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
