"""The driver's own metrics: commits, restores, assignment, lag. Labels are partitions and outcomes only."""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram

COMMIT_SECONDS = Histogram(
    "stream_app_commit_duration_seconds",
    "One transaction commit: changelog records, flush, offsets, commit, local write",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMMITS = Counter("stream_app_commits_total", "Transactions, by outcome (committed, aborted)", ["outcome"])
RESTORED_RECORDS = Counter("stream_app_restored_records_total", "Changelog records read while restoring partitions")
# multiprocess_mode: how `stream-app worker --processes N` adds up the processes' values (worker/supervisor.py)
RESTORE_REMAINING = Gauge("stream_app_restore_remaining_records", "Changelog records still to read by the restore under way (0 when none)",
                          multiprocess_mode="livesum")
RESTORED_PROFILES = Gauge("stream_app_restored_profiles", "Profiles held by the partitions restored at the last assignment",
                          multiprocess_mode="livesum")
ASSIGNED_PARTITIONS = Gauge("stream_app_assigned_input_partitions", "Input partitions this process owns", multiprocess_mode="livesum")
INPUT_PARTITIONS = Gauge("stream_app_input_partitions", "Partitions of the input topic, as this process last saw them (at its last assignment)",
                         multiprocess_mode="livemax")
STANDBY_PARTITIONS = Gauge("stream_app_standby_partitions", "Partitions this process keeps a standby copy of (STREAM_APP_STANDBY)",
                           multiprocess_mode="livesum")
STANDBY_LAG = Gauge("stream_app_standby_lag_records", "Changelog records the standby copies have not applied yet (as of the "
                    "reader's last fetch)", multiprocess_mode="livesum")
STANDBY_RECORDS = Counter("stream_app_standby_records_total", "Changelog records applied to standby copies")
GROUP_REJOINS = Counter("stream_app_group_rejoins_total", "Times this process left the consumer group and joined again because "
                      "input partitions belonged to no member of the stable group (driver/group_watch.py)")
CONSUMER_LAG = Gauge("stream_app_consumer_lag", "Input messages not yet processed, by partition", ["partition"], multiprocess_mode="livesum")


def forget_partition(partition: int) -> None:
    """A partition this process no longer owns: its lag leaves the output. In multiprocess mode
    (`--processes N`) a label cannot be removed from the shared files, so its value becomes 0."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        CONSUMER_LAG.labels(str(partition)).set(0)
        return
    try:
        CONSUMER_LAG.remove(str(partition))
    except KeyError:
        pass
