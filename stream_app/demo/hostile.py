"""A seeded generator of hostile input for fuzzing the worker: malformed messages of many kinds, and
valid events with odd-but-legal content, interleaved.

Every malformed message must end on the dead-letter topic with a reason; every valid one must be
processed. `hostile_stream` yields (kind, key, value, malformed) in a reproducible order.
"""

from __future__ import annotations

import json
import random
from typing import Any, Callable, Iterator

import msgpack

from ..timeutil import DAY_MS, format_timestamp

MAX_EVENT_BYTES = 32 * 1024

# Unicode that is legal and must be processed like any other text
ODD_NAMES = (
    "Order\u200bCompleted",  # zero-width space
    "\u202eDetelpmoC redrO",  # right-to-left override
    "Product Added \U0001f6d2\U0001f525",  # emoji
    "Cafe\u0301 Viewed",  # combining accent
    "\u0645\u0634\u0627\u0647\u062f\u0629",  # Arabic
    "\ufeffSigned In",  # byte order mark inside the text
    "\u0000null inside",  # NUL character
    "Z\u0351\u0352\u0353\u0354algo",  # stacked combining marks
)


def _valid(rng: random.Random, n: int, now: int) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "track", "event": rng.choice(("Product Viewed", "Product Added", "Signed In")),
                            "userId": f"fuzz-user-{rng.randrange(500)}", "messageId": f"fuzz-valid-{n}",
                            "timestamp": format_timestamp(now - rng.randrange(0, 2 * DAY_MS)),
                            "properties": {"product_id": f"sku-{rng.randrange(60)}"}}
    return body


