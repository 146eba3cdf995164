import msgpack
import pytest

from stream_app.state.encoding import ENCODING_VERSION, UnknownProfileVersion, decode_profile, encode_profile
from stream_app.state.profile import Profile


def test_round_trip_keeps_every_field():
    profile = Profile(t=5, first_seen=1, last_event=5, last_activity=5, activated_at=2, days={20000: 5},
                      orders=[[2, 9.5, 1]], intent=[[3, 0.5]], cart={"p": 2}, cart_opened=3, cart_last=4,
                      seen={123: 5}, pending=[[9, "m", "track", "X", {}]], members={"lifecycle": "activated"})
    assert decode_profile(encode_profile(profile)) == profile


def test_an_older_shorter_layout_reads_with_defaults_for_new_fields():
    row = msgpack.unpackb(encode_profile(Profile(t=7, members={"high_intent": "high_intent"})), strict_map_key=False)
    older = msgpack.packb(row[:5])  # as written by a version that knew only the first fields
    profile = decode_profile(older)
    assert profile.t == 7 and profile.members == {} and profile.cart == {}


def test_a_newer_version_is_refused_with_a_clear_message():
    row = msgpack.unpackb(encode_profile(Profile()), strict_map_key=False)
    row[0] = ENCODING_VERSION + 1
    with pytest.raises(UnknownProfileVersion, match="upgrade the worker"):
        decode_profile(msgpack.packb(row))


def test_an_empty_profile_is_small():
    from dataclasses import fields

    # about one byte per field: empty containers, None and 0 pack in a single byte each
    assert len(encode_profile(Profile())) <= len(fields(Profile)) + 4
