"""`stream-app import` that stops still at one point, so that a test can kill it there with SIGKILL.

    python -m tests.import_with_pause STAGE:BATCH MARKER_FILE -- import ARGS...

STAGE is where in a batch's cycle (kafka_sender.py): `produced` (the batch's records sent inside the open
transaction, not committed), `committed` (committed, the local checkpoint file not yet written) or
`checkpointed`. At that point the process writes MARKER_FILE and sleeps. The pause is passed as an
argument to `run_import`: the command (`stream-app import`) never passes one, so no setting of a
deployment can trigger it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from stream_app.cli.main import build_parser
from stream_app.importer.command import options_from_args, run_import
from stream_app.importer.mapping_table import load_mapping


def main(argv: list[str]) -> int:
    where, marker, separator, *command = argv
    assert separator == "--" and command[:1] == ["import"], "usage: STAGE:BATCH MARKER -- import ARGS"
    stage, batch = where.split(":")

    def pause(at_stage: str, at_batch: int) -> None:
        if at_stage == stage and at_batch == int(batch):
            time.sleep(1.0)  # librdkafka sends what is queued (linger.ms 20) from its own threads
            Path(marker).write_text(f"{stage} {batch}\n")
            time.sleep(3600)  # the test kills the process here

    options = options_from_args(build_parser().parse_args(command))
    return run_import(options, load_mapping(options.mapping), pause=pause)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
