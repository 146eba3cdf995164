"""Soak: steady load against the real worker on a real broker for a long time, recording the worker's
RSS (from /proc), the consumer group's lag and the event-to-transition latency to a CSV, with a plot.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--warmup S] [--rate 200] [--users 20000]
                                        [--interval 10] [--csv soak.csv] [--png soak.png]

Traffic: `--rate` events/s with event time = now, from a fixed pool of `--users` users (page views,
product views, carts, checkouts, orders, sign-ins). Before the timed run, every user of the pool places
one order (`--no-prime` skips this), so the per-user state the worker keeps in memory (due schedule,
RFM index) has its full size from the start: without it, users keep entering the RFM index at their
first order for an hour (1 - e^(-0.03 t) of the pool after t minutes at the defaults), which is the
state filling up, not a leak. Latency = the wall time a read_committed consumer receives a transition
caused by an event minus the event's timestamp (it includes the 5 s lateness allowance and the
transaction commit interval). The warm-up lasts until RocksDB's shared cache has filled (`warmup_end`); then `--minutes`
of steady load are judged. RSS is flat when every sample after the warm-up is within 10% of the first
minute after it.
Exit status 0 when RSS is flat and the lag did not grow, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

from reliability_harness import Bench, Worker, group_lag

from stream_app.timeutil import format_timestamp, parse_timestamp

EVENTS = (  # (weight, type, name)
    (40, "track", "Product Viewed"),
    (15, "page", "Home"),
    (8, "page", "Pricing"),
    (10, "track", "Product Added"),
    (6, "track", "Checkout Started"),
    (5, "track", "Order Completed"),
    (8, "track", "Signed In"),
    (4, "track", "Product Removed"),
    (4, "track", "Product List Viewed"),
)


class Load(threading.Thread):
    def __init__(self, bench: Bench, rate: int, users: int, seed: int) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=bench.bootstrap, linger_ms=20, acks=1)
        self.topic = bench.settings.input_topic
        self.rate = rate
        self.users = users
        self.rng = random.Random(seed)
        self.sent = 0
        self.stopping = threading.Event()
        self.weights = [w for w, _, _ in EVENTS]

    def event(self, now: int, user_index: int | None = None, name: str | None = None) -> tuple[bytes, bytes]:
        user = f"soak-{self.rng.randrange(self.users) if user_index is None else user_index:06d}"
        if name is None:
            _, kind, name = self.rng.choices(EVENTS, self.weights)[0]
        else:
            kind = "track"
        self.sent += 1
        body: dict = {"type": kind, "userId": user, "messageId": f"m-{self.sent}", "timestamp": format_timestamp(now)}
        if kind == "track":
            body["event"] = name
            props: dict = {"product_id": f"sku-{self.rng.randrange(60):03d}"}
            if name == "Order Completed":
                props = {"order_id": f"o-{self.sent}", "revenue": round(self.rng.uniform(5, 300), 2)}
            body["properties"] = props
        else:
            body["name"] = name
            body["properties"] = {"path": "/" + name.lower()}
        return user.encode(), json.dumps(body).encode()

    def prime(self) -> int:
        """One order from every user of the pool, as fast as the producer goes."""
        now = int(time.time() * 1000)
        for index in range(self.users):
            key, value = self.event(now, index, "Order Completed")
            self.producer.send(self.topic, key=key, value=value)
        self.producer.flush()
        return self.users

    def run(self) -> None:
        tick = 0.05
        per_tick = self.rate * tick
        owed = 0.0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            owed += per_tick
            now = int(time.time() * 1000)
            while owed >= 1:
                key, value = self.event(now)
                self.producer.send(self.topic, key=key, value=value)
                owed -= 1
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))
        self.producer.flush()
        self.producer.close()


class Latency(threading.Thread):
    """Reads the transitions (read_committed) and keeps receive time minus event time of event-caused ones."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(bench.settings.transitions_topic, bootstrap_servers=bench.bootstrap, group_id=None,
                                      auto_offset_reset="earliest", isolation_level="read_committed")
        self.lock = threading.Lock()
        self.window: list[float] = []
        self.total = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            batch = self.consumer.poll(timeout_ms=500)
            received = time.time() * 1000
            with self.lock:
                for records in batch.values():
                    for message in records:
                        self.total += 1
                        row = json.loads(message.value)
                        if row["cause"]["type"] == "event":
                            self.window.append(received - parse_timestamp(row["at"]))
        self.consumer.close()

    def take(self) -> list[float]:
        with self.lock:
            taken, self.window = self.window, []
        return taken


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def deviation(rows: list[dict], column: str) -> tuple[float, float]:
    """(median of the first minute, largest relative deviation from it) of a column."""
    base = statistics.median(r[column] for r in rows if r["t_s"] < rows[0]["t_s"] + 60)
    return base, max(abs(r[column] - base) / base for r in rows)


