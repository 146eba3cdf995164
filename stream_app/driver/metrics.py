"""The driver's own metrics: commits, restores, assignment, lag. Labels are partitions and outcomes only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMMIT_SECONDS = Histogram(
    "stream_app_commit_duration_seconds",
    "One transaction commit: changelog records, flush, offsets, commit, local write",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMMITS = Counter("stream_app_commits_total", "Transactions, by outcome (committed, aborted)", ["outcome"])
RESTORED_RECORDS = Counter("stream_app_restored_records_total", "Changelog records read while restoring partitions")
RESTORE_REMAINING = Gauge("stream_app_restore_remaining_records", "Changelog records still to read by the restore under way (0 when none)")
RESTORED_PROFILES = Gauge("stream_app_restored_profiles", "Profiles held by the partitions restored at the last assignment")
ASSIGNED_PARTITIONS = Gauge("stream_app_assigned_input_partitions", "Input partitions this process owns")
INPUT_PARTITIONS = Gauge("stream_app_input_partitions", "Partitions of the input topic, as this process last saw them (at its last assignment)")
CONSUMER_LAG = Gauge("stream_app_consumer_lag", "Input messages not yet processed, by partition", ["partition"])
