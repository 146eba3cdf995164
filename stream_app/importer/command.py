"""`stream-app import`: options in, a prepared import out to the topic or to a file, a summary at the end."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..settings import Settings
from ..timeutil import parse_timestamp
from .csv_rows import CsvMapping
from .ga4 import Ga4Mapping
from .mapping_table import FORMATS, MappingError, MappingTable, load_mapping
from .mixpanel import MixpanelMapping
from .prepare import Preparation, Prepared, VendorRows, load_prepared, prepare, prepared_counts, remove_runs
from .progress import Counts, summary_lines
from .readers import InputError, check_file_type, file_type
from .segment_archive import SegmentArchiveMapping
from .work_files import file_digest, import_id

DEFAULT_BATCH_SIZE = 5000
DEFAULT_RUN_SIZE = 100_000


@dataclass(frozen=True)
class ImportOptions:
    format: str
    inputs: tuple[Path, ...]  # one export, possibly in several files (BigQuery writes files of at most 1 GB)
    output: Path | None  # --output FILE, or None for the topic
    topic: str | None  # --to-topic NAME; None: the input topic (STREAM_APP_INPUT_TOPIC)
    since_ms: int | None
    until_ms: int | None
    mapping: Path | None
    time_in_ms: bool
    batch_size: int
    run_size: int
    work_dir: Path
    rejects: Path | None
    progress: bool | None  # None: a bar when stderr is a terminal


def add_import_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("import", help="map a GA4, Mixpanel, Segment or CSV export to Segment-spec events and send them "
                                           "to the input topic (exactly once, in timestamp order) or write them as JSON lines")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--input", required=True, nargs="+", metavar="PATH",
                        help="the export: .jsonl[.gz], .parquet, .avro or .csv[.gz] (docs/import.md); several files "
                             "of one export are imported as one, sorted together")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-topic", nargs="?", const="", metavar="TOPIC",
                        help="send to Kafka: the input topic (STREAM_APP_INPUT_TOPIC), or the topic named")
    target.add_argument("--output", metavar="EVENTS.jsonl", help="write JSON lines (for stream-app replay / produce)")
    parser.add_argument("--since", help="only rows with a timestamp at or after this time (ISO-8601 or epoch ms)")
    parser.add_argument("--until", help="only rows with a timestamp before this time, e.g. when the live stream started")
    parser.add_argument("--mapping", help="a mapping table laid over the shipped one (stream_app/importer/mapping.yaml)")
    parser.add_argument("--time-in-ms", action="store_true", help="mixpanel: the export was made with time_in_ms=true")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="events per Kafka transaction (default 5000)")
    parser.add_argument("--run-size", type=int, default=DEFAULT_RUN_SIZE,
                        help="events per sorted run on disk: what the sort holds in memory (default 100000)")
    parser.add_argument("--work-dir", default="var/import", help="sorted runs and checkpoints (default var/import)")
    parser.add_argument("--rejects", help="rows that could not be mapped, one JSON line each (default: in the work folder)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show the progress bar (default: when stderr is a terminal)")
    parser.set_defaults(func=import_command)


def _time(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_timestamp(int(value) if value.isdigit() else value)
    except ValueError as exc:
        raise InputError(f"{option}: {exc}") from None


def options_from_args(args: argparse.Namespace) -> ImportOptions:
    options = ImportOptions(
        format=args.format, inputs=tuple(Path(p) for p in args.input), output=Path(args.output) if args.output else None,
        topic=args.to_topic or None, since_ms=_time(args.since, "--since"), until_ms=_time(args.until, "--until"),
        mapping=Path(args.mapping) if args.mapping else None, time_in_ms=args.time_in_ms, batch_size=args.batch_size,
        run_size=args.run_size, work_dir=Path(args.work_dir), rejects=Path(args.rejects) if args.rejects else None,
        progress=args.progress)
    for path in options.inputs:
        if not path.is_file():
            raise InputError(f"--input {path} does not exist")
        check_file_type(options.format, file_type(path))
    if options.since_ms is not None and options.until_ms is not None and options.since_ms >= options.until_ms:
        raise InputError("--since must be before --until")
    if options.batch_size < 1 or options.run_size < 1:
        raise InputError("--batch-size and --run-size must be at least 1")
    if options.time_in_ms and options.format != "mixpanel":
        raise InputError("--time-in-ms is for --format mixpanel")
    return options


def vendor_rows(fmt: str, table: MappingTable, time_in_ms: bool) -> VendorRows:
    mapping = table.for_format(fmt)
    if fmt == "ga4":
        return Ga4Mapping(mapping)
    if fmt == "mixpanel":
        return MixpanelMapping(mapping, time_in_ms=time_in_ms)
    if fmt == "segment":
        return SegmentArchiveMapping(mapping)
    return CsvMapping(mapping)


def import_command(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
        table = load_mapping(options.mapping)
    except (InputError, MappingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_import(options, table)


def run_import(options: ImportOptions, table: MappingTable, pause=None) -> int:  # type: ignore[no-untyped-def]
    """The whole import. ``pause(stage, batch)`` is for tests only (tests/import_with_pause.py)."""
    from confluent_kafka import KafkaException

    from .kafka_sender import ImportFailed

    started = time.monotonic()
    settings = Settings()
    # the preparation's identity: what decides the events and their order
    prepared_id = import_id([file_digest(path) for path in options.inputs], {
        "format": options.format, "since": options.since_ms, "until": options.until_ms, "mapping": table.digest,
        "time_in_ms": options.time_in_ms, "max_event_bytes": settings.max_event_bytes})
    work = options.work_dir / prepared_id
    rejects = options.rejects or work.parent / f"{prepared_id}-rejects.jsonl"
    job = Preparation(inputs=[(path, file_type(path)) for path in options.inputs], mapper=vendor_rows(options.format, table, options.time_in_ms),
                      since_ms=options.since_ms, until_ms=options.until_ms, max_event_bytes=settings.max_event_bytes,
                      run_size=options.run_size, rejects_path=rejects, progress=options.progress)
    try:
        if options.output is not None:
            counts = _to_file(options, job, work, prepared_id)
            resumed_from = 0
            label = "wrote"
        else:
            counts, resumed_from = _to_topic(options, settings, job, work, prepared_id, pause)
            label = "sent"
    except InputError as exc:
        print(f"error: import: {exc}", file=sys.stderr)
        return 2
    except ImportFailed as exc:
        print(f"error: import: {exc}", file=sys.stderr)
        return 1
    except KafkaException as exc:
        print(f"error: import: Kafka at {settings.bootstrap_servers}: {exc.args[0].str() if exc.args else exc}; what was "
              "committed stays, run the same command again to resume", file=sys.stderr)
        return 1
    for line in summary_lines(counts, label, time.monotonic() - started, str(rejects), resumed_from):
        print(line, file=sys.stderr)
    return 0


def _prepared(job: Preparation, work: Path, prepared_id: str) -> Prepared:
    return load_prepared(work, prepared_id) or prepare(job, work, prepared_id)


def _to_file(options: ImportOptions, job: Preparation, work: Path, prepared_id: str) -> Counts:
    from .file_output import write_events

    assert options.output is not None
    prepared = _prepared(job, work, prepared_id)
    written = write_events(prepared.runs, options.output, prepared.events, options.progress)
    remove_runs(work)
    return replace(prepared.counts, sent=written)


def _to_topic(options: ImportOptions, settings: Settings, job: Preparation, work: Path, prepared_id: str,
              pause) -> tuple[Counts, int]:  # type: ignore[no-untyped-def]
    from ..kafka_security import check_access
    from .kafka_sender import TopicSender, TopicTarget, check_topic_exists, cluster_id, ensure_progress_topic

    check_access(settings.kafka_security, settings.bootstrap_servers)
    if options.topic is None:
        from ..worker.topics import ensure_topics

        ensure_topics(settings)  # the input topic with the configured partition count
        topic = settings.input_topic
    else:
        check_topic_exists(settings, options.topic)
        topic = options.topic
    ensure_progress_topic(settings)
    # the sending's identity: the preparation, and where it goes
    identity = import_id(prepared_id, {"cluster": cluster_id(settings), "topic": topic})
    target = TopicTarget(settings=settings, topic=topic, identity=identity, batch_size=options.batch_size,
                         checkpoint=work.parent / f"{prepared_id}-checkpoint-{identity[:12]}.json", progress=options.progress)
    sender = TopicSender(target, pause)
    committed = sender.open()  # before preparing: fences a run of the same import that is still going
    if committed.get("done"):
        counts = prepared_counts(work, prepared_id) or Counts()
        print(f"import: already done: {committed['sent']} events were sent to {topic} in {committed['batch']} "
              "transactions; nothing sent again", file=sys.stderr)
        return replace(counts, sent=committed["sent"]), committed["sent"]
    prepared = _prepared(job, work, prepared_id)
    result = sender.send(prepared.runs, prepared.fingerprint, prepared.events, committed)
    remove_runs(work)
    return replace(prepared.counts, sent=result.sent_before + result.sent_now), result.sent_before
