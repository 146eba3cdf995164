"""Per-customer scores in the stream, from a profile's whole-history purchase summary.

The model counts time in whole days converted to its unit (weeks for CDNOW): x = repeat purchase
days, t_x = days from the first to the last purchase day, T = days from the first purchase day to the
day being scored. These are exactly the quantities `predict.summary` builds in batch, so a customer
scored in the stream at the calibration end gets the same numbers as the fit's report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..state.profile import Profile
from .bgnbd import conditional_expected_purchases, p_alive
from .gamma_gamma import discounted_clv, expected_average_spend
from .model_file import PredictiveModel


@dataclass(frozen=True)
class CustomerScores:
    p_alive: float
    expected_purchases_30d: float
    expected_purchases_90d: float
    expected_spend_per_order: float | None
    clv: float | None

    def as_traits(self) -> dict[str, Any]:
        return {
            "p_alive": round(self.p_alive, 6),
            "expected_purchases_30d": round(self.expected_purchases_30d, 6),
            "expected_purchases_90d": round(self.expected_purchases_90d, 6),
            "expected_spend_per_order": None if self.expected_spend_per_order is None else round(self.expected_spend_per_order, 4),
            "clv": None if self.clv is None else round(self.clv, 4),
        }


def summary_at(model: PredictiveModel, profile: Profile, day: int) -> tuple[int, float, float, float]:
    """(x, t_x, T, mean repeat spend) in the model's unit, for scoring on UTC ``day``."""
    first, last = profile.purchase_first_day, profile.purchase_last_day
    assert first is not None and last is not None, "only customers with an order are scored"
    unit = model.unit_days
    x = max(profile.purchase_days - 1, 0)
    monetary = profile.repeat_spend / x if x else 0.0
    return x, (last - first) / unit, max(day - first, last - first) / unit, monetary


def p_alive_at(model: PredictiveModel, profile: Profile, day: int) -> float:
    x, t_x, big_t, _ = summary_at(model, profile, day)
    return float(p_alive(model.bgnbd, x, t_x, big_t))


def clv_at(model: PredictiveModel, profile: Profile, day: int) -> float:
    if model.gamma_gamma is None:
        return 0.0
    x, t_x, big_t, monetary = summary_at(model, profile, day)
    return float(discounted_clv(model.bgnbd, model.gamma_gamma, x, t_x, big_t, monetary,
                                model.clv_horizon_units, model.discount_rate_per_unit))


def customer_scores(model: PredictiveModel, profile: Profile, day: int) -> CustomerScores:
    x, t_x, big_t, monetary = summary_at(model, profile, day)
    unit = model.unit_days
    e30 = float(conditional_expected_purchases(model.bgnbd, 30 / unit, x, t_x, big_t))
    e90 = float(conditional_expected_purchases(model.bgnbd, 90 / unit, x, t_x, big_t))
    spend = clv = None
    if model.gamma_gamma is not None:
        spend = float(expected_average_spend(model.gamma_gamma, x, monetary))
        clv = clv_at(model, profile, day)
    return CustomerScores(float(p_alive(model.bgnbd, x, t_x, big_t)), e30, e90, spend, clv)
