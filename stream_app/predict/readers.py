"""Read purchase transactions (customer id, date, amount) from the files people have.

Three formats:

- CSV with a header: a customer column (`customer_id` or `id`), `date` (`YYYY-MM-DD` or `YYYYMMDD`) and an
  amount column (`amount`, `revenue` or `dollars`); other columns are ignored.
- JSON lines of Segment events: only `track` events whose `event` is `Order Completed`; the customer is
  `userId`, else `anonymousId`; the date is the UTC date of `timestamp` (ISO-8601 or epoch milliseconds);
  the amount is `properties.revenue`, else `properties.total`, else 0.
- The CDNOW text format: whitespace-separated original id, customer id, date `YYYYMMDD`, number of CDs,
  dollar amount. The four-column variant of the full CDNOW master file (customer id, date, number of
  CDs, dollar amount, with an optional header line) is read too.

Every error says the file, the line number and what was expected.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from ..timeutil import parse_timestamp

CUSTOMER_COLUMNS = ("customer_id", "id")
DATE_COLUMNS = ("date",)
AMOUNT_COLUMNS = ("amount", "revenue", "dollars")
ORDER_EVENT = "Order Completed"


class Transaction(NamedTuple):
    customer_id: str
    date: date
    amount: float


class TransactionFileError(ValueError):
    """A transactions file that cannot be read; the message names the file and line."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


def parse_date(text: str) -> date:
    """A calendar date from `YYYY-MM-DD` or `YYYYMMDD`; ValueError otherwise."""
    value = text.strip()
    try:
        if len(value) == 8 and value.isdigit():
            return date(int(value[:4]), int(value[4:6]), int(value[6:]))
        if len(value) == 10 and value[4] == "-" and value[7] == "-":
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise ValueError(f"expected a date as YYYY-MM-DD or YYYYMMDD, got {text[:40]!r}")


def _amount(text: object, what: str) -> float:
    if isinstance(text, bool):
        raise ValueError(f"expected {what} as a number, got {text!r}")
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"expected {what} as a number, got {str(text)[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected {what} as a finite number, got {text!r}")
    return value


def parse_csv(lines: Iterable[str], source: str = "<csv>") -> Iterator[Transaction]:
    """Transactions from CSV text with a header row (see the module docstring for the columns)."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise TransactionFileError(source, 1, "expected a header row with customer_id, date and amount columns; the file is empty")
    names = [name.strip().lower() for name in header]

    def column(choices: tuple[str, ...], what: str) -> int:
        for choice in choices:
            if choice in names:
                return names.index(choice)
        raise TransactionFileError(
            source, 1, f"expected a {what} column named {' or '.join(choices)} in the header, got {', '.join(header)!s}"
        )

    who, when, much = column(CUSTOMER_COLUMNS, "customer"), column(DATE_COLUMNS, "date"), column(AMOUNT_COLUMNS, "amount")
    width = max(who, when, much) + 1
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < width:
            raise TransactionFileError(source, line, f"expected at least {width} columns as in the header, got {len(row)}")
        customer = row[who].strip()
        if not customer:
            raise TransactionFileError(source, line, "expected a customer id, got an empty cell")
        try:
            yield Transaction(customer, parse_date(row[when]), _amount(row[much], "the amount"))
        except ValueError as exc:
            raise TransactionFileError(source, line, str(exc)) from None


def _utc_date(timestamp: object) -> date:
    millis = parse_timestamp(timestamp)
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).date()


def parse_events(lines: Iterable[str], source: str = "<events>") -> Iterator[Transaction]:
    """Order Completed track events from JSON lines of Segment events; other events are skipped."""
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise TransactionFileError(source, line_number, f"expected one JSON object per line: {exc}") from None
        if not isinstance(event, dict):
            raise TransactionFileError(source, line_number, f"expected one JSON object per line (JSON lines), got a JSON {type(event).__name__}")
        if event.get("type") != "track" or event.get("event") != ORDER_EVENT:
            continue
        customer = event.get("userId") or event.get("anonymousId")
        if not isinstance(customer, str) or not customer:
            raise TransactionFileError(source, line_number, "expected a userId or anonymousId string on the Order Completed event")
        if "timestamp" not in event:
            raise TransactionFileError(source, line_number, "expected a timestamp (ISO-8601 or epoch milliseconds)")
        properties = event.get("properties") or {}
        if not isinstance(properties, dict):
            raise TransactionFileError(source, line_number, "expected properties to be a JSON object")
        try:
            day = _utc_date(event["timestamp"])
            if properties.get("revenue") is not None:
                amount = _amount(properties["revenue"], "properties.revenue")
            elif properties.get("total") is not None:
                amount = _amount(properties["total"], "properties.total")
            else:
                amount = 0.0
        except ValueError as exc:
            raise TransactionFileError(source, line_number, str(exc)) from None
        yield Transaction(customer, day, amount)


def parse_cdnow(lines: Iterable[str], source: str = "<cdnow>") -> Iterator[Transaction]:
    """Transactions from CDNOW text: 5 columns (original id, customer id, YYYYMMDD, CDs, dollars) or the
    master file's 4 columns (customer id, YYYYMMDD, CDs, dollars) after an optional header line. The
    first data line sets the layout; every later line must have the same number of columns."""
    layouts = {
        5: "5 whitespace-separated columns (original id, customer id, date YYYYMMDD, number of CDs, dollar amount)",
        4: "4 whitespace-separated columns (customer id, date YYYYMMDD, number of CDs, dollar amount)",
    }
    width: int | None = None
    for line_number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if line_number == 1 and not fields[0].isdigit():
            continue  # the master file's header: customer_id date number_of_cds dollar_value
        if width is None and len(fields) in layouts:
            width = len(fields)
        if len(fields) != width:
            expected = layouts[width] if width else layouts[5]
            raise TransactionFileError(
                source,
                line_number,
                f"expected the CDNOW format, {expected}, got {len(fields)} column(s); "
                "use a .csv (customer_id,date,amount) or .jsonl (Segment events) file for other data",
            )
        customer, day, amount = (fields[1], fields[2], fields[4]) if width == 5 else (fields[0], fields[1], fields[3])
        try:
            yield Transaction(customer, parse_date(day), _amount(amount, "the dollar amount"))
        except ValueError as exc:
            raise TransactionFileError(source, line_number, str(exc)) from None


def read_transactions(path: str | Path) -> list[Transaction]:
    """All transactions of a file, its format chosen by extension: .jsonl/.json are Segment events,
    .csv is CSV, anything else is read as CDNOW text."""
    file = Path(path)
    suffix = file.suffix.lower()
    parser = parse_events if suffix in (".jsonl", ".json") else parse_csv if suffix == ".csv" else parse_cdnow
    try:
        with file.open(encoding="utf-8", newline="") as handle:
            return list(parser(handle, str(file)))
    except FileNotFoundError:
        raise TransactionFileError(str(file), None, "no such file") from None
    except UnicodeDecodeError as exc:
        raise TransactionFileError(str(file), None, f"expected UTF-8 text: {exc}") from None
    except IsADirectoryError:
        raise TransactionFileError(str(file), None, "expected a file, got a directory") from None
