"""Versioned msgpack encoding of a :class:`Profile`.

A profile is a positional array `[version, field, field, ...]` whose field order is the literal layout
of that version in `LAYOUTS`; names are not stored (they would double the size of a profile). The
rules for changing it, and for rollbacks and rolling restarts, are in docs/state.md, "Encoding and
versions". In short:

- A released layout is never edited: profiles in RocksDB and in the changelog were written with it.
  Adding, removing, renaming or reordering a field of `Profile` is a new version: its literal layout
  in `LAYOUTS`, a migration from the version before in `MIGRATIONS`, its golden bytes in
  tests/test_state_encoding.py (which fails until the newest layout equals `Profile`'s fields).
- Reading: a row of an older version is read in that version's layout and migrated step by step up to
  the newest one. A row shorter than its layout (written by an older worker that knew only the first
  fields of that layout) reads with the missing fields at their defaults. A row of a version newer
  than this worker reads is refused (`UnknownProfileVersion`, "upgrade the worker"), never misread.
- Writing: `WRITE_VERSION`, which may lag `READ_VERSION` by design: a new layout ships first in a
  release that reads it but still writes the old one (through `DOWNGRADES`), and a later release
  switches `WRITE_VERSION`, so no worker ever meets a profile it cannot read during a rolling restart.
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Any, Callable

import msgpack

from .profile import Profile

Values = dict[str, Any]

# version -> field names of that version's array, in order (after the version number). Literal tuples:
# never derive a layout from the dataclass, and never edit a released one.
LAYOUTS: dict[int, tuple[str, ...]] = {
    1: (
        # the first release wrote only these 19 (rows that short are still read, see above)
        "t", "first_seen", "last_event", "last_activity", "activated_at", "days", "orders", "refunds",
        "last_order", "intent", "cart", "cart_opened", "cart_last", "invite_last", "nps_high_last", "seen",
        "pending", "members", "extra",
        # then appended, before layouts were frozen: the purchase summary (BG/NBD, Gamma-Gamma) ...
        "orders_total", "purchase_first_day", "purchase_last_day", "purchase_days", "repeat_spend",
        # ... engagement, promotions, power users, usage ...
        "eng_score", "eng_ref", "promo_clicks", "features", "usage",
        # ... churn risk, trial activation, onboarding
        "days_first", "engaged_until", "features_ever", "trial_started", "trial_ended", "onboarding_step",
        "onboarding_step_at",
    ),
}

# version -> function(values of that version) -> values of version + 1. `values` maps the version's
# field names to their values; a field that a short row did not have is absent (not None), so a
# migration uses `values.get(name, default)` and keeps absent fields absent where it can. A field absent
# after the last migration takes `Profile`'s default. None yet: version 1 is the only version.
MIGRATIONS: dict[int, Callable[[Values], Values]] = {}

# version + 1 -> function(values of version + 1) -> values of version: needed only for the versions
# between WRITE_VERSION and READ_VERSION, in the first release of a two-step layout change.
DOWNGRADES: dict[int, Callable[[Values], Values]] = {}

READ_VERSION = max(LAYOUTS)  # newest version this worker reads; `Profile` has exactly its fields
WRITE_VERSION = 1  # the version this worker writes; raise it only a release after READ_VERSION
ENCODING_VERSION = WRITE_VERSION  # the older name of WRITE_VERSION, kept for importers


class UnknownProfileVersion(Exception):
    pass


class ProfileCodec:
    """Encoder and decoder for one set of layout tables; everything per-version is precomputed here,
    so the hot path does no reflection. The module's tables make the codec behind `encode_profile` and
    `decode_profile`; tests build others with synthetic versions."""

    def __init__(
        self,
        layouts: dict[int, tuple[str, ...]],
        migrations: dict[int, Callable[[Values], Values]],
        write_version: int,
        downgrades: dict[int, Callable[[Values], Values]] | None = None,
        profile_cls: type = Profile,
    ) -> None:
        downgrades = downgrades or {}
        self.read_version = max(layouts)
        if sorted(layouts) != list(range(1, self.read_version + 1)):
            raise ValueError(f"profile layout versions must be 1, 2, ... without gaps, got {sorted(layouts)}")
        missing = [v for v in range(1, self.read_version) if v not in migrations]
        if missing:
            raise ValueError(f"no migration from profile version(s) {missing} to the next version")
        if not 1 <= write_version <= self.read_version:
            raise ValueError(f"write version {write_version} is not a known profile version (1..{self.read_version})")
        missing = [v for v in range(write_version + 1, self.read_version + 1) if v not in downgrades]
        if missing:
            raise ValueError(
                f"writing profile version {write_version} while reading {self.read_version} needs a downgrade "
                f"from version(s) {missing} to the one before"
            )
        self.layouts = {v: tuple(layout) for v, layout in layouts.items()}
        self.migrations = migrations
        self.downgrades = downgrades
        self.write_version = write_version
        self.profile_cls = profile_cls
        newest = self.layouts[self.read_version]
        # the newest layout is the dataclass's field order (tests/test_state_encoding.py checks it): build
        # the profile positionally; a shorter row fills the first fields, the rest keep their defaults
        self.positional = newest == tuple(f.name for f in fields(profile_cls))
        getter = attrgetter(*newest)  # one C call for all fields; a tuple unless there is only one
        self.get_newest = getter if len(newest) > 1 else (lambda profile: (getter(profile),))
        self.newest = newest
        self.write_layout = self.layouts[write_version]

    # -- writing ----------------------------------------------------------------------------------
    def encode(self, profile: Any) -> bytes:
        if self.write_version == self.read_version:
            return msgpack.packb([self.write_version, *self.get_newest(profile)], use_bin_type=True)
        values = dict(zip(self.newest, self.get_newest(profile)))
        for version in range(self.read_version, self.write_version, -1):
            values = self.downgrades[version](values)
            self._check(values, version - 1, "the downgrade to", complete=True)
        return msgpack.packb([self.write_version, *(values[name] for name in self.write_layout)], use_bin_type=True)

    # -- reading ----------------------------------------------------------------------------------
    def decode(self, data: bytes) -> Any:
        row = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
        version = row[0] if isinstance(row, list) and row else None
        layout = self.layouts.get(version) if type(version) is int else None
        if layout is None:
            if type(version) is int and version > self.read_version:
                raise UnknownProfileVersion(
                    f"profile encoding version {version} is newer than this worker reads ({self.read_version}); "
                    "upgrade the worker (docs/state.md, Encoding and versions)"
                )
            raise UnknownProfileVersion(f"not a profile: version {version!r} is not a profile encoding version")
        if len(row) - 1 > len(layout):
            raise UnknownProfileVersion(
                f"profile of version {version} has {len(row) - 1} fields, its layout only {len(layout)}: written by "
                "a worker whose layout of that version differs (a layout changed without a new version)"
            )
        if version == self.read_version:
            if self.positional:
                return self.profile_cls(*row[1:])
            return self.profile_cls(**dict(zip(layout, row[1:])))
        values = dict(zip(layout, row[1:]))
        for step in range(version, self.read_version):
            values = self.migrations[step](values)
            self._check(values, step + 1, "the migration to")
        return self.profile_cls(**values)

    def _check(self, values: Values, version: int, what: str, complete: bool = False) -> None:
        layout = self.layouts[version]
        unknown = set(values) - set(layout)
        if unknown:
            raise ValueError(f"{what} profile version {version} gave fields not in its layout: {sorted(unknown)}")
        absent = [name for name in layout if name not in values] if complete else []
        if absent:
            raise ValueError(f"{what} profile version {version} left out fields of its layout: {absent}")


_CODEC = ProfileCodec(LAYOUTS, MIGRATIONS, WRITE_VERSION, DOWNGRADES, Profile)


def encode_profile(profile: Profile) -> bytes:
    return _CODEC.encode(profile)


def decode_profile(data: bytes) -> Profile:
    return _CODEC.decode(data)