MIN_WARMUP_S = 300.0
MAX_WARMUP_S = 1800.0
CACHE_FULL = 0.85  # of the budget
CACHE_STEADY_S = 300.0
CACHE_STEADY_MB = 2.0


def warmup_end(rows: list[dict], budget_mb: float) -> float | None:
    """When the worker is warm: at least 5 minutes in, and RocksDB's shared cache has stopped filling
    (at 85% of its budget, or grown less than 2 MiB over 5 minutes). The cache holds blocks as they are
    read, up to its budget (bounded by construction); until it is full, RSS grows with it, which is the
    warm-up, not a leak. None while the cache is still filling (at most `MAX_WARMUP_S`)."""
    for i, row in enumerate(rows):
        if row["t_s"] < MIN_WARMUP_S:
            continue
        if row["rocksdb_mb"] >= CACHE_FULL * budget_mb:
            return row["t_s"]
        earlier = [r for r in rows[:i] if r["t_s"] <= row["t_s"] - CACHE_STEADY_S]
        if earlier and row["rocksdb_mb"] - earlier[-1]["rocksdb_mb"] < CACHE_STEADY_MB:
            return row["t_s"]
        if row["t_s"] >= MAX_WARMUP_S:
            return row["t_s"]
    return None


def plot(rows: list[dict], png: Path, warmup_s: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(t, [r["rss_mb"] for r in rows], color="tab:blue", label="RSS")
    axes[0].plot(t, [r["rss_mb"] - r["rocksdb_mb"] for r in rows], color="tab:green", label="RSS without RocksDB's cache")
    axes[0].plot(t, [r["rocksdb_mb"] for r in rows], color="tab:grey", label="RocksDB's cache (budget-bounded)")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("worker memory (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [r["lag"] for r in rows], color="tab:orange")
    axes[1].set_ylabel("consumer lag (records)")
    axes[1].set_ylim(bottom=0)
    axes[2].plot(t, [r["lat_p50_ms"] / 1000 for r in rows], label="p50")
    axes[2].plot(t, [r["lat_p99_ms"] / 1000 for r in rows], label="p99")
    axes[2].set_ylabel("event → transition (s)")
    axes[2].set_ylim(bottom=0)
    axes[2].legend(loc="upper right")
    axes[2].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(warmup_s / 60, color="grey", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of steady load judged after the warm-up")
    parser.add_argument("--rate", type=int, default=200, help="events per second")
    parser.add_argument("--users", type=int, default=20000, help="size of the user pool")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of warm-up (default: until RocksDB's cache has filled, see `warmup_end`)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-prime", action="store_true", help="no first order from every pool user before the timed run")
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--segments", type=Path, default=None,
                        help="definitions file for the worker (STREAM_APP_SEGMENTS_FILE), e.g. benchmarks/soak-steady-state.yaml")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra worker environment")
    args = parser.parse_args()
    duration = args.minutes * 60

    bench = Bench("soak", partitions=args.partitions)
    csv_path = args.csv or bench.work / "soak.csv"
    png_path = args.png or bench.work / "soak.png"
    print(f"work folder {bench.work}; broker {bench.bootstrap}; {args.rate} ev/s from {args.users} users for {args.minutes} min",
          flush=True)
    extra = dict(item.split("=", 1) for item in args.env)
    if args.segments is not None:
        extra["STREAM_APP_SEGMENTS_FILE"] = str(args.segments.resolve())
    worker = Worker(bench, bench.work / "worker", **extra)
    load = Load(bench, args.rate, args.users, args.seed)
    latency = Latency(bench)
    rows: list[dict] = []
    try:
        # partitions assigned and ticking
        worker.wait_until(lambda: worker.metric("stream_app_clock_ticks_total") > 0, 90, "the worker to start")
        if not args.no_prime:
            primed = load.prime()
            worker.wait_until(lambda: worker.metric("stream_app_events_consumed_total") >= primed, 600,
                              f"the {primed} priming orders to be consumed")
            print(f"primed: one order from each of {primed} users consumed", flush=True)
        worker_budget_mb = worker.metric("stream_app_rocksdb_budget_bytes") / 2**20
        latency.start()
        load.start()
        started = time.monotonic()
        fields = ["t_s", "rss_mb", "rocksdb_mb", "lag", "produced", "transitions_read", "events_consumed", "lat_n", "lat_p50_ms",
                  "lat_p99_ms", "lat_max_ms"]
        with open(csv_path, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=fields)
            writer.writeheader()
            warm: float | None = args.warmup
            while warm is None or time.monotonic() - started < warm + duration:
                time.sleep(max(0.0, args.interval - (time.monotonic() - started) % args.interval))
                if not worker.alive():
                    print(f"the worker exited with {worker.proc.returncode}; see {worker.log_path}")
                    return 1
                window = latency.take()
                row = {"t_s": round(time.monotonic() - started, 1), "rss_mb": round(worker.rss_mb(), 1),
                       "rocksdb_mb": round(worker.metric("stream_app_rocksdb_cache_bytes") / 2**20, 1),
                       "lag": group_lag(bench.bootstrap, bench.settings.app_id, bench.settings.input_topic),
                       "produced": load.sent, "transitions_read": latency.total,
                       "events_consumed": int(worker.metric("stream_app_events_consumed_total")), "lat_n": len(window),
                       "lat_p50_ms": round(percentile(window, 0.5)) if window else float("nan"),
                       "lat_p99_ms": round(percentile(window, 0.99)) if window else float("nan"),
                       "lat_max_ms": round(max(window)) if window else float("nan")}
                if row["lag"] is None:
                    row["lag"] = float("nan")
                rows.append(row)
                writer.writerow(row)
                out.flush()
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                if warm is None:
                    warm = warmup_end(rows, worker_budget_mb)
                    if warm is not None:
                        print(f"warm-up over at {warm:.0f} s (RocksDB's cache {row['rocksdb_mb']:.1f} of "
                              f"{worker_budget_mb:.0f} MiB); {args.minutes:g} minutes of steady load follow", flush=True)
    finally:
        load.stopping.set()
        latency.stopping.set()
        code = worker.stop()
        bench.close()
        print(f"worker stopped with {code}; log {worker.log_path}")

    warmup = warm if warm is not None else float("inf")  # never warm: nothing to judge
    after = [r for r in rows if r["t_s"] >= warmup]
    if len(after) < 2:
        print("too short to judge (no samples after the warm-up)")
        return 1
    base, worst = deviation(after, "rss_mb")
    rss = [r["rss_mb"] for r in after]
    # RocksDB's shared cache fills up to its budget as the state is read (bounded by construction);
    # what must not grow is everything else
    for r in rows:
        r["rest_mb"] = r["rss_mb"] - r["rocksdb_mb"]
    rest_base, rest_worst = deviation(after, "rest_mb")
    last_minute = [r["rss_mb"] for r in after if r["t_s"] > rows[-1]["t_s"] - 60]
    lags = [r["lag"] for r in after if r["lag"] == r["lag"]]
    lat = [r for r in after if r["lat_n"]]
    p50 = statistics.median(r["lat_p50_ms"] for r in lat) if lat else float("nan")
    p99 = max(r["lat_p99_ms"] for r in lat) if lat else float("nan")
    flat = worst <= 0.10
    lag_ok = bool(lags) and statistics.median(lags[-max(1, len(lags) // 5):]) <= max(10 * args.rate, 2 * statistics.median(lags))
    title = (f"soak: {args.rate} ev/s, {args.users} users, {warmup / 60:.0f} min warm-up + {args.minutes:g} min; RSS {base:.0f} → {statistics.median(last_minute):.0f} MiB "
             f"(max dev {worst:.1%})")
    plot(rows, png_path, warmup, title)
    print(f"samples {len(rows)}; warm-up {warmup:.0f} s; events produced {load.sent}, consumed {rows[-1]['events_consumed']}; "
          f"transitions read {latency.total}")
    print(f"RSS after warm-up: first minute {base:.1f} MiB, last minute {statistics.median(last_minute):.1f} MiB, "
          f"min {min(rss):.1f}, max {max(rss):.1f}, largest deviation {worst:.1%} -> {'FLAT' if flat else 'NOT FLAT'} (limit 10%)")
    print(f"RSS without RocksDB's cache after warm-up: first minute {rest_base:.1f} MiB, largest deviation {rest_worst:.1%} -> "
          f"{'FLAT' if rest_worst <= 0.10 else 'NOT FLAT'}; RocksDB's cache: last {rows[-1]['rocksdb_mb']:.1f} MiB, "
          f"max {max(r['rocksdb_mb'] for r in rows):.1f} MiB")
    print(f"lag after warm-up: median {statistics.median(lags) if lags else float('nan'):.0f}, max {max(lags) if lags else float('nan'):.0f} records")
    print(f"event -> transition latency: median of per-sample p50 {p50:.0f} ms, worst per-sample p99 {p99:.0f} ms")
    print(f"csv {csv_path}; plot {png_path}")
    return 0 if flat and lag_ok else 1


if __name__ == "__main__":
    sys.exit(main())
