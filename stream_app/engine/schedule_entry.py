"""A profile's schedule entry: what a partition's rebuild needs of it, stored beside the profile.

When a partition is assigned, its engine rebuilds the due schedule, the RFM index and the segment
population from every stored profile (`PartitionEngine.rebuild_schedule`). Decoding each profile and
computing every rule's next change costs about 20 us per profile; reading this entry instead costs a
small fraction of that. The engine writes one entry with each profile it writes (`BatchResult.entries`):

    [ENTRY_VERSION, fingerprint, due, rfm, members]

- `fingerprint`: the definitions the entry was computed under (every field of `CatalogConfig` but the
  RFM population, which neither a due time nor the RFM values read). An entry of other definitions is
  not used: that profile is decoded and computed, as before.
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
from typing import Any

import msgpack

from ..segments.config import CatalogConfig

ENTRY_VERSION = 1
HEADER = "schedule-entry"  # the changelog record header that carries a profile's entry

# fields of CatalogConfig a due time or RFM values never read: the population (scores, not windows);
# `model` and `custom` are named by `version` (a model's version, the definitions file's digest)
_NOT_FINGERPRINTED = frozenset({"rfm_population", "model", "custom"})
_FINGERPRINTS: dict[int, tuple[CatalogConfig, bytes]] = {}

Rfm = tuple[int, int, float, "str | None"]


def fingerprint(cfg: CatalogConfig) -> bytes:
    """8 bytes naming the definitions a due time and RFM values were computed under."""
    known = _FINGERPRINTS.get(id(cfg))
    if known is not None and known[0] is cfg:
        return known[1]
    text = repr([(f.name, getattr(cfg, f.name)) for f in fields(cfg) if f.name not in _NOT_FINGERPRINTED])
    value = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    if len(_FINGERPRINTS) >= 64:
        _FINGERPRINTS.clear()
    _FINGERPRINTS[id(cfg)] = (cfg, value)  # holds cfg, so its id is not reused while cached
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
