"""`stream-app import` without Kafka (issue #17): each vendor's hand-written export maps to the expected
Segment-spec events field by field, every mapped event passes the worker's decoder, duplicates collapse,
rejects carry one reason per row, --since/--until cut by timestamp, the table can be overridden, and the
external sort merges (and resumes) in timestamp order."""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.events import decode_event
from stream_app.importer.external_sort import merge_runs, write_sorted_runs
from stream_app.importer.mapping_table import MappingError, load_mapping
from stream_app.timeutil import parse_timestamp

from .helpers import REPO
from .import_files import (FIXTURES, expected, fixture_rows, read_jsonl, run_import, summary_counts, typed_ga4_rows,
                           write_ga4_avro, write_ga4_parquet)

GA4_ID = re.compile(r"^ga4-[0-9a-f]{32}$")


def _import(capsys, tmp_path: Path, fmt: str, source: Path, *extra: str) -> tuple[list[dict], str, Path]:
    out, rejects = tmp_path / f"{fmt}-events.jsonl", tmp_path / f"{fmt}-rejects.jsonl"
    status, err = run_import(capsys, "--format", fmt, "--input", str(source), "--output", str(out), "--work-dir",
                             str(tmp_path / "work"), "--rejects", str(rejects), *extra)
    assert status == 0, err
    return read_jsonl(out), err, rejects


def _ga4_ids_by_row(lines: list[str]) -> dict[str, str]:
    """'row N' / 'row N item I' -> the id derived from row N (the derivation itself is checked separately)."""
    from stream_app.importer.ga4 import identifying_fields
    from stream_app.importer.segment_events import derived_message_id

    names = {}
    for number, line in enumerate(lines, start=1):
        row = identifying_fields(json.loads(line))
        base = derived_message_id("ga4", row)
        names[f"row {number}"] = base
        for index in range(len(row.get("items", []))):
            names[f"row {number} item {index}"] = f"{base}-{index}"
    return names


def _check_against_expected(capsys, tmp_path, fmt: str, fixture: str, expected_name: str, ids: dict[str, str] | None = None):
    events, err, rejects = _import(capsys, tmp_path, fmt, FIXTURES / fixture)
    want = expected(expected_name)
    for event in want["events"]:
        event["messageId"] = (ids or {}).get(event["messageId"], event["messageId"])
    assert len(events) == len(want["events"])
    for got, wanted in zip(events, want["events"]):
        assert got == wanted  # every field, nested properties included
    assert [(r["row"], r["reason"]) for r in read_jsonl(rejects)] == [tuple(r) for r in want["rejects"]]
    counts = summary_counts(err)
    assert counts == {"read": want["rows_read"], "sent": len(want["events"]), "deduplicated": want["deduplicated"],
                      "rejected": len(want["rejects"]), "outside": 0}
    return events, err


# -- GA4 -------------------------------------------------------------------------------------------------
def test_ga4_rows_map_to_the_expected_segment_events(capsys, tmp_path):
    lines = fixture_rows("ga4_events.jsonl")
    events, err = _check_against_expected(capsys, tmp_path, "ga4", "ga4_events.jsonl", "ga4_expected.json",
                                          _ga4_ids_by_row(lines))
    # two items of one add_to_cart: one Product Added each, the item index in the id
    added = [e for e in events if e.get("event") == "Product Added" and e.get("userId") == "u-ann"]
    assert [e["properties"]["product_id"] for e in added] == ["sku-1", "sku-2"]
    base = added[0]["messageId"].rsplit("-", 1)[0]
    assert GA4_ID.match(base) and [e["messageId"] for e in added] == [f"{base}-0", f"{base}-1"]
    # user_id, else user_pseudo_id: the guest is keyed by the pseudo id
    assert {e.get("userId") or e["anonymousId"] for e in events} == {"u-ann", "u-bob", "883920145.1792486000"}
    assert "rejected by reason: bad_timestamp 1, missing_user_id 1, no_items 1, unmapped_event 1" in err


