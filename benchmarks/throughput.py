"""Throughput, latency, memory and state size of the worker against raw consumption, textbook Faust and
Quix Streams, on the real local broker, in one run (issue #3).

    .venv/bin/python benchmarks/throughput.py --preset smoke|small|default|large [--systems a,b,c,d,d2,b2,dx2,d2x2]
                                              [--scaling [--scaling-rounds R]] [--out DIR]
    (also: stream-app bench ...)

1. A seeded backfill from the demo generator (its persona mix) is produced once, as msgpack, to one
   input topic: event times over 10 days ending 70 days ago, so that every time-driven change (cart
   abandonment and expiry, intent window, engaged window, 60-day churn) is due before the run starts
   and all systems decide every timer the same way, whatever the wall clock.
2. Each system, one after another, reads that topic with its own consumer group / app id:
   (a) raw aiokafka getmany + msgpack decode, no processing (benchmarks/peers/raw_limit.py);
   (b) this project: `python -m stream_app worker`, every segment of the default catalog, exactly once;
   (c) textbook Faust (benchmarks/peers/textbook_faust.py); (d) Quix Streams (benchmarks/peers/quix_app.py);
   (d2) Quix Streams with processing_guarantee="exactly-once";
   (b2) our worker with `--processes 2`; (dx2) and (d2x2): (d) and (d2) as two processes in one group.
   Our worker's ratio per process count is taken against the faster of (d) and (d2) (one process) or of
   (dx2) and (d2x2) (two).
   Throughput = input offsets committed between the first and the last committed offset / that time;
   "done" = every input offset committed and every transition readable (read_committed).
3. Latency: the system then gets live traffic at half its measured throughput (new users' `Signed In`,
   each carrying `properties.produced_at`); latency = wall time the transition became readable minus
   the event's produce time. Our worker holds events for its 5 s lateness allowance by design, so it is
   also measured with STREAM_APP_LATENESS_MS=0 (row "b0").
4. The systems must agree: counts of transitions per (segment, from, to) for cart_abandoner,
   high_intent and lifecycle over the backfill users; any difference fails the run (exit code 2).
`--scaling` adds our throughput with 10k / 100k / 1M tracked users (scaled by the preset) and a PNG.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_app.broker.local_kafka import LocalKafka, free_port  # noqa: E402
from stream_app.demo.generator import as_wire, generate  # noqa: E402
from stream_app.timeutil import DAY_MS, format_timestamp, parse_timestamp  # noqa: E402
from reliability_harness import arrived  # noqa: E402

PEERS = REPO / "benchmarks" / "peers"
COMPARED = ("cart_abandoner", "high_intent", "lifecycle")
PARTITIONS = 6
PRESETS = {  # users (the generator makes about 11.4 events per user), latency phase seconds, scaling sizes
    "smoke": dict(users=1_000, latency_s=3, quiet_s=7, timer_interval=1.0, scaling=(1_000, 2_000, 5_000), scaling_active=500),
    "small": dict(users=10_000, latency_s=8, scaling=(2_000, 10_000, 50_000), scaling_active=2_000),
    "default": dict(users=100_000, latency_s=15, scaling=(10_000, 100_000, 1_000_000), scaling_active=20_000),
    "large": dict(users=400_000, latency_s=20, scaling=(10_000, 100_000, 1_000_000), scaling_active=40_000),
}
NAMES = {"a": "raw aiokafka getmany + msgpack (limit)", "b": "stream-app worker (this project)",
         "b0": "stream-app worker, allowance 0 (latency only)", "c": "textbook Faust", "d": "Quix Streams",
         "d2": "Quix Streams, exactly-once", "b2": "stream-app worker --processes 2",
         "dx2": "Quix Streams, 2 processes", "d2x2": "Quix Streams exactly-once, 2 processes"}
PROCESSES = {"b2": 2, "dx2": 2, "d2x2": 2}  # engine processes of a system (else 1)
# what each of our systems is compared with: the faster Quix Streams at the same process count
QUIX_PEERS = {"b": ("d", "d2"), "b2": ("dx2", "d2x2")}


def log(*args: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


# -- Kafka helpers ---------------------------------------------------------------------------------

def create_topics(bootstrap: str, names: list[str], partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names if n not in existing]
    if new:
        for future in admin.create_topics(new).values():
            try:
                future.result()
            except Exception as exc:  # already exists
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise


def producer(bootstrap: str, **extra: Any) -> Producer:
    # murmur2_random = the Java client's partitioner, as Faust, aiokafka and kafka-python use
    return Producer({"bootstrap.servers": bootstrap, "log_level": 0, "partitioner": "murmur2_random", "linger.ms": 5,
                     "enable.idempotence": True,  # the input's order survives retries
                     "queue.buffering.max.messages": 1_000_000, **extra})


def produce_backfill(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    prod = producer(bootstrap, **{"linger.ms": 50})
    for n, event in enumerate(events):
        wire = as_wire(event)
        while True:
            try:
                prod.produce(topic, key=wire["userId"].encode(), value=msgpack.packb(wire))
                break
            except BufferError:
                prod.poll(0.1)
        if n % 10_000 == 0:
            prod.poll(0)
    prod.flush(120)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "log_level": 0, "group.id": "bench-offsets", "enable.auto.commit": False})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        consumer.close()


class CommitWatch:
    """Polls a consumer group's committed offsets on the input topic."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "log_level": 0, "group.id": group, "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def committed(self) -> int:
        try:
            return sum(max(tp.offset, 0) for tp in self.consumer.committed(self.tps, timeout=5))
        except Exception:
            return -1

    def close(self) -> None:
        self.consumer.close()


