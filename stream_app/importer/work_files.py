"""An import's identity and its folder of work files (sorted runs, the prepared manifest, the checkpoint).

The identity is a digest of the input file's bytes and of every option that changes what is sent: the
same import run again (after a kill, or by mistake) has the same identity, so it finds its work files,
its checkpoint and its Kafka transactional id; a different file or different options start afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

HASH_BLOCK = 1 << 20


def file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def import_id(input_digest: Any, options: dict[str, Any]) -> str:
    """32 hex digits naming this import: the inputs' digests and the options, canonical JSON."""
    canonical = json.dumps({"input": input_digest, **options}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def write_json_atomically(path: Path, doc: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path``, flush it to disk, then rename it over ``path``: a reader
    (or a resumed import) sees the old document or the new one, never a part of one."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None