def test_the_ga4_message_id_is_the_documented_digest_of_the_identifying_fields(capsys, tmp_path):
    row = {"event_date": "20261020", "event_timestamp": "1792486800000000", "event_name": "login", "user_id": "u-1",
           "user_pseudo_id": "42.7", "stream_id": "99", "event_bundle_sequence_id": "3",
           "event_params": [{"key": "method", "value": {"string_value": "google", "int_value": None}}],
           "geo": {"city": "Berlin"}, "device": {"category": "desktop"}, "items": []}
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps(row) + "\n")
    (event,), _, _ = _import(capsys, tmp_path, "ga4", source)
    # docs/import.md: canonical JSON (sorted keys, no spaces) of the identifying fields present, INT64 as
    # numbers, NULLs and empty arrays left out; BLAKE2b with a 16-byte digest
    canonical = ('{"event_bundle_sequence_id":3,"event_name":"login","event_params":[{"key":"method","value":'
                 '{"string_value":"google"}}],"event_timestamp":1792486800000000,"stream_id":"99","user_id":"u-1",'
                 '"user_pseudo_id":"42.7"}')
    assert event["messageId"] == "ga4-" + hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    assert event == {"type": "track", "event": "Signed In", "messageId": event["messageId"], "userId": "u-1",
                     "anonymousId": "42.7", "timestamp": "2026-10-20T09:00:00.000Z", "properties": {"method": "google"}}

    def id_of(changed: dict) -> str:
        path = tmp_path / f"v{len(list(tmp_path.glob('v*.jsonl')))}.jsonl"
        path.write_text(json.dumps({**row, **changed}) + "\n")
        (only,), _, _ = _import(capsys, tmp_path, "ga4", path)
        return only["messageId"]

    assert id_of({"geo": {"city": "Paris"}, "event_date": "20261021"}) == event["messageId"]  # not identifying
    assert id_of({"event_bundle_sequence_id": "4"}) != event["messageId"]
    assert id_of({"event_timestamp": "1792486800000001"}) != event["messageId"]


def test_ga4_parquet_and_avro_exports_give_the_same_events_as_json_lines(capsys, tmp_path):
    lines = fixture_rows("ga4_events.jsonl")
    rows, untyped = typed_ga4_rows(lines)
    assert untyped == [14]  # the row whose event_timestamp is text: impossible in a typed export
    write_ga4_avro(rows, tmp_path / "events.avro")
    write_ga4_parquet(rows, tmp_path / "events.parquet")
    from_json, _, _ = _import(capsys, tmp_path, "ga4", FIXTURES / "ga4_events.jsonl")
    from_avro, avro_err, _ = _import(capsys, tmp_path / "a", "ga4", tmp_path / "events.avro")
    from_parquet, parquet_err, _ = _import(capsys, tmp_path / "p", "ga4", tmp_path / "events.parquet")
    assert from_avro == from_json and from_parquet == from_json
    for err in (avro_err, parquet_err):
        assert summary_counts(err) == {"read": 15, "sent": len(from_json), "deduplicated": 2, "rejected": 3, "outside": 0}


def test_an_export_in_several_files_is_imported_as_one(capsys, tmp_path):
    lines = fixture_rows("ga4_events.jsonl")
    first, second = tmp_path / "events-000000000000.jsonl", tmp_path / "events-000000000001.jsonl"
    first.write_text("\n".join(lines[8:]) + "\n")  # the later rows in the first file: sorted together
    second.write_text("\n".join(lines[:8]) + "\n")
    whole, _, _ = _import(capsys, tmp_path / "whole", "ga4", FIXTURES / "ga4_events.jsonl")
    out = tmp_path / "sharded.jsonl"
    status, err = run_import(capsys, "--format", "ga4", "--input", str(first), str(second), "--output", str(out),
                             "--work-dir", str(tmp_path / "w"), "--rejects", str(tmp_path / "r.jsonl"))
    assert status == 0, err
    assert read_jsonl(out) == whole
    assert summary_counts(err)["deduplicated"] == 2
    assert [(r["file"], r["row"]) for r in read_jsonl(tmp_path / "r.jsonl")] == [(str(first), n) for n in (3, 4, 5, 6)]


def test_a_damaged_parquet_file_is_an_input_error_not_a_traceback(capsys, tmp_path):
    rows, _ = typed_ga4_rows(fixture_rows("ga4_events.jsonl"))
    write_ga4_parquet(rows, tmp_path / "whole.parquet")
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes((tmp_path / "whole.parquet").read_bytes()[:-200])
    status, err = run_import(capsys, "--format", "ga4", "--input", str(damaged), "--output", str(tmp_path / "o.jsonl"),
                             "--work-dir", str(tmp_path / "w"))
    assert status == 2 and f"{damaged}: cannot be read as parquet" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