class TransitionReader(threading.Thread):
    """Reads a transitions topic with read_committed from the beginning; records when each became readable."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "log_level": 0, "group.id": f"bench-reader-{topic}-{time.time()}",
                                  "enable.auto.commit": False, "isolation.level": "read_committed",
                                  # the broker holds a read_committed fetch for its whole wait when only
                                  # the stable offset moves: the default 500 ms would be measured
                                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5})
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        self.records: list[tuple[float, dict[str, Any]]] = []
        self.last_arrival = 0.0
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.is_set():
            batch = arrived(self.consumer, 10_000, 0.2)
            now = time.time()
            rows = [(now, json.loads(m.value())) for m in batch if m.error() is None and m.value()]
            if rows:
                with self.lock:
                    self.records.extend(rows)
                    self.last_arrival = now
        self.consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


class RssWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopping = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                proc = psutil.Process(self.pid)
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.2)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group we started (start_new_session), SIGKILL after 60 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


# -- systems -----------------------------------------------------------------------------------------

@dataclass
class Run:
    key: str
    events: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    done_seconds: float = 0.0
    rss_peak: int = 0
    latency_rate: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_seen: int = 0
    latency_sent: int = 0
    state_disk_bytes: int = 0
    state_encoded_mean: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    transitions_total: int = 0
    log: str = ""


@dataclass
class Bench:
    bootstrap: str
    work: Path
    input_topic: str
    tag: str
    expected_total: int = 0
    quiet_s: float = 10.0  # "done" = every input offset committed and no new transition for this long
    timer_interval: float = 5.0  # the textbook Faust peer's app.timer interval

    def system_env(self, key: str) -> tuple[list[str], dict[str, str], str, str, Path]:
        """(command, env, group id, transitions topic, state dir) of a system."""
        app_id = f"bench-{key}-{self.tag}"
        transitions = f"{app_id}.transitions"
        data = self.work / f"state-{key}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if key in ("b", "b0", "b2"):
            if key != "b2":  # b0 runs on b's state
                app_id = f"bench-b-{self.tag}"
                transitions = f"{app_id}.transitions"
                data = self.work / "state-b"
            env.update(KAFKA_BOOTSTRAP_SERVERS=self.bootstrap, STREAM_APP_ID=app_id, STREAM_APP_INPUT_TOPIC=self.input_topic,
                       STREAM_APP_TRANSITIONS_TOPIC=transitions, STREAM_APP_MEMBERSHIPS_TOPIC=f"{app_id}.memberships",
                       STREAM_APP_DLQ_TOPIC=f"{app_id}.dlq", STREAM_APP_DATA_DIR=str(data), STREAM_APP_WEB_PORT=str(free_port()),
                       STREAM_APP_PARTITIONS=str(PARTITIONS), STREAM_APP_LOG_LEVEL="warning",
                       # the peers have no backfill rule: like them, treat the 70-day-old input as live
                       # (decided on the live clock), so every system decides every timer the same way
                       STREAM_APP_BACKFILL_AGE_MS=str(200 * DAY_MS))
            if key == "b0":
                env["STREAM_APP_LATENESS_MS"] = "0"
            return [sys.executable, "-m", "stream_app", "worker", "--processes", str(PROCESSES.get(key, 1))], env, app_id, transitions, data
        env.update(BENCH_BOOTSTRAP=self.bootstrap, BENCH_APP_ID=app_id, BENCH_INPUT=self.input_topic, BENCH_TRANSITIONS=transitions,
                   BENCH_PARTITIONS=str(PARTITIONS), BENCH_DATA_DIR=str(data), BENCH_WEB_PORT=str(free_port()),
                   BENCH_BACKFILL_END=json.dumps(end_offsets(self.bootstrap, self.input_topic)))
        if key == "c":
            env["BENCH_TIMER_INTERVAL"] = str(self.timer_interval)
            return [sys.executable, str(PEERS / "textbook_faust.py"), "worker", "-l", "warn"], env, app_id, transitions, data
        if key in ("d2", "d2x2"):
            env["BENCH_PROCESSING_GUARANTEE"] = "exactly-once"
        return [sys.executable, str(PEERS / "quix_app.py")], env, app_id, transitions, data

    def run_limit(self) -> Run:
        run = Run("a")
        proc = subprocess.Popen([sys.executable, str(PEERS / "raw_limit.py"), self.bootstrap, self.input_topic, str(self.expected_total), str(PARTITIONS)],
                                stdout=subprocess.PIPE, text=True)
        rss = RssWatch(proc.pid)
        rss.start()
        out, _ = proc.communicate(timeout=3600)
        rss.stopping.set()
        result = json.loads(out.strip().splitlines()[-1])
        run.events, run.seconds, run.rate, run.done_seconds, run.rss_peak = result["events"], result["seconds"], result["rate"], result["seconds"], rss.peak
        return run

    def run_system(self, key: str, latency_s: float, timeout_s: float = 7200, stall_s: float = 180) -> Run:
        run = Run(key)
        quiet_s = self.quiet_s
        cmd, env, group, transitions, data = self.system_env(key)
        create_topics(self.bootstrap, [transitions] + ([f"{group}-timers"] if key == "c" else []))
        reader = TransitionReader(self.bootstrap, transitions)
        reader.start()
        logfile = self.work / f"{key}.log"
        run.log = str(logfile)
        copies = 1 if key.startswith("b") else PROCESSES.get(key, 1)  # our worker runs its processes itself
        procs = [subprocess.Popen(cmd, env=dict(env, BENCH_DATA_DIR=str(data / f"process-{i}"), BENCH_WEB_PORT=str(free_port())) if copies > 1 else env,
                                  cwd=REPO, stdout=open(logfile, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
                 for i in range(copies)]
        rsses = [RssWatch(proc.pid) for proc in procs]
        for rss in rsses:
            rss.start()
        watch = CommitWatch(self.bootstrap, group, self.input_topic)
        total = sum(end_offsets(self.bootstrap, self.input_topic).values())
        started = time.time()
        try:
            first_t = first_c = None
            done_input_t = None
            last_c, last_progress = 0, time.time()
            while True:
                if any(proc.poll() is not None for proc in procs):
                    raise RuntimeError(f"system {key} exited with {[p.returncode for p in procs]}; see {logfile}")
                if time.time() - started > timeout_s:
                    raise RuntimeError(f"system {key} did not finish in {timeout_s} s; see {logfile}")
                committed = watch.committed()
                now = time.time()
                if committed > 0 and first_t is None:
                    first_t, first_c = now, committed
                if committed >= 0 and committed != last_c:
                    last_c, last_progress = committed, now
                if done_input_t is None and now - last_progress > stall_s:
                    raise RuntimeError(f"system {key} made no progress for {stall_s} s; see {logfile}")
                if committed >= total and done_input_t is None:
                    done_input_t = now
                    log(f"{key}: every input offset committed")
                if done_input_t is not None and now - max(done_input_t, reader.last_arrival) > quiet_s:
                    break
                time.sleep(0.1)
            if key != "b0":
                run.events = total - (first_c or 0)
                run.seconds = max(done_input_t - first_t, 1e-9) if first_t else 0.0
                run.rate = run.events / run.seconds if run.seconds else 0.0
                run.done_seconds = max(done_input_t, reader.last_arrival) - first_t if first_t else 0.0
                log(f"{key}: {run.events} events in {run.seconds:.1f} s = {run.rate:,.0f} events/s; done (last transition) after {run.done_seconds:.1f} s")
            if latency_s > 0:
                self.latency_phase(run, reader, latency_s)
        finally:
            for proc in procs:
                stop_process(proc)
            for rss in rsses:
                rss.stopping.set()
            watch.close()
            reader.stop()
        run.rss_peak = sum(rss.peak for rss in rsses)  # each peak counted: an upper bound of the processes' sum
        with reader.lock:
            records = [r for _, r in reader.records]
        run.transitions_total = len(records)
        run.counts = count_transitions(records)
        run.state_disk_bytes = dir_bytes(data)
        run.state_encoded_mean = encoded_state_mean(key, data)
        return run

    def latency_phase(self, run: Run, reader: TransitionReader, seconds: float) -> None:
        rate = max(20.0, run.latency_rate or 0.5 * run.rate)
        run.latency_rate = rate
        prod = producer(self.bootstrap, **{"linger.ms": 0})
        # warm-up: the system must be running and assigned before the clock starts
        warm = {f"lat-warm-{run.key}-{self.tag}-{i}-1" for i in range(24)}
        for message_id in warm:
            user = message_id[:-2]
            body = {"type": "track", "event": "Signed In", "userId": user, "messageId": message_id,
                    "timestamp": format_timestamp(int(time.time() * 1000))}
            prod.produce(self.input_topic, key=user.encode(), value=msgpack.packb(body))
        prod.flush(30)
        deadline = time.time() + 180
        while time.time() < deadline:
            with reader.lock:
                seen = {(r.get("cause") or {}).get("message_id") for _, r in reader.records[-5000:]}
            if warm <= seen:
                break
            time.sleep(0.2)
        time.sleep(1)
        sent: dict[str, float] = {}
        start = time.time()
        n = 0
        log(f"{run.key}: latency phase, {rate:,.0f} events/s for {seconds} s")
        while time.time() - start < seconds:
            due = int((time.time() - start) * rate)
            while n < due:
                now_ms = int(time.time() * 1000)
                user = f"lat-{run.key}-{self.tag}-{n}"
                message_id = f"{user}-1"
                body = {"type": "track", "event": "Signed In", "userId": user, "messageId": message_id,
                        "timestamp": format_timestamp(now_ms), "properties": {"produced_at": now_ms}}
                prod.produce(self.input_topic, key=user.encode(), value=msgpack.packb(body))
                sent[message_id] = now_ms / 1000
                n += 1
            prod.poll(0)
            time.sleep(0.005)
        prod.flush(30)
        run.latency_sent = n
        deadline = time.time() + 30
        latencies: list[float] = []
        while time.time() < deadline:
            with reader.lock:
                latencies = [(arrival - sent[r["cause"]["message_id"]]) * 1000 for arrival, r in reader.records
                             if r.get("segment") == "lifecycle" and (r.get("cause") or {}).get("message_id") in sent]
            if len(latencies) >= n:
                break
            time.sleep(0.5)
        run.latency_seen = len(latencies)
        if latencies:
            latencies.sort()
            run.latency_p50_ms = statistics.median(latencies)
            run.latency_p99_ms = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        log(f"{run.key}: latency p50 {run.latency_p50_ms} ms p99 {run.latency_p99_ms} ms ({run.latency_seen} of {n})")


def count_transitions(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: collections.Counter = collections.Counter()
    for r in records:
        if r.get("segment") in COMPARED and not str(r.get("user_id", "")).startswith("lat-"):
            counts[f"{r['segment']}: {r.get('from')} -> {r.get('to')}"] += 1
    return dict(sorted(counts.items()))


def encoded_state_mean(key: str, data: Path) -> float | None:
    """Mean stored value size per user in the system's RocksDB (our profile: its msgpack encoding)."""
    try:
        from rocksdict import AccessType, Rdict
    except ImportError:
        return None
    sizes: list[int] = []
    dbs = [p for p in data.rglob("*") if p.is_dir() and (p / "CURRENT").exists()]
    if key == "d":
        return None  # Quix keeps column families and prefixed keys; the on-disk size is reported instead
    for db_path in dbs:
        try:
            db = Rdict(str(db_path), access_type=AccessType.read_only())
        except Exception:
            continue
        try:
            for k, v in db.items():
                kb = k if isinstance(k, bytes) else str(k).encode()
                if kb.startswith(b"\x00") or b"partition-clock" in kb:
                    continue
                sizes.append(len(v) if isinstance(v, (bytes, bytearray)) else len(str(v)))
        finally:
            db.close()
    return statistics.fmean(sizes) if sizes else None