def _dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _malformed_makers(now: int) -> list[tuple[str, Callable[[random.Random, dict[str, Any]], bytes]]]:
    def with_(**changes: Any) -> Callable[[random.Random, dict[str, Any]], bytes]:
        def make(rng: random.Random, doc: dict[str, Any]) -> bytes:
            doc = dict(doc)
            for key, value in changes.items():
                if value is _DROP:
                    doc.pop(key, None)
                else:
                    doc[key] = value(rng) if callable(value) else value
            if rng.random() < 0.5:
                return _dump(doc)
            try:
                return msgpack.packb(doc, use_bin_type=True)
            except (OverflowError, ValueError):  # an integer beyond 64 bits: JSON can carry it
                return _dump(doc)
        return make

    def random_bytes(rng: random.Random, doc: dict[str, Any]) -> bytes:
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        return raw if raw[:1] not in (b"{", b"[") else b"\xc1" + raw  # 0xc1: never valid msgpack

    def truncated(rng: random.Random, doc: dict[str, Any]) -> bytes:
        raw = msgpack.packb(doc) if rng.random() < 0.5 else _dump(doc)
        return raw[: rng.randrange(1, len(raw) - 1)]

    def deep_msgpack(rng: random.Random, doc: dict[str, Any]) -> bytes:
        # built by hand: msgpack's packer refuses nesting deeper than 512; an attacker's bytes need not
        packed = msgpack.packb(dict(doc, properties="__DEEP__"))
        return packed.replace(msgpack.packb("__DEEP__"), b"\x91" * rng.randrange(600, 20000) + b"\x01")

    def deep_json(rng: random.Random, doc: dict[str, Any]) -> bytes:
        depth = rng.randrange(2000, 15000)
        return b'{"type":"track","event":"X","userId":"u","messageId":"m","timestamp":1,"properties":' + b"[" * depth + b"]" * depth + b"}"

    def bad_utf8(rng: random.Random, doc: dict[str, Any]) -> bytes:
        raw = _dump(dict(doc, event="EVENTNAME"))
        return raw.replace(b"EVENTNAME", rng.choice((b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80")))

    def lone_surrogate_name(rng: random.Random, doc: dict[str, Any]) -> bytes:
        return _dump(dict(doc, event="Order \\ud800 Completed")).replace(b"\\\\ud800", b"\\ud800")

    def oversize(rng: random.Random, doc: dict[str, Any]) -> bytes:
        return _dump(dict(doc, properties={"pad": "x" * rng.randrange(MAX_EVENT_BYTES, 4 * MAX_EVENT_BYTES)}))

    def not_an_object(rng: random.Random, doc: dict[str, Any]) -> bytes:
        return rng.choice((b"[]", b"[1,2,3]", b'"text"', msgpack.packb(42), msgpack.packb([doc]), b"{}", msgpack.packb(None)))

    return [
        ("random_bytes", random_bytes),
        ("empty", lambda rng, doc: b""),
        ("truncated", truncated),
        ("deep_msgpack", deep_msgpack),
        ("deep_json", deep_json),
        ("invalid_utf8", bad_utf8),
        ("lone_surrogate_event_name", lone_surrogate_name),
        ("not_an_object", not_an_object),
        ("oversize", oversize),
        ("missing_user_id", with_(userId=_DROP)),
        ("empty_user_id", with_(userId="")),
        ("user_id_wrong_type", with_(userId=lambda rng: rng.choice((42, 4.5, True, ["u"], {"id": "u"})))),
        ("huge_user_id", with_(userId=lambda rng: "u" * rng.randrange(257, 20000))),
        ("missing_message_id", with_(messageId=_DROP)),
        ("huge_message_id", with_(messageId=lambda rng: "m" * rng.randrange(257, 20000))),
        ("message_id_wrong_type", with_(messageId=lambda rng: rng.choice((7, None, ["m"], {"m": 1})))),
        ("event_wrong_type", with_(event=lambda rng: rng.choice((42, None, ["Order Completed"], {"n": 1}, "")))),
        ("unknown_type", with_(type=lambda rng: rng.choice(("purchase", "", "TRACK", 1, None)))),
        ("properties_not_object", with_(properties=lambda rng: rng.choice(("props", 1, [1, 2], True)))),
        ("timestamp_garbage", with_(timestamp=lambda rng: rng.choice(("yesterday at noon", "2026-13-45T99:99:99Z", "0000-00-00T00:00:00Z", "12:00 tomorrow")))),
        ("timestamp_wrong_type", with_(timestamp=lambda rng: rng.choice((True, None, [1], {"t": 1}, 1.5)))),
        ("timestamp_out_of_range", with_(timestamp=lambda rng: rng.choice((-1, 10**20, 32503680000001, "99999-01-01T00:00:00Z", "-0001-01-01T00:00:00Z")))),
        ("timestamp_future", with_(timestamp=lambda rng: format_timestamp(now + rng.randrange(2, 3000) * DAY_MS))),
        ("missing_timestamp", with_(timestamp=_DROP)),
        ("nan_amount", lambda rng, doc: msgpack.packb(dict(doc, event="Order Completed", properties={"revenue": rng.choice((float("nan"), float("inf"), float("-inf")))}))),
        ("nan_amount_json", lambda rng, doc: json.dumps(dict(doc, event="Order Completed", properties={"revenue": rng.choice((float("nan"), float("inf")))})).encode()),
        ("huge_amount", with_(properties=lambda rng: {"revenue": rng.choice((1e300, -1e300, 10**40, "12.5", [12]))})),
    ]


class _Drop:
    pass


_DROP = _Drop()


def hostile_stream(seed: int, malformed: int, valid_every: int = 3, now_ms: int | None = None) -> Iterator[tuple[str, bytes | None, bytes, bool]]:
    """`malformed` malformed messages, each kind in turn at random, with a valid event after every
    `valid_every` of them (a tenth of the valid ones with odd Unicode names). Yields
    (kind, key, value, is_malformed); keys are user ids where the message has one, else None."""
    import time

    rng = random.Random(seed)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    makers = _malformed_makers(now)
    valid_n = 0
    for n in range(malformed):
        kind, make = makers[rng.randrange(len(makers))]
        doc = _valid(rng, -n - 1, now)
        doc["messageId"] = f"fuzz-bad-{n}"
        yield kind, doc["userId"].encode() if rng.random() < 0.7 else None, make(rng, doc), True
        if n % valid_every == valid_every - 1:
            valid_n += 1
            good = _valid(rng, valid_n, now)
            kind = "valid"
            if valid_n % 10 == 0:
                good["event"] = rng.choice(ODD_NAMES)
                kind = "valid_odd_unicode"
            value = _dump(good) if rng.random() < 0.5 else msgpack.packb(good)
            yield kind, good["userId"].encode(), value, False
