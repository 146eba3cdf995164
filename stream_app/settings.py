"""One typed settings object, filled from the environment (see README "Configuration")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .kafka_security import KafkaSecurity, SecurityConfigError, security_from_env

DEFAULT_LOCAL_BOOTSTRAP = "127.0.0.1:9092"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None


def _optional_int(name: str) -> int | None:
    return _int(name, 0) if os.environ.get(name) not in (None, "") else None


def _switch(name: str, default: bool) -> bool:
    raw = _env(name, "on" if default else "off").strip().lower()
    if raw in ("on", "true", "yes", "1"):
        return True
    if raw in ("off", "false", "no", "0"):
        return False
    raise SystemExit(f"{name}={raw!r} is neither on nor off (on, off, true, false, 1, 0)")


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _security() -> KafkaSecurity:
    try:
        return security_from_env()
    except SecurityConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = field(default_factory=lambda: _env("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_LOCAL_BOOTSTRAP))
    app_id: str = field(default_factory=lambda: _env("STREAM_APP_ID", "stream-app"))
    input_topic: str = field(default_factory=lambda: _env("STREAM_APP_INPUT_TOPIC", "clickstream.events"))
    transitions_topic: str = field(default_factory=lambda: _env("STREAM_APP_TRANSITIONS_TOPIC", "segments.transitions"))
    memberships_topic: str = field(default_factory=lambda: _env("STREAM_APP_MEMBERSHIPS_TOPIC", "segments.memberships"))
    dlq_topic: str = field(default_factory=lambda: _env("STREAM_APP_DLQ_TOPIC", "clickstream.dlq"))
    partitions: int = field(default_factory=lambda: _int("STREAM_APP_PARTITIONS", 6))
    # replicas of the topics the app creates; -1: the cluster's default.replication.factor (KIP-464)
    replication_factor: int = field(default_factory=lambda: _int("STREAM_APP_REPLICATION_FACTOR", -1))
    data_dir: Path = field(default_factory=lambda: Path(_env("STREAM_APP_DATA_DIR", "var/worker")))
    web_host: str = field(default_factory=lambda: _env("STREAM_APP_WEB_HOST", "127.0.0.1"))
    web_port: int = field(default_factory=lambda: _int("STREAM_APP_WEB_PORT", 6066))
    segments_file: Path | None = field(default_factory=lambda: _path("STREAM_APP_SEGMENTS_FILE"))
    model_file: Path | None = field(default_factory=lambda: _path("STREAM_APP_MODEL_FILE"))
    reload_interval_ms: int = field(default_factory=lambda: _int("STREAM_APP_RELOAD_INTERVAL_MS", 2000))
    # override the definitions file's time settings when set
    lateness_ms: int | None = field(default_factory=lambda: _optional_int("STREAM_APP_LATENESS_MS"))
    historical_after_ms: int | None = field(default_factory=lambda: _optional_int("STREAM_APP_HISTORICAL_AFTER_MS"))
    backfill_age_ms: int | None = field(default_factory=lambda: _optional_int("STREAM_APP_BACKFILL_AGE_MS"))
    backfill_drained_after_ms: int | None = field(default_factory=lambda: _optional_int("STREAM_APP_BACKFILL_DRAINED_AFTER_MS"))
    batch_max: int = field(default_factory=lambda: _int("STREAM_APP_BATCH_MAX", 2000))
    # a transaction commits as soon as nothing more is buffered, else this long after its first record
    commit_interval_ms: int = field(default_factory=lambda: _int("STREAM_APP_COMMIT_INTERVAL_MS", 100))
    # how often idle partitions' clocks follow the wall clock and due timers fire
    clock_interval_ms: int = field(default_factory=lambda: _int("STREAM_APP_CLOCK_INTERVAL_MS", 500))
    # the process slot's stable identity: group.instance.id and transactional.id (default: host + data folder)
    instance_id: str | None = field(default_factory=lambda: os.environ.get("STREAM_APP_INSTANCE_ID") or None)
    max_event_bytes: int = field(default_factory=lambda: _int("STREAM_APP_MAX_EVENT_BYTES", 32 * 1024))
    stop_grace_s: int = field(default_factory=lambda: _int("STREAM_APP_STOP_GRACE_S", 20))
    session_timeout_s: int = field(default_factory=lambda: _int("STREAM_APP_SESSION_TIMEOUT_S", 10))
    log_level: str = field(default_factory=lambda: _env("STREAM_APP_LOG_LEVEL", "info"))
    # decoded profiles kept in memory across batches, per partition: an LRU written through (0: none);
    # engine/partition.py, DEFAULT_HOT_PROFILES
    hot_profiles: int = field(default_factory=lambda: _int("STREAM_APP_HOT_PROFILES", 5_000))
    # keep standby copies of every input partition this process does not own (driver/standby.py)
    standby: bool = field(default_factory=lambda: _switch("STREAM_APP_STANDBY", False))
    # RocksDB memory of the whole worker, all profile-table partitions together (driver/store.py)
    rocksdb_memory_mb: int = field(default_factory=lambda: _int("STREAM_APP_ROCKSDB_MEMORY_MB", 64))
    # give free C-heap memory back to the OS every N seconds (0: never); worker/allocator.py
    malloc_trim_s: int = field(default_factory=lambda: _int("STREAM_APP_MALLOC_TRIM_S", 60))
    # a breakdown of the worker's memory in its log every N seconds (0: off); worker/memory_report.py
    memory_report_s: int = field(default_factory=lambda: _int("STREAM_APP_MEMORY_REPORT_S", 0))
    # KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_* (stream_app/kafka_security.py); its repr hides secrets
    kafka_security: KafkaSecurity = field(default_factory=_security)

    @property
    def changelog_topic(self) -> str:
        """The profiles' compacted changelog (the name the Faust-based worker used, so it carries over)."""
        return f"{self.app_id}-profiles-changelog"

    @property
    def slot_id(self) -> str:
        """`instance_id`, or this host's name and a hash of the absolute data folder: stable across
        restarts, and distinct for two processes on one host (each needs its own data folder)."""
        if self.instance_id:
            return self.instance_id
        import hashlib
        import socket

        folder = hashlib.blake2b(str(self.data_dir.resolve()).encode(), digest_size=4).hexdigest()
        return f"{socket.gethostname()}-{folder}"