def test_ga4_refuses_csv_with_the_reason(capsys, tmp_path):
    source = tmp_path / "ga4.csv"
    source.write_text("event_name,event_timestamp\npage_view,1792486800000000\n")
    status, err = run_import(capsys, "--format", "ga4", "--input", str(source), "--output", str(tmp_path / "o.jsonl"))
    assert status == 2 and "BigQuery cannot export GA4's nested rows" in err


# -- Mixpanel --------------------------------------------------------------------------------------------
def test_mixpanel_raw_export_maps_and_is_deduplicated_by_insert_id(capsys, tmp_path):
    events, _ = _check_against_expected(capsys, tmp_path, "mixpanel", "mixpanel_export.jsonl", "mixpanel_expected.json")
    ids = [e["messageId"] for e in events]
    assert len(ids) == len(set(ids))
    # the $insert_id seen again one second later: the earliest copy is kept
    viewed = [e for e in events if e["messageId"] == "a1f0c1e2-0001"]
    assert [e["timestamp"] for e in viewed] == ["2026-10-20T09:00:30.000Z"]


def test_mixpanel_time_in_milliseconds(capsys, tmp_path):
    source = tmp_path / "ms.jsonl"
    with source.open("w") as out:
        for line in fixture_rows("mixpanel_export.jsonl")[:8]:
            doc = json.loads(line)
            doc["properties"]["time"] = doc["properties"]["time"] * 1000 + 250
            out.write(json.dumps(doc) + "\n")
    status, err = run_import(capsys, "--format", "mixpanel", "--input", str(source), "--output", str(tmp_path / "x.jsonl"),
                             "--work-dir", str(tmp_path / "w1"), "--rejects", str(tmp_path / "r1.jsonl"))
    assert status == 0 and summary_counts(err)["rejected"] == 8  # milliseconds read as seconds: refused, with a hint
    assert all("--time-in-ms" in r["detail"] for r in read_jsonl(tmp_path / "r1.jsonl"))
    events, _, _ = _import(capsys, tmp_path, "mixpanel", source, "--time-in-ms")
    assert events[0]["timestamp"] == "2026-10-20T09:00:00.250Z" and len(events) == 6


def test_a_mapping_file_maps_the_users_own_names_without_code(capsys, tmp_path):
    source = tmp_path / "mp.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in [
        {"event": "Purchase", "properties": {"time": 1792486800, "distinct_id": "hal", "$insert_id": "i-1", "amount": 12.5, "sku": "k"}},
        {"event": "Clicked Banner", "properties": {"time": 1792486801, "distinct_id": "hal", "$insert_id": "i-2"}},
        {"event": "$identify", "properties": {"time": 1792486802, "distinct_id": "hal", "$insert_id": "i-3"}},
    ]) + "\n")
    mapping = tmp_path / "mine.yaml"
    mapping.write_text("mixpanel:\n  other_events: reject\n  events:\n"
                       "    Purchase: {event: Order Completed, properties: {amount: revenue}}\n"
                       "    $identify: null\n")
    events, err, rejects = _import(capsys, tmp_path, "mixpanel", source, "--mapping", str(mapping))
    assert events == [{"type": "track", "event": "Order Completed", "messageId": "i-1", "userId": "hal",
                       "timestamp": "2026-10-20T09:00:00.000Z", "properties": {"sku": "k", "revenue": 12.5}}]
    assert [(r["row"], r["reason"]) for r in read_jsonl(rejects)] == [(2, "unmapped_event"), (3, "unmapped_event")]


def test_a_bad_mapping_file_is_refused_with_the_entry_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ga4:\n  events:\n    purchase: {evnt: Order Completed}\n")
    with pytest.raises(MappingError, match=r"ga4\.events\.purchase: unknown key\(s\) \['evnt'\]"):
        load_mapping(bad)
    bad.write_text("ga4:\n  events:\n    purchase: {type: screen}\n")
    with pytest.raises(MappingError, match=r"ga4\.events\.purchase\.type"):
        load_mapping(bad)
    assert load_mapping(None).for_format("ga4").rule("purchase").event == "Order Completed"


