"""Per-customer summaries (frequency, recency, age, mean repeat spend) from transactions.

These are the sufficient statistics of the BG/NBD model (Fader, Hardie & Lee 2005, "Counting your
customers the easy way", section 2) and of the Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "The
Gamma-Gamma model of monetary value"), built the way the literature builds them for CDNOW:

- purchases of one customer on one calendar day are one purchase day, their amounts summed;
- x   = number of repeat purchase days (days after the first one) up to and including the calibration
        end date;
- t_x = whole days from the first to the last purchase day in the calibration period, in units;
- T   = whole days from the first purchase day to the calibration end date, in units;
- monetary = mean over the repeat purchase days of that day's spend (the first day is left out, as the
        Gamma-Gamma note does); 0 when x == 0;
- with a holdout end date: x_holdout = repeat purchase days strictly after the calibration end, up to and
        including the holdout end, and holdout_length = days from calibration end to holdout end, in units.

A unit is "days" (1 day) or "weeks" (7 days). Customers whose first purchase is after the calibration
end are left out: they were not customers yet.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Iterable

import numpy as np

UNITS: dict[str, int] = {"days": 1, "weeks": 7}


def unit_days(unit: str) -> int:
    """Days in one time unit; raises ValueError naming the accepted units."""
    try:
        return UNITS[unit]
    except KeyError:
        raise ValueError(f"unit {unit!r} is not known; use one of {', '.join(UNITS)}") from None


@dataclass(frozen=True)
class CustomerSummary:
    """One row per customer, as numpy arrays of equal length (sorted by customer id)."""

    ids: np.ndarray  # str
    x: np.ndarray  # int64: repeat purchase days in the calibration period
    t_x: np.ndarray  # float64: first to last purchase day, in units
    T: np.ndarray  # float64: first purchase day to calibration end, in units
    monetary: np.ndarray  # float64: mean spend of a repeat purchase day, 0 when x == 0
    calibration_end: date
    unit: str = "weeks"
    x_holdout: np.ndarray | None = None  # int64: repeat purchase days in the holdout period
    holdout_end: date | None = None
    holdout_length: float | None = None  # in units, the same for every customer

    @property
    def n_customers(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_repeat_customers(self) -> int:
        return int(np.count_nonzero(self.x > 0))


def summarize_transactions(
    transactions: Iterable[tuple[str, date, float]],
    calibration_end: date,
    unit: str = "weeks",
    holdout_end: date | None = None,
) -> CustomerSummary:
    """Build the per-customer summary from (customer_id, date, amount) rows, in any order.

    Purchases on `calibration_end` belong to the calibration period. Rows after the last day that matters
    (`holdout_end`, or `calibration_end` when there is no holdout) are ignored.
    """
    days_per_unit = unit_days(unit)
    if holdout_end is not None and holdout_end <= calibration_end:
        raise ValueError(
            f"holdout end {holdout_end.isoformat()} must be after the calibration end {calibration_end.isoformat()}"
        )
    last_day = holdout_end if holdout_end is not None else calibration_end
    spend: dict[str, dict[date, float]] = defaultdict(lambda: defaultdict(float))
    for customer_id, day, amount in transactions:
        if day <= last_day:
            spend[customer_id][day] += float(amount)

    ids: list[str] = []
    xs: list[int] = []
    recency: list[int] = []
    age: list[int] = []
    monetary: list[float] = []
    holdout_counts: list[int] = []
    for customer_id in sorted(spend):
        days = spend[customer_id]
        ordered = sorted(days)
        first = ordered[0]
        if first > calibration_end:
            continue
        calibration_days = [d for d in ordered if d <= calibration_end]
        repeat_days = calibration_days[1:]
        ids.append(customer_id)
        xs.append(len(repeat_days))
        recency.append((calibration_days[-1] - first).days)
        age.append((calibration_end - first).days)
        monetary.append(sum(days[d] for d in repeat_days) / len(repeat_days) if repeat_days else 0.0)
        holdout_counts.append(len(ordered) - len(calibration_days))

    x_holdout = None
    holdout_length = None
    if holdout_end is not None:
        x_holdout = np.asarray(holdout_counts, dtype=np.int64)
        holdout_length = (holdout_end - calibration_end).days / days_per_unit
    return CustomerSummary(
        ids=np.asarray(ids, dtype=str),
        x=np.asarray(xs, dtype=np.int64),
        t_x=np.asarray(recency, dtype=np.float64) / days_per_unit,
        T=np.asarray(age, dtype=np.float64) / days_per_unit,
        monetary=np.asarray(monetary, dtype=np.float64),
        calibration_end=calibration_end,
        unit=unit,
        x_holdout=x_holdout,
        holdout_end=holdout_end,
        holdout_length=holdout_length,
    )
