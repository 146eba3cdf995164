"""The decoded profiles a partition engine keeps across batches: the most recently used, bounded in
number and in size.

A decoded profile takes about nine times its encoded size (3.3 KB for 337 B at the median of the
demo's mix, measured with tracemalloc), so the bound on size is on the encoded bytes the engine has
just written: at most `ENCODED_BYTES_EACH` on average over the entries, and none above
`MAX_ENCODED_BYTES` (a heavy user's profile is decoded at each batch instead, as every profile was
before this cache). At the default 5,000 entries per partition that is 3 MB encoded, about 27 MB
decoded, whatever the users (docs/state.md, "Hot profiles in memory").
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

ENCODED_BYTES_EACH = 600
MAX_ENCODED_BYTES = 8 * 1024


class HotProfiles(OrderedDict):
    """user id -> (decoded profile, its rules' due times), least recently used first."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = max(0, most)
        self.byte_budget = self.most * ENCODED_BYTES_EACH
        self.sizes: dict[str, int] = {}
        self.bytes = 0  # encoded bytes of the entries

    def take(self, user_id: str) -> tuple[Any, Any] | None:
        """The entry, taken out (a batch puts it back only when it returns)."""
        entry = self.pop(user_id, None)
        if entry is not None:
            self.bytes -= self.sizes.pop(user_id)
        return entry

    def keep(self, user_id: str, profile: Any, dues: Any, encoded_bytes: int) -> None:
        """As just written, the most recently used; the least recently used beyond the bounds go."""
        if user_id in self:
            self.take(user_id)
        if not self.most or encoded_bytes > MAX_ENCODED_BYTES:
            return
        self[user_id] = (profile, dues)
        self.sizes[user_id] = encoded_bytes
        self.bytes += encoded_bytes
        while len(self) > self.most or self.bytes > self.byte_budget:
            gone, _ = self.popitem(last=False)
            self.bytes -= self.sizes.pop(gone)

    def clear(self) -> None:
        super().clear()
        self.sizes.clear()
        self.bytes = 0
