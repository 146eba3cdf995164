"""The profile encoding: literal layouts per version, migrations, golden bytes (docs/state.md, "Encoding
and versions")."""

from dataclasses import MISSING, field, fields, make_dataclass

import msgpack
import pytest

from stream_app.state.encoding import (
    DOWNGRADES,
    ENCODING_VERSION,
    LAYOUTS,
    MIGRATIONS,
    READ_VERSION,
    WRITE_VERSION,
    ProfileCodec,
    UnknownProfileVersion,
    decode_profile,
    encode_profile,
)
from stream_app.state.profile import Profile


def golden_profile() -> Profile:
    """Every field set to a value other than its default (checked below). When a field is added, give it
    one here too; keep the values of the older fields, so older golden bytes stay comparable."""
    return Profile(
        t=1764000000000, first_seen=1761000000000, last_event=1763990000000, last_activity=1763980000000,
        activated_at=1761100000000, days={20416: 1763980000000, 20415: 1763900000000},
        orders=[[1762000000000, 49.9, 1], [1762900000000, 20, 0]], refunds=[[1762100000000, 10.5]],
        last_order=1762900000000, intent=[[1763000000000, 0.5]], cart={"sku-é": 2, "sku-2": 1},
        cart_opened=1763500000000, cart_last=1763600000000, invite_last=1762500000000,
        nps_high_last=1762600000000, seen={12345678901234567890: 1763990000000, 7: 1763980000000},
        pending=[[1764000500000, "m-1", "track", "Order Completed", {"revenue": 49.9}]],
        members={"lifecycle": "activated", "rfm": "champions"}, extra={"cl": {"f1": 3}, "pc": [20400, 0.25]},
        orders_total=3, purchase_first_day=20300, purchase_last_day=20390, purchase_days=2, repeat_spend=59.8,
        eng_score=3.25, eng_ref=1763900000000, promo_clicks=[1763000000000, 1763100000000],
        features={"export": [1763100000000]}, usage={"seats": [1763200000000, 8, 10]},
        days_first={20416: 1763900000000}, engaged_until=1763950000000, features_ever=["export", "share"],
        trial_started=1761000000000, trial_ended=1762200000000, onboarding_step=3,
        onboarding_step_at=1761200000000,
    )


# version -> the exact bytes of golden_profile() in that version, as written by the release that wrote
# it. Never edit an entry; a new version adds one (and its entry in GOLDEN_READS).
GOLDEN_HEX = {
    1: (  # 507 bytes: version 1 with all 36 fields, as written since it reached 36 and the layouts were fixed
        "dc002501cf0000019ab697e800cf0000019a03c78a00cf0000019ab5ff5180cf0000019ab566bb00cf0000019a09bd6b"
        "0082cd4fc0cf0000019ab566bb00cd4fbfcf0000019ab0a207009293cf0000019a3f625400cb4048f333333333330193"
        "cf0000019a75073d0014009192cf0000019a45583500cb4025000000000000cf0000019a75073d009192cf0000019a7a"
        "fd1e00cb3fe000000000000082a6736b752dc3a902a5736b752d3201cf0000019a98ca8300cf0000019a9ec06400cf00"
        "00019a5d2fb900cf0000019a63259a0082cfab54a98ceb1f0ad2cf0000019ab5ff518007cf0000019ab566bb009195cf"
        "0000019ab69f8920a36d2d31a5747261636baf4f7264657220436f6d706c6574656481a7726576656e7565cb4048f333"
        "3333333382a96c6966656379636c65a9616374697661746564a372666da96368616d70696f6e7382a2636c81a2663103"
        "a2706392cd4fb0cb3fd000000000000003cd4f4ccd4fa602cb404de66666666666cb400a000000000000cf0000019ab0"
        "a2070092cf0000019a7afd1e00cf0000019a80f2ff0081a66578706f727491cf0000019a80f2ff0081a5736561747393"
        "cf0000019a86e8e000080a81cd4fc0cf0000019ab0a20700cf0000019ab39cf78092a66578706f7274a57368617265cf"
        "0000019a03c78a00cf0000019a4b4e160003cf0000019a0fb34c00"
    ),
}

# version -> what that version's golden bytes read as today, after the migrations. When version N + 1
# is added, version N's entry becomes golden_profile() as N's bytes migrate to it (new fields at the
# values the migration gives them).
GOLDEN_READS = {
    1: golden_profile,
}