# -- Segment archives and CSV -----------------------------------------------------------------------------
def test_segment_archive_messages_keep_their_ids(capsys, tmp_path):
    events, _ = _check_against_expected(capsys, tmp_path, "segment", "segment_archive.jsonl", "segment_expected.json")
    assert all("receivedAt" not in e and "_metadata" not in e for e in events)


def test_flat_csv_rows(capsys, tmp_path):
    lines = fixture_rows("flat_events.csv")
    header = lines[0].split(",")
    row4 = dict(zip(header, lines[4].split(",")))
    derived = "csv-" + hashlib.blake2b(json.dumps(row4, sort_keys=True, separators=(",", ":")).encode(), digest_size=16).hexdigest()
    _check_against_expected(capsys, tmp_path, "csv", "flat_events.csv", "csv_expected.json", {"row 4": derived})


# -- every mapped event is one the worker takes -------------------------------------------------------------
@pytest.mark.parametrize("fmt, fixture", [("ga4", "ga4_events.jsonl"), ("mixpanel", "mixpanel_export.jsonl"),
                                          ("segment", "segment_archive.jsonl"), ("csv", "flat_events.csv")])
def test_every_mapped_fixture_event_passes_the_workers_decoder(capsys, tmp_path, fmt, fixture):
    out = tmp_path / "events.jsonl"
    status, err = run_import(capsys, "--format", fmt, "--input", str(FIXTURES / fixture), "--output", str(out),
                             "--work-dir", str(tmp_path / "w"))
    assert status == 0, err
    lines = out.read_bytes().splitlines()
    assert lines
    wall = int(time.time() * 1000)
    decoded = [decode_event(line, wall) for line in lines]  # raises InvalidEvent for a single bad one
    assert [(e.ts, e.message_id) for e in decoded] == sorted((e.ts, e.message_id) for e in decoded)


# -- rejects and the summary ----------------------------------------------------------------------------------
def test_the_rejects_file_has_one_reason_per_row_and_the_summary_counts_them(capsys, tmp_path):
    _events, err, rejects = _import(capsys, tmp_path, "mixpanel", FIXTURES / "mixpanel_export.jsonl")
    lines = read_jsonl(rejects)
    source = fixture_rows("mixpanel_export.jsonl")
    for line in lines:
        assert set(line) <= {"file", "row", "reason", "detail", "input"} and line["reason"] and line["detail"]
        assert line["file"] == str(FIXTURES / "mixpanel_export.jsonl")
        if line["reason"] != "undecodable":  # the row itself, to fix and import again
            assert line["input"] == json.loads(source[line["row"] - 1])
    assert len({line["row"] for line in lines}) == len(lines)
    reasons = re.search(r"rejected by reason: (.*) \(one line per row in (.*)\)", err)
    assert reasons and reasons.group(2) == str(rejects)
    counted = dict((part.rsplit(" ", 1)[0], int(part.rsplit(" ", 1)[1])) for part in reasons.group(1).split(", "))
    from collections import Counter

    assert counted == Counter(line["reason"] for line in lines)


@pytest.mark.parametrize("fmt, row, field", [
    ("ga4", {"event_name": "purchase", "user_id": "u-1"}, "event_timestamp is missing"),
    ("mixpanel", {"event": "Signed In", "properties": {"distinct_id": "u-1", "$insert_id": "i-1"}}, "properties.time is missing"),
])
def test_a_row_without_a_timestamp_is_rejected_naming_the_missing_field(capsys, tmp_path, fmt, row, field):
    source = tmp_path / "export.jsonl"
    source.write_text(json.dumps(row) + "\n")
    _events, _err, rejects = _import(capsys, tmp_path / "out", fmt, source)
    [line] = read_jsonl(rejects)
    assert line["reason"] == "bad_timestamp" and line["detail"].startswith(field) and "None" not in line["detail"]


