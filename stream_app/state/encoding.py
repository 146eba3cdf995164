"""Versioned msgpack encoding of a :class:`Profile`.

Version 1 is a positional array: [1, t, first_seen, ...]. A newer worker reads an older profile by
filling fields that the older version did not have with their defaults; a profile written by a newer
version than this worker knows is refused loudly rather than misread.
"""

from __future__ import annotations

from dataclasses import fields

import msgpack

from .profile import Profile

ENCODING_VERSION = 1
_FIELDS = [f.name for f in fields(Profile)]
# Fields in the order of each version's array. Appending is the only allowed change.
_LAYOUT = {1: _FIELDS}


class UnknownProfileVersion(Exception):
    pass


def encode_profile(profile: Profile) -> bytes:
    row = [ENCODING_VERSION]
    row.extend(getattr(profile, name) for name in _LAYOUT[ENCODING_VERSION])
    return msgpack.packb(row, use_bin_type=True)


def decode_profile(data: bytes) -> Profile:
    row = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    version = row[0]
    layout = _LAYOUT.get(version)
    if layout is None:
        raise UnknownProfileVersion(
            f"profile encoding version {version} is newer than this worker understands ({ENCODING_VERSION}); upgrade the worker"
        )
    profile = Profile()
    for name, value in zip(layout, row[1:]):
        setattr(profile, name, value)
    return profile