# Version 1's row for golden_profile(), written out by hand as (field, value) pairs in version 1's order:
# a second, independent copy of version 1's layout (the first release wrote the first 19 fields; 24, 29
# and 36 fields are the lengths written by later releases before the layout was frozen).
V1_HAND_ROW = [
    ("t", 1764000000000), ("first_seen", 1761000000000), ("last_event", 1763990000000),
    ("last_activity", 1763980000000), ("activated_at", 1761100000000),
    ("days", {20416: 1763980000000, 20415: 1763900000000}),
    ("orders", [[1762000000000, 49.9, 1], [1762900000000, 20, 0]]), ("refunds", [[1762100000000, 10.5]]),
    ("last_order", 1762900000000), ("intent", [[1763000000000, 0.5]]), ("cart", {"sku-é": 2, "sku-2": 1}),
    ("cart_opened", 1763500000000), ("cart_last", 1763600000000), ("invite_last", 1762500000000),
    ("nps_high_last", 1762600000000), ("seen", {12345678901234567890: 1763990000000, 7: 1763980000000}),
    ("pending", [[1764000500000, "m-1", "track", "Order Completed", {"revenue": 49.9}]]),
    ("members", {"lifecycle": "activated", "rfm": "champions"}), ("extra", {"cl": {"f1": 3}, "pc": [20400, 0.25]}),
    ("orders_total", 3), ("purchase_first_day", 20300), ("purchase_last_day", 20390), ("purchase_days", 2),
    ("repeat_spend", 59.8),
    ("eng_score", 3.25), ("eng_ref", 1763900000000), ("promo_clicks", [1763000000000, 1763100000000]),
    ("features", {"export": [1763100000000]}), ("usage", {"seats": [1763200000000, 8, 10]}),
    ("days_first", {20416: 1763900000000}), ("engaged_until", 1763950000000),
    ("features_ever", ["export", "share"]), ("trial_started", 1761000000000), ("trial_ended", 1762200000000),
    ("onboarding_step", 3), ("onboarding_step_at", 1761200000000),
]
V1_ROW = [1] + [value for _, value in V1_HAND_ROW]
V1_RELEASED_LENGTHS = [19, 24, 29, 36]


def golden(version: int) -> bytes:
    return bytes.fromhex(GOLDEN_HEX[version])


def pack(row: list) -> bytes:
    return msgpack.packb(row, use_bin_type=True)


def assert_layout_is_dataclass(layout: tuple[str, ...], cls: type) -> None:
    names = tuple(f.name for f in fields(cls))
    assert layout == names, (
        f"{cls.__name__}'s fields no longer match the layout of profile encoding version {max(LAYOUTS)}: "
        "add a new version with its layout and a migration (in stream_app/state/encoding.py: LAYOUTS[N + 1] "
        "as a literal tuple of the new field order, MIGRATIONS[N] from version N), and its golden bytes here "
        "(docs/state.md, Encoding and versions). Never edit a released layout.\n"
        f"  fields only in the layout: {[n for n in layout if n not in names]}\n"
        f"  fields only in {cls.__name__}: {[n for n in names if n not in layout]}"
    )


# -- the module's tables ----------------------------------------------------------------------------
def test_the_newest_layout_is_the_profile_dataclass():
    assert_layout_is_dataclass(LAYOUTS[READ_VERSION], Profile)


def test_the_layout_check_fails_when_a_field_is_added_without_a_version():
    grown = make_dataclass("Profile", [*_spec(Profile), ("added_in_a_test", int, field(default=0))], slots=True)
    with pytest.raises(AssertionError, match="add a new version with its layout and a migration"):
        assert_layout_is_dataclass(LAYOUTS[READ_VERSION], grown)
    reordered = make_dataclass("Profile", _spec(Profile)[::-1], slots=True)
    with pytest.raises(AssertionError, match="add a new version"):
        assert_layout_is_dataclass(LAYOUTS[READ_VERSION], reordered)


def test_version_1_layout_is_the_order_profiles_were_always_written_in():
    assert LAYOUTS[1] == tuple(name for name, _ in V1_HAND_ROW)


def test_the_version_tables_are_complete():
    assert sorted(LAYOUTS) == list(range(1, READ_VERSION + 1))
    assert all(isinstance(layout, tuple) for layout in LAYOUTS.values())
    assert sorted(MIGRATIONS) == list(range(1, READ_VERSION))
    assert 1 <= WRITE_VERSION <= READ_VERSION and ENCODING_VERSION == WRITE_VERSION
    assert all(v in DOWNGRADES for v in range(WRITE_VERSION + 1, READ_VERSION + 1))
    assert sorted(GOLDEN_HEX) == sorted(LAYOUTS) == sorted(GOLDEN_READS), "every version has golden bytes"