# -- --since / --until ------------------------------------------------------------------------------------------
def test_since_and_until_select_rows_by_timestamp(capsys, tmp_path):
    everything, _, _ = _import(capsys, tmp_path / "all", "ga4", FIXTURES / "ga4_events.jsonl")
    since, until = "2026-10-20T09:01:30Z", "2026-10-20T09:05:00Z"  # a row at each boundary
    cut, err, rejects = _import(capsys, tmp_path / "cut", "ga4", FIXTURES / "ga4_events.jsonl", "--since", since, "--until", until)
    lo, hi = parse_timestamp(since), parse_timestamp(until)
    assert cut == [e for e in everything if lo <= parse_timestamp(e["timestamp"]) < hi]
    assert cut[0]["timestamp"] == "2026-10-20T09:01:30.000Z"  # since: included
    assert all(e["timestamp"] != "2026-10-20T09:05:00.000Z" for e in cut)  # until: left out
    counts = summary_counts(err)
    # rows 1-3 before, 9-16 at or after the end (row 14 has no readable timestamp: rejected)
    assert counts["outside"] == 3 + 7 and counts["rejected"] == 1 and counts["read"] == 16
    assert [r["reason"] for r in read_jsonl(rejects)] == ["bad_timestamp"]
    status, err = run_import(capsys, "--format", "ga4", "--input", str(FIXTURES / "ga4_events.jsonl"), "--output", str(tmp_path / "x"),
                             "--since", until, "--until", since)
    assert status == 2 and "--since must be before --until" in err


# -- order and the external sort --------------------------------------------------------------------------------
def test_the_output_is_in_timestamp_order_across_users_with_many_small_runs(capsys, tmp_path):
    rows = [json.loads(line) for line in fixture_rows("mixpanel_export.jsonl")[:8]]
    rng = random.Random(5)
    source = tmp_path / "shuffled.jsonl"
    with source.open("w") as out:
        for n in range(400):
            row = json.loads(json.dumps(rng.choice(rows)))
            row["properties"].update(time=1792486800 + rng.randint(0, 5000), distinct_id=f"u{rng.randint(1, 30)}", **{"$insert_id": f"id-{n}"})
            out.write(json.dumps(row) + "\n")
    events, err, _ = _import(capsys, tmp_path, "mixpanel", source, "--run-size", "7")
    keys = [(parse_timestamp(e["timestamp"]), e["messageId"]) for e in events]
    assert keys == sorted(keys) and summary_counts(err)["sent"] == 400 - summary_counts(err)["rejected"]


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.tuples(st.integers(0, 50), st.text("abc", min_size=1, max_size=3)), min_size=1, max_size=60),
       run_size=st.integers(1, 9), cut=st.integers(0, 60))
def test_sorted_runs_merge_in_order_and_resume_from_any_point(tmp_path_factory, data, run_size, cut):
    directory = tmp_path_factory.mktemp("runs")
    records = [[ts, f"{mid}{n}", "k", b"v", n] for n, (ts, mid) in enumerate(data)]  # unique ids, as after dedup
    key = lambda r: (r[0], r[1])  # noqa: E731
    runs = write_sorted_runs(iter(records), key, run_size, directory, "t")
    merged = list(merge_runs(runs, key))
    assert [r for r, _, _ in merged] == sorted(records, key=key)
    cut = min(cut, len(merged))
    offsets = [0] * len(runs)
    for _record, run, after in merged[:cut]:
        offsets[run] = after
    assert [r for r, _, _ in merge_runs(runs, key, offsets)] == [r for r, _, _ in merged[cut:]]


# -- the command as a user runs it ----------------------------------------------------------------------------------
def test_import_output_is_read_by_stream_app_replay(tmp_path):
    out, transitions = tmp_path / "events.jsonl", tmp_path / "transitions.jsonl"
    run = [sys.executable, "-m", "stream_app"]
    proc = subprocess.run([*run, "import", "--format", "ga4", "--input", str(FIXTURES / "ga4_events.jsonl"), "--output", str(out),
                           "--work-dir", str(tmp_path / "w")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "import: read 16 rows, wrote 12 events, deduplicated 2, rejected 4, outside --since/--until 0" in proc.stderr
    proc = subprocess.run([*run, "replay", "--input", str(out), "--output", str(transitions)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and "invalid lines" not in proc.stderr, proc.stderr
    rows = read_jsonl(transitions)
    ann = {(r["segment"], r["to"]) for r in rows if r["user_id"] == "u-ann"}
    assert {("high_intent", "high_intent"), ("lifecycle", "activated")} <= ann