def compare(runs: dict[str, Run]) -> bool:
    keys = [k for k in ("b", "b2", "c", "d", "d2", "dx2", "d2x2") if k in runs]
    rows = sorted(set().union(*(runs[k].counts for k in keys))) if keys else []
    width = max([len(r) for r in rows] + [20])
    print(f"\n{'transitions (backfill users)':<{width}} " + " ".join(f"{k:>9}" for k in keys))
    agree = True
    for row in rows:
        values = [runs[k].counts.get(row, 0) for k in keys]
        mark = "" if len(set(values)) == 1 else "   <-- DIFFERENT"
        agree &= not mark
        print(f"{row:<{width}} " + " ".join(f"{v:>9,}" for v in values) + mark)
    totals = [sum(runs[k].counts.values()) for k in keys]
    print(f"{'total':<{width}} " + " ".join(f"{v:>9,}" for v in totals))
    if keys and (not totals or min(totals) == 0):
        agree = False
    return agree


def report(runs: dict[str, Run], users: int) -> str:
    a = runs.get("a")
    lines = ["| system | events/s | ratio to (a) | ratio to the faster Quix, same processes | done after (s) | p50 / p99 latency at half load (ms) | peak RSS (MiB) | state on disk / user (B) | encoded state / user (B) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in ("a", "b", "b0", "b2", "c", "d", "d2", "dx2", "d2x2"):
        run = runs.get(key)
        if run is None:
            continue
        rate = f"{run.rate:,.0f}" if key != "b0" else "(same worker)"
        ratio = f"{run.rate / a.rate:.3f}" if a and a.rate and key not in ("a", "b0") else ("1" if key == "a" else "")
        lat = (f"{run.latency_p50_ms:,.0f} / {run.latency_p99_ms:,.0f} at {run.latency_rate:,.0f}/s ({run.latency_seen}/{run.latency_sent})"
               if run.latency_p50_ms is not None else "")
        disk = f"{run.state_disk_bytes / users:,.0f}" if run.state_disk_bytes and key != "b0" else ""
        enc = f"{run.state_encoded_mean:,.0f}" if run.state_encoded_mean and key != "b0" else ""
        done = f"{run.done_seconds:.1f}" if key != "b0" else ""
        quix = [runs[k].rate for k in QUIX_PEERS.get(key, ()) if k in runs and runs[k].rate]
        to_quix = f"**{run.rate / max(quix):.2f}**" if quix else ""
        lines.append(f"| ({key}) {NAMES[key]} | {rate} | {ratio} | {to_quix} | {done} | {lat} | {run.rss_peak / 2**20:,.0f} | {disk} | {enc} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} CPUs ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"


def scaling(bench_factory: Any, sizes: tuple[int, ...], active: int, seed: int, out: Path,
            rounds: int = 1) -> list[dict[str, Any]]:
    """Our throughput on the same demo-mix workload (``active`` users' events over ``rounds`` consecutive
    10-day periods, each period its own seed) after ``tracked`` users are already in state (one event
    each, preloaded, outside the measured window). More rounds make a longer measured window with the
    same users, so that the window can last a minute without more active users than tracked ones. A
    session begun at a period's end runs on for up to about 20 minutes into the next period, so a few
    users' events arrive out of order at the boundaries (counted as late, applied all the same)."""
    results = []
    now = int(time.time() * 1000)
    for tracked in sizes:
        bench: Bench = bench_factory(f"scale{tracked}")
        bench.work.mkdir(parents=True, exist_ok=True)  # its own state directory per point
        create_topics(bench.bootstrap, [bench.input_topic])
        preload_at = now - 100 * DAY_MS
        events = [(period, event) for period in range(rounds)
                  for event in generate(seed + period, active, now - (90 - 10 * period) * DAY_MS, 10 * DAY_MS)]
        stride = max(1, tracked // active)
        prod = producer(bench.bootstrap, **{"linger.ms": 50})
        for n in range(tracked):
            user = f"user-{n:07d}"
            body = {"type": "track", "event": "Application Opened", "userId": user, "messageId": f"{user}-pre",
                    "timestamp": format_timestamp(preload_at + n % 86_400_000)}
            while True:
                try:
                    prod.produce(bench.input_topic, key=user.encode(), value=msgpack.packb(body))
                    break
                except BufferError:
                    prod.poll(0.1)
        prod.flush(120)
        preload_total = tracked
        for period, event in events:
            wire = as_wire(event)
            index = int(wire["userId"].split("-")[1]) * stride
            wire["userId"] = f"user-{index:07d}"
            wire["messageId"] = f"p{period}-{wire['messageId']}"  # each period's ids its own (no duplicates)
            while True:
                try:
                    prod.produce(bench.input_topic, key=wire["userId"].encode(), value=msgpack.packb(wire))
                    break
                except BufferError:
                    prod.poll(0.1)
        prod.flush(120)
        total = preload_total + len(events)
        cmd, env, group, transitions, data = bench.system_env("b")
        create_topics(bench.bootstrap, [transitions])
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(bench.work / f"scale-{tracked}.log", "ab"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        watch = CommitWatch(bench.bootstrap, group, bench.input_topic)
        t0 = c0 = None
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited during scaling; see {bench.work}")
                committed = watch.committed()
                now_t = time.time()
                if t0 is None and committed >= preload_total:
                    t0, c0 = now_t, committed
                if committed >= total:
                    t1 = now_t
                    break
                time.sleep(0.1)
        finally:
            stop_process(proc)
            watch.close()
        rate = (total - c0) / max(t1 - t0, 1e-9)
        log(f"scaling: {tracked:,} tracked users: {total - c0:,} events in {t1 - t0:.1f} s = {rate:,.0f} events/s")
        results.append({"tracked_users": tracked, "events": total - c0, "seconds": t1 - t0, "rate": rate})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["tracked_users"] for r in results], [r["rate"] for r in results], marker="o")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("tracked users (profiles in state)")
        ax.set_ylabel("events/s")
        ax.set_title("stream-app worker throughput vs tracked users")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "scaling.png", dpi=120)
    except Exception as exc:  # the chart is a nicety; the numbers are in the JSON
        log(f"no chart: {exc}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--users", type=int, help="override the preset's user count")
    parser.add_argument("--systems", default="a,b,c,d,d2,b2,dx2,d2x2",
                        help="comma separated subset of a,b,c,d,d2,b2,dx2,d2x2 (b2, dx2, d2x2: two processes each)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--scaling", action="store_true", help="also our throughput at 3 tracked-user counts, with a PNG")
    parser.add_argument("--scaling-active", type=int, help="users whose demo-mix events are measured at each scaling point")
    parser.add_argument("--scaling-rounds", type=int, default=1, choices=range(1, 10), metavar="1..9",
                        help="consecutive 10-day periods of the active users' events measured at each scaling point "
                             "(a longer window with the same users; the periods run from 90 days ago, so at most 9)")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (state, logs)")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    users = args.users or preset["users"]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stream-app-bench-"))
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        # a system's two processes start together: with the broker's usual 3 s initial rebalance delay they
        # join the group's first generation, so no partition moves mid-run (the Quix peer keeps its timers'
        # heap in process memory and never rebuilds it)
        broker = LocalKafka(work / "kafka", port=free_port(), controller_port=free_port(),
                            overrides={"group.initial.rebalance.delay.ms": "3000"})
        log("starting the local broker")
        broker.start()
        bootstrap = broker.bootstrap
    tag = f"{int(time.time())}{random.randint(0, 999):03d}"
    status = 0
    try:
        input_topic = f"bench-in-{tag}"
        create_topics(bootstrap, [input_topic])
        now = int(time.time() * 1000)
        end = now - 70 * DAY_MS
        log(f"generating {users:,} users (seed {args.seed})")
        events = generate(args.seed, users, end - 10 * DAY_MS, 10 * DAY_MS)
        log(f"producing {len(events):,} msgpack events to {input_topic}")
        produce_backfill(bootstrap, input_topic, events)
        bench = Bench(bootstrap, work, input_topic, tag, expected_total=len(events), quiet_s=preset.get("quiet_s", 10.0),
                      timer_interval=preset.get("timer_interval", 5.0))
        del events
        runs: dict[str, Run] = {}
        latency_s = 0 if args.no_latency else preset["latency_s"]
        for key in systems:
            log(f"--- ({key}) {NAMES[key]}")
            if key == "a":
                bench.expected_total = sum(end_offsets(bootstrap, input_topic).values())
                runs["a"] = bench.run_limit()
                log(f"a: {runs['a'].events} events in {runs['a'].seconds:.1f} s = {runs['a'].rate:,.0f} events/s")
                continue
            runs[key] = bench.run_system(key, latency_s)
            if key == "b" and latency_s:
                b0 = Run("b0", latency_rate=0.5 * runs["b"].rate)
                log("--- (b0) the worker again with STREAM_APP_LATENESS_MS=0, for latency only")
                runs["b0"] = run_b0(bench, b0, latency_s)
        agree = compare(runs)
        table = report(runs, users)
        print()
        print(table)
        result: dict[str, Any] = {"preset": args.preset, "users": users, "events": bench.expected_total, "seed": args.seed,
                                  "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
                                  "runs": {k: vars(v) for k, v in runs.items()}, "agree": agree, "table": table}
        if args.scaling:
            log("--- scaling")
            result["scaling"] = scaling(lambda name: Bench(bootstrap, work / name, f"bench-{name}-{tag}", f"{name}-{tag}"),
                                        preset["scaling"], args.scaling_active or preset["scaling_active"], args.seed, args.out,
                                        args.scaling_rounds)
        (args.out / f"{args.preset}.json").write_text(json.dumps(result, indent=2, default=str))
        log(f"results in {args.out / (args.preset + '.json')}")
        if not agree:
            print("\nFAIL: the systems do not produce the same transitions (see the table above); a fast wrong answer does not count",
                  file=sys.stderr)
            status = 2
    finally:
        if broker is not None:
            broker.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return status


def run_b0(bench: Bench, b0: Run, latency_s: float) -> Run:
    """Restart our worker with a 0 ms lateness allowance on the same state and measure latency only."""
    cmd, env, group, transitions, data = bench.system_env("b0")
    reader = TransitionReader(bench.bootstrap, transitions)
    reader.start()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(bench.work / "b0.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    rss = RssWatch(proc.pid)
    rss.start()
    watch = CommitWatch(bench.bootstrap, group, bench.input_topic)
    try:
        total = sum(end_offsets(bench.bootstrap, bench.input_topic).values())
        deadline = time.time() + 300
        while watch.committed() < total and time.time() < deadline:  # catch up with the other systems' live traffic
            time.sleep(0.2)
        time.sleep(2)
        bench.latency_phase(b0, reader, latency_s)
    finally:
        stop_process(proc)
        rss.stopping.set()
        watch.close()
        reader.stop()
    b0.rss_peak = rss.peak
    return b0


if __name__ == "__main__":
    raise SystemExit(main())