def test_the_golden_profile_sets_every_field():
    default, gold = Profile(), golden_profile()
    assert [f.name for f in fields(Profile) if getattr(gold, f.name) == getattr(default, f.name)] == []


# -- golden bytes -----------------------------------------------------------------------------------
def test_the_written_version_encodes_to_its_golden_bytes():
    assert encode_profile(golden_profile()).hex() == GOLDEN_HEX[WRITE_VERSION]


def test_the_newest_version_encodes_to_its_golden_bytes():
    writer = ProfileCodec(LAYOUTS, MIGRATIONS, READ_VERSION, DOWNGRADES)
    assert writer.encode(golden_profile()).hex() == GOLDEN_HEX[READ_VERSION]


@pytest.mark.parametrize("version", sorted(GOLDEN_HEX))
def test_golden_bytes_of_every_version_read_back(version):
    assert decode_profile(golden(version)) == GOLDEN_READS[version]()


def test_the_hand_built_version_1_row_is_the_golden_bytes_and_reads_with_nothing_lost():
    assert pack(V1_ROW) == golden(1)
    assert decode_profile(pack(V1_ROW)) == GOLDEN_READS[1]()


def test_shorter_version_1_rows_read_with_defaults_for_the_fields_they_lack():
    gold, default = golden_profile(), Profile()
    for n in range(len(LAYOUTS[1]) + 1):  # every prefix, including the lengths releases wrote
        profile = decode_profile(pack(V1_ROW[: 1 + n]))
        for i, name in enumerate(LAYOUTS[1]):
            assert getattr(profile, name) == getattr(gold if i < n else default, name), (n, name)
    assert V1_RELEASED_LENGTHS[-1] == len(LAYOUTS[1])


# -- refusals and the old behaviour -----------------------------------------------------------------
def test_round_trip_keeps_every_field():
    profile = Profile(t=5, first_seen=1, last_event=5, last_activity=5, activated_at=2, days={20000: 5},
                      orders=[[2, 9.5, 1]], intent=[[3, 0.5]], cart={"p": 2}, cart_opened=3, cart_last=4,
                      seen={123: 5}, pending=[[9, "m", "track", "X", {}]], members={"lifecycle": "activated"})
    assert decode_profile(encode_profile(profile)) == profile
    assert decode_profile(encode_profile(golden_profile())) == golden_profile()


def test_a_newer_version_is_refused_with_a_clear_message():
    row = list(V1_ROW)
    row[0] = READ_VERSION + 1
    with pytest.raises(UnknownProfileVersion, match="newer than this worker reads .*; upgrade the worker"):
        decode_profile(pack(row))


@pytest.mark.parametrize("row", [[0], [-1, 5], ["1", 5], [None], [], {"t": 1}, 7])
def test_what_is_not_a_profile_is_refused(row):
    with pytest.raises(UnknownProfileVersion, match="not a profile"):
        decode_profile(pack(row))


def test_a_row_longer_than_its_layout_is_refused_not_cut():
    with pytest.raises(UnknownProfileVersion, match="changed without a new version"):
        decode_profile(pack(V1_ROW + [5]))


def test_an_empty_profile_is_small():
    # about one byte per field: empty containers, None and 0 pack in a single byte each
    assert len(encode_profile(Profile())) <= len(fields(Profile)) + 4


# -- a synthetic next version: migrations, two-step release ----------------------------------------
def _spec(cls, rename=None):
    rename = rename or {}
    return [
        (rename.get(f.name, f.name), f.type,
         field(default=f.default) if f.default is not MISSING else field(default_factory=f.default_factory))
        for f in fields(cls)
    ]


# Version N + 1 (N = READ_VERSION) renames `cart_last` to `cart_updated` and adds `orders_count`, which
# its migration computes from `orders`.
N = READ_VERSION
ProfileNext = make_dataclass(
    "ProfileNext", [*_spec(Profile, {"cart_last": "cart_updated"}), ("orders_count", int, field(default=0))], slots=True
)
LAYOUTS_NEXT = {**LAYOUTS, N + 1: tuple(f.name for f in fields(ProfileNext))}
NEWEST_ROW = msgpack.unpackb(golden(N), strict_map_key=False)  # version N's golden row


