"""The rejects file: one JSON line per input row that could not be mapped, with one reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from .segment_events import Rejected

MAX_ROW_CHARS = 16_384  # a reject line carries the row itself, cut to this many characters


class RejectsFile:
    """`{"file": ..., "row": N, "reason": ..., "detail": ..., "input": <the row>}`; N counts the file's rows
    from 1 (blank lines of a JSON-lines file and a CSV's header are not rows). Rewritten from the start
    by each preparation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = open(path, "w", encoding="utf-8")

    def write(self, path: Path, row_number: int, rejected: Rejected, row: Any) -> None:
        text = json.dumps(row, ensure_ascii=False, default=str) if isinstance(row, dict) else None
        if text is not None and len(text) > MAX_ROW_CHARS:
            text = json.dumps(text[:MAX_ROW_CHARS] + "…", ensure_ascii=False)
        line = {"file": str(path), "row": row_number, "reason": rejected.reason, "detail": rejected.detail}
        encoded = json.dumps(line, ensure_ascii=False)
        if text is not None:
            encoded = encoded[:-1] + f', "input": {text}}}'
        self._handle.write(encoded + "\n")

    def close(self) -> None:
        self._handle.close()
