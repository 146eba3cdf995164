"""kill -9 at random moments, round after round, each round's whole output compared by content with the
replay of its input (issue #15; docs/reliability.md, "kill -9 at random moments").

    .venv/bin/python benchmarks/kill_rounds.py [--rounds 50] [--kills 2] [--users 300] [--rate 300] [--seed 1]

A round: fresh topics (3 partitions), a seeded clickstream (about 11 events per user, 4 to 1 days old,
plus three malformed records) paced into the input topic; one worker, kept running as a supervisor
would; `--kills` kill -9s at moments drawn uniformly over the time the input takes to arrive (two can
land close together: the second then hits the restart, its restore or its first batch). Then the round
waits until the group has committed every input offset, stops the worker and compares every transition
decided by T field by field, the memberships, the dead letters and the committed offsets with
`stream-app replay` (tests/output_check.py). A round that differs is reported and counted; the script
exits with status 1 if any did. The broker is a private local one unless KAFKA_BOOTSTRAP_SERVERS is set.
Results: benchmarks/results/kill_rounds.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.reliability_harness import broker_unless_given  # noqa: E402
from tests.fault_harness import Pacer, Scenario, Supervised, consumed, ticking  # noqa: E402
from tests.helpers import Names, wait_for  # noqa: E402


def run_round(bootstrap: str, seed: int, work: Path, users: int = 300, rate: int = 300, kills: int = 2) -> dict[str, Any]:
    """One round; raises AssertionError when the output differs from the replay's."""
    rng = random.Random(seed)
    names = Names(bootstrap, partitions=3)
    names.create_topics()
    scenario = Scenario(seed=seed, users=users)
    messages = scenario.messages()
    arrival_s = len(messages) / rate
    moments = sorted(rng.uniform(0.2, arrival_s) for _ in range(kills))
    worker = Supervised(names, work / f"round-{seed}")
    pacer = Pacer(bootstrap, names.input, messages, rate=rate)
    killed_at: list[dict[str, float]] = []
    started = time.monotonic()
    try:
        wait_for(lambda: ticking(worker.poll().worker), 90, "the worker to run")
        pacer.start()
        started = time.monotonic()
        for moment in moments:
            time.sleep(max(0.0, moment - (time.monotonic() - started)))
            worker.poll()
            killed_at.append({"s": round(time.monotonic() - started, 2), "sent": pacer.sent,
                              "consumed_by_this_process": consumed(worker.worker)})
            worker.worker.kill9()
            worker.poll()  # started again at once, as a supervisor would
        pacer.join(300)
        assert pacer.error is None and pacer.sent == len(messages), pacer.error
        compared = scenario.finish_and_compare(names, worker)
    finally:
        worker.stop() if not worker.stopped else None
    unexpected = [r for r in worker.restarts if not r.startswith("exit -9")]
    return {"seed": seed, "events": len(messages), "kills": killed_at, "restarts": len(worker.restarts),
            "other_restarts": unexpected, "transitions_compared": compared["compared"],
            "memberships_compared": compared["memberships"], "dead_letters": compared["dead_letters"],
            "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--kills", type=int, default=2, help="kill -9s per round")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--rate", type=int, default=300, help="input events per second")
    parser.add_argument("--seed", type=int, default=1, help="the first round's seed; round n uses seed + n")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "kill_rounds.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stream-app-kill-rounds-"))
    bootstrap, broker = broker_unless_given(work)
    results: list[dict[str, Any]] = []
    try:
        for n in range(args.rounds):
            seed = args.seed + n
            try:
                result = run_round(bootstrap, seed, work, args.users, args.rate, args.kills)
                result["ok"] = True
            except AssertionError as exc:
                result = {"seed": seed, "ok": False, "error": str(exc)[:2000]}
            results.append(result)
            status = "same as the replay" if result["ok"] else f"DIFFERS: {result['error'][:300]}"
            print(f"round {n + 1}/{args.rounds} (seed {seed}): {status}; "
                  f"kills at {[k['s'] for k in result.get('kills', [])]} s; restarts {result.get('restarts')}; "
                  f"{result.get('transitions_compared')} transitions compared", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    failed = [r for r in results if not r["ok"]]
    kills = sum(len(r.get("kills", [])) for r in results)
    other = sum(len(r.get("other_restarts", [])) for r in results)
    compared = sum(r.get("transitions_compared", 0) for r in results)
    summary = {"rounds": len(results), "failed": len(failed), "kills": kills, "restarts_not_from_kills": other,
               "transitions_compared": compared, "args": vars(args) | {"output": str(args.output)}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"summary": summary, "rounds": results}, indent=1) + "\n")
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