def migrate_to_next(values):
    values = dict(values)
    if "cart_last" in values:
        values["cart_updated"] = values.pop("cart_last")
    if "orders" in values:
        values["orders_count"] = len(values["orders"])
    return values


def downgrade_from_next(values):
    values = dict(values)
    values["cart_last"] = values.pop("cart_updated")
    del values["orders_count"]
    return values


def golden_next(orders_count=2):
    gold = golden_profile()
    values = {f.name: getattr(gold, f.name) for f in fields(Profile)}
    values["cart_updated"] = values.pop("cart_last")
    return ProfileNext(**values, orders_count=orders_count)


NEXT = dict(layouts=LAYOUTS_NEXT, migrations={**MIGRATIONS, N: migrate_to_next},
            downgrades={**DOWNGRADES, N + 1: downgrade_from_next}, profile_cls=ProfileNext)


def test_the_synthetic_layout_differs_from_the_newest():
    assert "cart_updated" in LAYOUTS_NEXT[N + 1] and "cart_last" not in LAYOUTS_NEXT[N + 1]
    assert LAYOUTS_NEXT[N + 1][-1] == "orders_count"


def test_the_newest_golden_bytes_read_through_the_migration_with_nothing_lost():
    codec = ProfileCodec(write_version=N + 1, **NEXT)
    assert codec.decode(golden(N)) == golden_next()
    assert codec.decode(pack(V1_ROW)) == golden_next()  # and version 1 through every migration


def test_shorter_rows_migrate_too():
    codec = ProfileCodec(write_version=N + 1, **NEXT)
    short = codec.decode(pack(NEWEST_ROW[:20]))  # the first 19 fields: has orders and cart_last
    assert short.cart_updated == golden_profile().cart_last and short.orders_count == 2
    assert short.orders_total == 0 and short.onboarding_step_at is None
    assert codec.decode(pack(NEWEST_ROW[:3])) == ProfileNext(t=NEWEST_ROW[1], first_seen=NEWEST_ROW[2])


def test_a_version_needs_its_migration():
    with pytest.raises(ValueError, match=rf"no migration from profile version\(s\) \[{N}\]"):
        ProfileCodec(LAYOUTS_NEXT, MIGRATIONS, N + 1, profile_cls=ProfileNext)


def test_a_migration_that_leaves_old_fields_is_refused():
    codec = ProfileCodec(LAYOUTS_NEXT, {**MIGRATIONS, N: lambda values: values}, N + 1, profile_cls=ProfileNext)
    with pytest.raises(ValueError, match=rf"migration to profile version {N + 1} gave fields not in its layout: \['cart_last'\]"):
        codec.decode(golden(N))


def test_next_version_bytes_round_trip_and_todays_worker_refuses_them():
    writer = ProfileCodec(write_version=N + 1, **NEXT)
    data = writer.encode(golden_next(orders_count=9))
    assert msgpack.unpackb(data, strict_map_key=False)[0] == N + 1
    assert writer.decode(data) == golden_next(orders_count=9)
    with pytest.raises(UnknownProfileVersion, match="upgrade the worker"):
        decode_profile(data)


def test_two_step_release_the_reader_release_writes_the_old_version():
    """Release 1 of a layout change reads version N + 1 but writes version N (through the downgrade):
    its bytes are exactly version N's, so workers that know only version N read them during its rolling
    restart. Release 2 writes version N + 1; release 1 workers still running read those."""
    reader_release = ProfileCodec(write_version=N, **NEXT)
    written = reader_release.encode(golden_next())
    assert written == golden(N)
    assert decode_profile(written) == golden_profile()  # a worker of today
    writer_release = ProfileCodec(write_version=N + 1, **NEXT)
    assert reader_release.decode(writer_release.encode(golden_next(orders_count=9))) == golden_next(orders_count=9)


def test_writing_an_older_version_needs_a_downgrade():
    with pytest.raises(ValueError, match=rf"needs a downgrade from version\(s\) \[{N + 1}\]"):
        ProfileCodec(LAYOUTS_NEXT, {**MIGRATIONS, N: migrate_to_next}, N, profile_cls=ProfileNext)
    incomplete = ProfileCodec(write_version=N, **{**NEXT, "downgrades": {**DOWNGRADES, N + 1: lambda v: {"t": v["t"]}}})
    with pytest.raises(ValueError, match=f"downgrade to profile version {N} left out fields"):
        incomplete.encode(golden_next())
