"""A profile's schedule entry: what a partition's rebuild needs of it, stored beside the profile.

When a partition is assigned, its engine rebuilds the due schedule, the RFM index and the segment
population from every stored profile (`PartitionEngine.rebuild_schedule`). Decoding each profile and
computing every rule's next change costs about 20 us per profile; reading this entry instead costs a
small fraction of that. The engine writes one entry with each profile it writes (`BatchResult.entries`):

    [ENTRY_VERSION, fingerprint, due, rfm, members]

- `fingerprint`: the definitions the entry was computed under (every field of `CatalogConfig` but the
  RFM population, which neither a due time nor the RFM values read), and the code that computed it (a
  digest of the rule, state and scoring modules' source). An entry of other definitions or of another
  release is not used: that profile is decoded and computed, as before.
- `due`: the user's next due time (`timeline.next_due`), or None.
- `rfm`: `(last order, F, M, RFM member)` for the RFM index, or None.
- `members`: the user's memberships, for the population gauges.

The entry is derived state, never a source of truth: anything that cannot be read as an entry of the
current definitions (missing, empty, another version, another fingerprint) is computed from the profile.
The worker stores entries in the partition's local RocksDB (a column family of their own) and carries
them to other processes in a header of the profile's changelog record (docs/state.md, "Schedule entries").
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from pathlib import Path
from typing import Any

import msgpack

from ..segments.config import CatalogConfig

ENTRY_VERSION = 1
HEADER = "schedule-entry"  # the changelog record header that carries a profile's entry

# fields of CatalogConfig a due time or RFM values never read: the population (scores, not windows);
# `model` and `custom` are named by `version` (a model's version, the definitions file's digest)
_NOT_FINGERPRINTED = frozenset({"rfm_population", "model", "custom"})
_FINGERPRINTED = tuple(f.name for f in fields(CatalogConfig) if f.name not in _NOT_FINGERPRINTED)
# the code that computes what an entry holds: the rules, the profile and its encoding, the timeline and
# the predictive scoring. Another release (or any edit of these files) computes every entry once again
_CODE = ("segments", "state", "predict", "engine/timeline.py", "engine/schedule_entry.py")
Rfm = tuple[int, int, float, "str | None"]  # (last order, F, M, RFM member)
_LAST: list[Any] = [None, b""]  # the last definitions asked for and their fingerprint (one: no population kept)


def _code_digest() -> bytes:
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.blake2b(digest_size=8)
    for name in _CODE:
        for path in sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name]:
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.digest()


CODE_DIGEST = _code_digest()


def fingerprint(cfg: CatalogConfig) -> bytes:
    """8 bytes naming what a due time and RFM values were computed under: the definitions (every field
    but the population) and the code that computes them (`CODE_DIGEST`)."""
    last = _LAST[0]
    if last is cfg or (last is not None and all(getattr(last, name) is getattr(cfg, name) for name in _FINGERPRINTED)):
        return _LAST[1]
    text = repr([(name, getattr(cfg, name)) for name in _FINGERPRINTED])
    value = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=CODE_DIGEST).digest()
    _LAST[:] = [cfg, value]
    return value


def encode_entry(definitions: bytes, due: int | None, rfm: Rfm | None, members: dict[str, str]) -> bytes:
    return msgpack.packb([ENTRY_VERSION, definitions, due, rfm, members], use_bin_type=True)


def decode_entry(data: bytes | None, definitions: bytes) -> tuple[int | None, Rfm | None, dict[str, str]] | None:
    """(due, rfm, members), or None when `data` is not an entry of these definitions (compute it)."""
    if not data:
        return None
    try:
        row: Any = msgpack.unpackb(data, raw=False, use_list=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        return None
    if type(row) is not tuple or len(row) != 5 or row[0] != ENTRY_VERSION or row[1] != definitions:
        return None
    return row[2], row[3], row[4]
