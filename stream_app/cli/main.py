"""`stream-app`: worker, demo, replay, local Kafka, synthetic data."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..timeutil import parse_timestamp


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


def _worker(args: argparse.Namespace) -> int:
    from ..settings import Settings
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
    """Read the compacted memberships topic from the start: the latest record per user wins."""
    from kafka import KafkaConsumer

    from ..settings import Settings

    from ..kafka_security import check_access

    settings = Settings()
    check_access(settings.kafka_security, settings.bootstrap_servers)
    consumer = KafkaConsumer(settings.memberships_topic, bootstrap_servers=settings.bootstrap_servers, group_id=None,
                             auto_offset_reset="earliest", isolation_level="read_committed", consumer_timeout_ms=3000,
                             **settings.kafka_security.kafka_python_kwargs())
    current: dict[str, dict[str, str]] = {}
    for message in consumer:
        user = message.key.decode("utf-8", "surrogatepass") if message.key else None
        if user is None:
            continue
        if message.value is None:
            current.pop(user, None)
        else:
            current[user] = json.loads(message.value)["segments"]
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
    import time

    from ..demo.generator import as_wire, generate
    from ..timeutil import DAY_MS

    start = parse_timestamp(args.start) if args.start else int(time.time() * 1000) - (args.days + 1) * DAY_MS
    events = generate(args.seed, args.users, start, args.days * DAY_MS)
    with (sys.stdout if args.output == "-" else open(args.output, "w")) as out:
        for event in events:
            out.write(json.dumps(as_wire(event)) + "\n")
    print(f"generate: {len(events)} events for {args.users} users -> {args.output}", file=sys.stderr)
    return 0


def _produce(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from ..settings import Settings

    from ..kafka_security import check_access

    settings = Settings()
    check_access(settings.kafka_security, settings.bootstrap_servers)
    if not args.topic:
        from ..worker.topics import ensure_topics

        ensure_topics(settings)  # so that the input topic gets the configured partition count
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=20,
                             **settings.kafka_security.kafka_python_kwargs())
    sent = 0
    with open(args.input, "rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            try:
                doc = json.loads(line)
                key = (doc.get("userId") or doc.get("anonymousId") or "").encode() or None
            except (ValueError, AttributeError):
                key = None  # malformed lines are sent as they are: the worker dead-letters them
            producer.send(args.topic or settings.input_topic, key=key, value=line)
            sent += 1
    producer.flush()
    producer.close()
    print(f"produce: {sent} messages -> {args.topic or settings.input_topic} on {settings.bootstrap_servers}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-app", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="the local Apache Kafka broker (KRaft, loopback)")
    kafka.add_argument("action", choices=["fetch", "up", "down", "status"])
    kafka.add_argument("--data-dir", default="var/kafka")
    kafka.set_defaults(func=_kafka)

    worker = sub.add_parser("worker", help="run the segmentation worker (configured by environment)")
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

    segments = sub.add_parser("segments", help="segment definitions: validate a file, list the segments")
    segments_sub = segments.add_subparsers(dest="action", required=True)
    validate = segments_sub.add_parser("validate", help="check a definitions file; errors name file:line:column")
    validate.add_argument("file")
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
