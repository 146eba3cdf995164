"""A synthetic GA4 BigQuery export (JSON lines, as BigQuery writes them: INT64 as text) from the demo's
seeded clickstream: input for `stream-app import --format ga4` at any size.

    .venv/bin/python benchmarks/ga4_synthetic.py --users 9000 --days 30 --output ga4.jsonl

Each Segment event of `stream_app.demo.generator` becomes the GA4 row that GA4 would have recorded for it
(page_view, view_item, add_to_cart, begin_checkout, purchase, login, ...). Events GA4 has no name for
become custom events in GA4's snake_case (`application_opened`, `invite_sent`, `nps_submitted`), which
`CUSTOM_EVENTS_MAPPING` maps back to the catalog's names (a `--mapping` file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stream_app.demo.generator import generate  # noqa: E402
from stream_app.timeutil import DAY_MS  # noqa: E402

STREAM_ID = "3781234567"
CUSTOM_EVENTS_MAPPING = """\
ga4:
  properties: {score: score}
  events:
    application_opened: {event: Application Opened}
    invite_sent: {event: Invite Sent}
    nps_submitted: {event: NPS Submitted}
"""


def _param(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"key": key, "value": {"string_value": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"int_value": str(value)}}
    return {"key": key, "value": {"double_value": float(value)}}


def _item(product_id: str, quantity: int = 1) -> dict[str, Any]:
    return {"item_id": product_id, "item_name": f"Product {product_id}", "item_brand": "(not set)", "item_category": "Shoes",
            "price": 49.0, "price_in_usd": 49.0, "quantity": str(quantity)}


def ga4_row(event: dict[str, Any], bundle: int) -> dict[str, Any]:
    """The GA4 export row for one demo event (timestamps in epoch ms)."""
    props = event.get("properties") or {}
    name, params, items, ecommerce = "", [], [], None
    if event["type"] == "page":
        name = "page_view"
        params = [_param("page_location", "https://shop.example" + props.get("path", "/")), _param("page_title", event.get("name") or "")]
    else:
        kind = event["event"]
        if kind == "Product Viewed":
            name, items = "view_item", [_item(props["product_id"])]
        elif kind == "Product List Viewed":
            name, params = "view_item_list", [_param("item_list_name", props.get("category", "all"))]
        elif kind == "Product Added":
            name, items = "add_to_cart", [_item(props["product_id"], props.get("quantity", 1))]
        elif kind == "Checkout Started":
            name = "begin_checkout"
        elif kind == "Order Completed":
            name = "purchase"
            params = [_param("transaction_id", props["order_id"]), _param("value", props["revenue"]), _param("currency", "EUR")]
            if props.get("coupon"):
                params.append(_param("coupon", props["coupon"]))
            ecommerce = {"transaction_id": props["order_id"], "purchase_revenue": float(props["revenue"])}
        elif kind == "Signed In":
            name, params = "login", [_param("method", "email")]
        else:  # a custom GA4 event: application_opened, invite_sent, nps_submitted
            name = kind.lower().replace(" ", "_")
            params = [_param(key, value) for key, value in props.items()]
    micros = event["timestamp"] * 1000
    row: dict[str, Any] = {
        "event_date": datetime.fromtimestamp(event["timestamp"] / 1000, timezone.utc).strftime("%Y%m%d"),
        "event_timestamp": str(micros), "event_name": name,
        "event_params": params + [_param("ga_session_id", event["timestamp"] // 1_800_000)],
        "event_bundle_sequence_id": str(bundle), "user_id": event["userId"], "user_pseudo_id": f"{zlib.crc32(event['userId'].encode())}.1",
        "stream_id": STREAM_ID, "platform": "WEB", "items": items, "batch_event_index": "1",
    }
    if ecommerce is not None:
        row["ecommerce"] = ecommerce
    return row


def ga4_rows(seed: int, users: int, start_ms: int, days: int) -> Iterator[dict[str, Any]]:
    for bundle, event in enumerate(generate(seed, users, start_ms, days * DAY_MS), start=1):
        yield ga4_row(event, bundle)


def write_export(path: Path, seed: int, users: int, start_ms: int, days: int) -> int:
    count = 0
    with open(path, "w") as out:
        for row in ga4_rows(seed, users, start_ms, days):
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=9000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--output", required=True)
    parser.add_argument("--mapping-output", help="also write the mapping file for the custom events")
    args = parser.parse_args()
    start = int(time.time() * 1000) - (args.days + 2) * DAY_MS
    rows = write_export(Path(args.output), args.seed, args.users, start, args.days)
    if args.mapping_output:
        Path(args.mapping_output).write_text(CUSTOM_EVENTS_MAPPING)
    print(f"ga4_synthetic: {rows} rows -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
